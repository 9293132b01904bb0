"""The meeting page served by Parley: ``GET /``, ``GET /r/<roomId>``, ``/assets/*``.

The page itself is ``web/`` (mediasoup-client + protoo-client, bundled by esbuild);
this package serves what ``make setup`` built (:mod:`control.web.page`). It starts
nothing: its ``cleanup_ctx`` reads ``index.html`` once and stores it under
:data:`WEB`.

``GET /`` is shared with signaling: :func:`setup` takes the signaling handler and
hands it WebSocket upgrades (and requests naming ``roomId``/``peerId``), so one
handler decides and route order does not matter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Final

from aiohttp import web

from control.config import Settings
from control.web.page import DEFAULT_WEB_DIR, Handler, WebPage, is_signaling, page_routes

__all__ = ["DEFAULT_WEB_DIR", "WEB", "WebPage", "is_signaling", "setup"]

#: The built page (``control.web.setup``).
WEB: Final[web.AppKey[WebPage]] = web.AppKey("web_page", WebPage)


def web_ctx(*, settings: web.AppKey[Settings]) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup_ctx: read the built page once (``WEB``)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[WEB] = WebPage.load(app[settings].web_dir or DEFAULT_WEB_DIR)
        yield

    return ctx


def setup(app: web.Application, *, settings: web.AppKey[Settings], signaling: Handler) -> None:
    """Serve the meeting page; ``signaling`` answers ``GET /`` WebSocket upgrades."""
    app.cleanup_ctx.append(web_ctx(settings=settings))
    app.add_routes(page_routes(WEB, signaling))

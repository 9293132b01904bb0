"""The built meeting page (``web/dist``) and the routes that serve it.

``web/`` is bundled by esbuild (``make setup``: ``npm ci && npm run build``) into
``index.html`` plus content-hashed ``assets/*`` (and their ``.gz``). The assets never
change under a name, so they are cached for a year (``immutable``); ``index.html``
names the current ones and is revalidated every time (``no-cache``).

``GET /`` is shared with signaling (mediasoup-demo's clients connect to
``/?roomId=&peerId=``): a WebSocket upgrade, or any request naming ``roomId`` or
``peerId``, goes to the signaling handler as before; the rest gets the page.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web
from loguru import logger

from control.errors import NotFound, Unavailable

__all__ = ["DEFAULT_WEB_DIR", "Handler", "WebPage", "is_signaling", "page_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: ``web/dist`` of the source tree (the package sits at ``control/web/``).
DEFAULT_WEB_DIR: Final = Path(__file__).resolve().parents[2] / "web" / "dist"

#: What esbuild names an output: ``main-ABCD1234.js``.
_ASSET_RE: Final = re.compile(r"^[A-Za-z0-9_-]+\.(?:js|css|svg|png|ico|woff2)$")

ASSET_CACHE: Final = "public, max-age=31536000, immutable"
PAGE_CACHE: Final = "no-cache"
#: The page loads nothing from elsewhere; the WebSocket goes back to this host. The
#: tiles' colours are inline style attributes (hence 'unsafe-inline' for styles only).
PAGE_HEADERS: Final = {
    "Cache-Control": PAGE_CACHE,
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self' ws: wss:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    # The automation contract puts tokens in the page's URL: never send it on.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class WebPage:
    """The built page: ``index.html`` (read once at start) and its ``assets/`` directory."""

    directory: Path
    index: bytes | None

    @classmethod
    def load(cls, directory: Path) -> WebPage:
        index_file = directory / "index.html"
        try:
            index = index_file.read_bytes()
        except OSError:
            logger.warning("meeting page not built ({} missing): run `make setup` (npm ci + build in web/)", index_file)
            return cls(directory, None)
        logger.info("meeting page: {} (GET / and /r/<roomId>)", directory)
        return cls(directory, index)

    def page(self) -> web.Response:
        if self.index is None:
            raise Unavailable("the meeting page is not built: run `make setup` (npm ci + build in web/)")
        return web.Response(body=self.index, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

    def asset(self, name: str) -> web.FileResponse:
        path = self.directory / "assets" / name
        if not _ASSET_RE.match(name) or not path.is_file():
            raise NotFound(f"no asset {name!r}")
        # FileResponse serves ``name.gz`` instead when the client accepts gzip.
        return web.FileResponse(path, headers={"Cache-Control": ASSET_CACHE, "X-Content-Type-Options": "nosniff"})


def is_signaling(request: web.Request) -> bool:
    """A protoo client (the upgrade, or the demo's query) rather than a person's browser."""
    upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
    return upgrade or "roomId" in request.query or "peerId" in request.query


def page_routes(page: web.AppKey[WebPage], signaling: Handler) -> list[web.RouteDef]:
    """``GET /`` (page or ``signaling``), ``GET /r/{roomId}``, ``GET /assets/{name}``."""

    async def root(request: web.Request) -> web.StreamResponse:
        if is_signaling(request):
            return await signaling(request)
        return request.app[page].page()

    async def room(request: web.Request) -> web.StreamResponse:
        # Any roomId gets the page: it explains the id rule itself (a bare 404 would
        # look like a dead server to a person who mistyped a link).
        return request.app[page].page()

    async def asset(request: web.Request) -> web.StreamResponse:
        return request.app[page].asset(request.match_info["name"])

    return [
        web.get("/", root),
        web.get("/r/{roomId}", room),
        web.get("/assets/{name}", asset),
    ]

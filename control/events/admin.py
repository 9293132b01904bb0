"""``require_admin``: a placeholder guard for admin routes until real auth lands.

- ``ADMIN_TOKEN`` set: the request must carry ``Authorization: Bearer <token>``
  (or ``X-Admin-Token: <token>``); otherwise 401 ``unauthorized``.
- ``ADMIN_TOKEN`` unset: only loopback clients (127.0.0.0/8, ::1) that did not
  come through a proxy (no ``Forwarded``/``X-Forwarded-For``/``X-Real-IP``
  header) are allowed; otherwise 403 ``forbidden``.

Refusals are raised :class:`~control.errors.ParleyError`s: the app's error middleware
answers them (401 with ``WWW-Authenticate: Bearer``).

Replace with the auth module's admin check when it exists (same decorator name).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web
from loguru import logger

from control.errors import Forbidden, Unauthorized
from control.keys import SETTINGS

__all__ = ["require_admin"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _presented_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("X-Admin-Token")


def require_admin(handler: Handler) -> Handler:
    """Decorate an aiohttp handler so that only an admin may call it (see module doc)."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        settings = request.app.get(SETTINGS)
        token = getattr(settings, "admin_token", None)
        if token is not None and token.get_secret_value():
            presented = _presented_token(request)
            if presented is None or not hmac.compare_digest(presented.encode(), token.get_secret_value().encode()):
                logger.warning(
                    "admin request {} {} refused: missing or wrong admin token", request.method, request.path
                )
                raise Unauthorized("admin token required")
        elif not _is_loopback(request.remote) or any(h in request.headers for h in _PROXY_HEADERS):
            logger.warning(
                "admin request {} {} from {} refused: ADMIN_TOKEN is unset, "
                "so admin routes answer direct loopback clients only",
                request.method,
                request.path,
                request.remote,
            )
            raise Forbidden("admin routes are limited to local clients; set ADMIN_TOKEN to use them remotely")
        return await handler(request)

    return guarded

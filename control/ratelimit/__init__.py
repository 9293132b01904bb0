"""Per-client limits: open WebSockets and their rate per address, REST requests per
address and per principal, broadcaster creations per address (:mod:`.limiter`).

Two middlewares, wired in ``control/app.py`` around the access check:

- :func:`setup` (before ``auth.setup``): the client's address (:mod:`.clientip`:
  the peer, or ``X-Forwarded-For`` from ``TRUSTED_PROXIES`` only) is checked before
  any credential is verified, so a flood of bad tokens costs a dictionary lookup
  each: a WebSocket upgrade against the open-connection count and the new-connection
  bucket (and counted until the socket closes), a REST request against the
  address's bucket, a broadcaster creation against its own;
- :func:`setup_principals` (after ``auth.setup``): a REST request with credentials
  (a token's identity under its API key, a signed-in user) against the principal's
  bucket, whichever address it comes from. The open and dev principals (no
  credentials) are limited by address only.

A WebSocket relayed by another node of the cluster (``control.cluster``) was counted
there, as its client; the node that serves it does not count it again. One handed
over by another node of the host (its socket passed here) is counted here, where it
stays open, as any client of this node.

REST means ``/api``, ``/rooms``, ``/auth`` and ``/metrics``; the meeting page's files and
presigned storage URLs (their own signature and expiry) are not counted. Loopback
is not exempt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import hdrs, web

from control.auth import PRINCIPAL, AuthMethod
from control.config import Settings
from control.ratelimit.limiter import ClientLimits, RateLimited, RefusalLog

__all__ = ["CLIENT_LIMITS", "ClientLimits", "RateLimited", "setup", "setup_principals"]

#: The node's per-client tables (read by tests and, later, metrics).
CLIENT_LIMITS: Final = web.AppKey("client_limits", ClientLimits)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REST_PREFIXES: Final = ("/api", "/rooms", "/auth", "/metrics")
_NOT_COUNTED: Final = ("/api/storage/objects/",)
_BROADCASTERS: Final = "/rooms/{roomId}/broadcasters"
_ANONYMOUS: Final = frozenset({AuthMethod.OPEN, AuthMethod.DEV})


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _is_rest(request: web.Request) -> bool:
    path = request.path
    return path.startswith(_REST_PREFIXES) and not path.startswith(_NOT_COUNTED)


def _creates_broadcaster(request: web.Request) -> bool:
    if request.method != hdrs.METH_POST:
        return False
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical == _BROADCASTERS


def setup(
    app: web.Application, settings: Settings, *, relayed: Callable[[web.Request], bool] | None = None
) -> ClientLimits:
    """Install the per-address middleware (call before ``auth.setup``).

    ``relayed`` tells a WebSocket another node of the cluster relays (proven by the
    cluster's relay token): its client was counted by that node, under its own
    address; here it would count under the relaying node's, so it is not counted."""
    limits = ClientLimits(settings)
    app[CLIENT_LIMITS] = limits
    refusals = RefusalLog()

    @web.middleware
    async def address_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        websocket = _is_websocket(request)
        if not websocket and not _is_rest(request):
            return await handler(request)
        if websocket and relayed is not None and relayed(request):
            return await handler(request)
        key = limits.key_of(request)
        try:
            if websocket:
                limits.check_connection(key)
            else:
                limits.check_rest(key)
                if _creates_broadcaster(request):
                    limits.check_broadcaster(key)
        except RateLimited as error:
            refusals.refused(request, key, error)
            raise
        if not websocket:
            return await handler(request)
        with limits.connection(key):
            return await handler(request)

    app.middlewares.append(address_limits)
    return limits


def setup_principals(app: web.Application) -> None:
    """Install the per-principal middleware (call after ``auth.setup``)."""
    limits = app[CLIENT_LIMITS]
    refusals = RefusalLog()

    @web.middleware
    async def principal_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        principal = request.get(PRINCIPAL)
        credentialed = principal is not None and principal.method not in _ANONYMOUS
        if credentialed and principal is not None and not _is_websocket(request) and _is_rest(request):
            key = f"{principal.method}:{principal.api_key or ''}:{principal.identity}"
            try:
                limits.check_principal(key)
            except RateLimited as error:
                refusals.refused(request, f"principal {principal.identity!r}", error)
                raise
        return await handler(request)

    app.middlewares.append(principal_limits)

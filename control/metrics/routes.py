"""``GET /metrics``: the Prometheus text exposition of this app's registry.

Access: open in the no-keys local (dev) mode, as every route is there; otherwise
``Authorization: Bearer`` with ``METRICS_TOKEN`` (compared in constant time) or an
access token signed by one of the API keys that grants ``roomList`` (or a roomless
``roomAdmin``): :func:`control.auth.require_room_list`.
"""

from __future__ import annotations

import hmac
from typing import Final

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from control.auth import ACCESS, principal_of, require_room_list
from control.errors import Unauthorized

__all__ = ["METRICS_PATH", "REGISTRY", "check_access", "metrics_routes"]

METRICS_PATH: Final = "/metrics"
#: The registry ``GET /metrics`` exposes (set by ``control.metrics.setup``'s cleanup_ctx).
REGISTRY: Final = web.AppKey("metrics_registry", CollectorRegistry)


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _matches(presented: str | None, token: str | None) -> bool:
    return presented is not None and token is not None and hmac.compare_digest(presented.encode(), token.encode())


async def check_access(request: web.Request, metrics_token: str | None) -> None:
    """Let the request through, or raise 401/403 (the JSON error shape)."""
    if request.app[ACCESS].policy.dev:
        return
    presented = _bearer(request)
    if _matches(presented, metrics_token):
        return
    if presented is None:
        raise Unauthorized(
            "GET /metrics needs Authorization: Bearer (METRICS_TOKEN or a roomList token)", code="token_missing"
        )
    require_room_list(await principal_of(request))


def metrics_routes(metrics_token: str | None) -> web.RouteTableDef:
    """``GET /metrics`` over the registry stored under :data:`REGISTRY`."""
    routes = web.RouteTableDef()

    @routes.get(METRICS_PATH)
    async def metrics(request: web.Request) -> web.Response:
        await check_access(request, metrics_token)
        body = generate_latest(request.app[REGISTRY])
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})

    return routes

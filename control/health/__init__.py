"""Node health: ``GET /api/health`` (:mod:`control.health.routes`).

It starts nothing: :func:`setup` only serves the route, which probes the workers of
``app[WORKER_POOL]`` at each request.
"""

from __future__ import annotations

from aiohttp import web

from control.health import routes as _routes_module
from control.health.routes import WORKER_PROBE_TIMEOUT, worker_health

__all__ = ["WORKER_PROBE_TIMEOUT", "setup", "worker_health"]


def setup(app: web.Application) -> None:
    """Serve ``GET /api/health``."""
    app.add_routes(_routes_module.routes)

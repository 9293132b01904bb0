"""Node health: ``GET /api/health`` (:mod:`control.health.routes`).

It starts nothing: :func:`setup` only serves the route, which probes the workers of
the pool at each request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from control.health.routes import WORKER_PROBE_TIMEOUT, health_routes, worker_health

if TYPE_CHECKING:
    from workers.worker_pool import WorkerPool

__all__ = ["WORKER_PROBE_TIMEOUT", "health_routes", "setup", "worker_health"]


def setup(app: web.Application, *, pool: web.AppKey[WorkerPool]) -> None:
    """Serve ``GET /api/health`` over the worker pool under ``pool``."""
    app.add_routes(health_routes(pool))

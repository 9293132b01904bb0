"""The aiohttp application factory.

``create_app(settings)`` wires the app: settings and shared objects under typed
``web.AppKey``s (``control/keys.py``), things that start and stop as
``cleanup_ctx`` entries (started in order, closed in reverse), routes.
Subsystems add themselves here: a ``cleanup_ctx`` function for what they run
and their routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from loguru import logger

from control import health
from control.config import Settings
from control.keys import SETTINGS, WORKER_POOL


async def worker_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the mediasoup worker pool; close it (and its worker processes) on exit."""
    from workers.worker import WorkerSettings
    from workers.worker_pool import WorkerPool

    settings = app[SETTINGS]
    pool = WorkerPool(
        num_workers=settings.mediasoup_num_workers,
        worker_settings=WorkerSettings(
            log_level=settings.mediasoup_worker_log_level,
            log_tags=list(settings.mediasoup_worker_log_tags),
            rtc_min_port=settings.mediasoup_rtc_min_port,
            rtc_max_port=settings.mediasoup_rtc_max_port,
        ),
    )
    await pool.start()
    app[WORKER_POOL] = pool
    logger.info(
        "{} mediasoup worker(s) running, pids {}, RTC ports {}-{}",
        len(pool.workers),
        ", ".join(str(w.pid) for w in pool.workers),
        settings.mediasoup_rtc_min_port,
        settings.mediasoup_rtc_max_port,
    )
    try:
        yield
    finally:
        await pool.close()
        logger.info("mediasoup workers closed")


def create_app(settings: Settings) -> web.Application:
    """Build the Parley application for ``settings`` (nothing starts until it runs)."""
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(worker_pool_ctx)
    app.add_routes(health.routes)
    return app

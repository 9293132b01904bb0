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
from control.api import chat as chat_api
from control.api import meetings as meetings_api
from control.chat.context import chat_ctx
from control.chat.signaling import chat_signaling_ctx
from control.events import routes as events_routes
from control.events.service import events_ctx
from control.storage import routes as storage_routes
from control.storage.service import storage_ctx
from control.config import Settings
from control.http import error_middleware
from control import rooms
from control import recording
from control.signaling import server as signaling
from control.keys import CHAT, MEETINGS, SETTINGS, WORKER_POOL


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
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(worker_pool_ctx)
    app.cleanup_ctx.append(events_ctx)  # before storage: finished uploads publish events
    app.cleanup_ctx.append(storage_ctx)
    app.cleanup_ctx.append(chat_ctx)  # after events: meeting changes publish events
    rooms.setup(app, pool=WORKER_POOL, chat=CHAT, meetings=MEETINGS)  # after the pool and chat (meetings)
    app.cleanup_ctx.append(chat_signaling_ctx)  # after chat and rooms: chatMessage/getChatHistory over protoo
    app.cleanup_ctx.append(recording.recording_ctx)  # after rooms, storage, chat: stops recordings before rooms close
    app.add_routes(health.routes)
    app.add_routes(events_routes.routes)  # GET /api/events/outbox (admin)
    app.add_routes(storage_routes.routes)  # the local store's presigned URLs
    app.add_routes(chat_api.routes)  # GET/DELETE /api/rooms/{roomId}/messages
    app.add_routes(meetings_api.routes)  # GET /api/meetings/{id}, /api/rooms/{roomId}/meetings
    app.add_routes(recording.routes)  # POST/DELETE /api/rooms/{roomId}/recording (admin)
    app.add_routes(signaling.routes)  # protoo WebSocket: GET /?roomId=&peerId= (and /ws)
    return app

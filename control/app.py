"""The aiohttp application factory: the one place that wires subsystems together.

``create_app(settings)`` holds the settings under ``SETTINGS`` and calls each
subsystem's ``setup(app, ...)`` (its ``cleanup_ctx`` and routes; ``control/keys.py``
lists the typed ``web.AppKey``s they publish), handing each the keys of what it
depends on. ``cleanup_ctx`` entries start in the order of the calls and close in
reverse, so the order is the dependency order (see :func:`create_app`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from loguru import logger

from control import auth, chat, cluster, events, health, metrics, ratelimit, recording, rooms, storage
from control import web as web_page
from control.config import Settings
from control.health.routes import CLUSTER_HEALTH
from control.http import error_middleware
from control.keys import CHAT, EVENTS, MEETINGS, ROOMS, SETTINGS, UPLOADS, WORKER_POOL
from control.logging import quiet_malformed_http
from control.recording import RECORDINGS
from control.rooms.routes import CLUSTER_ROOMS
from control.signaling import server as signaling
from control.signaling.observe import REQUEST_OBSERVER


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


def _relayed(request: web.Request) -> bool:
    """A connection another node of the cluster relays (403 for a wrong relay token); not
    one handed over to this node (``control.cluster.handover``): that socket is this
    node's, counted here under its client's address as long as it is open."""
    node = request.app.get(cluster.CLUSTER)
    return node is not None and node.relay.is_relayed(request) and cluster.HANDOVER_HEADER not in request.headers


def create_app(settings: Settings) -> web.Application:
    """Build the Parley application for ``settings`` (nothing starts until it runs).

    Start-up order (shutdown is the reverse), and why:

    1. the worker pool: everything media needs it;
    2. events: storage and chat publish on it (a finished upload, a meeting change),
       and it closes last of them, so what they publish on the way out is flushed;
    3. storage (objects + upload queue): the recordings' uploads go there;
    4. chat and meetings (with the database): rooms record joins and leaves as meetings;
    5. rooms: after the pool and the chat;
    6. chat over signaling: registers its methods on the rooms, subscribes to the chat;
    7. recording: follows the rooms and uploads, so it stops its recordings (FFmpeg
       finishes, the MP4s are queued) before the rooms and the queue close;
    8. metrics: reads all of the above (``GET /metrics``), stops first.
    """
    quiet_malformed_http()  # a client's malformed request is a warning, not a traceback
    app = web.Application(middlewares=[error_middleware])
    ratelimit.setup(app, settings, relayed=_relayed)  # per-address limits: before any credential is verified
    auth.setup(app, settings)
    ratelimit.setup_principals(app)  # per-principal REST limits: once the access check knows who
    app[SETTINGS] = settings
    app.cleanup_ctx.append(worker_pool_ctx)
    events.setup(app, settings=SETTINGS)
    storage.setup(app, settings=SETTINGS, events=EVENTS)
    chat.setup(app, settings=SETTINGS, events=EVENTS)
    rooms.setup(app, pool=WORKER_POOL, chat=CHAT, meetings=MEETINGS)
    chat.setup_signaling(app, rooms=ROOMS)
    cluster.setup(
        app,
        settings=SETTINGS,
        rooms=ROOMS,
        pool=WORKER_POOL,
        router=signaling.ROOM_ROUTER,
        views=(CLUSTER_ROOMS, CLUSTER_HEALTH),  # cluster-wide GET /api/rooms, /api/health
    )  # REDIS_URL
    recording.setup(app, settings=SETTINGS, rooms=ROOMS, uploads=UPLOADS, chat=CHAT, meetings=MEETINGS, events=EVENTS)
    health.setup(app, pool=WORKER_POOL)
    metrics.setup(
        app,
        settings=settings,
        pool=WORKER_POOL,
        rooms=ROOMS,
        signaling=REQUEST_OBSERVER,
        recordings=RECORDINGS,
        uploads=UPLOADS,
        events=EVENTS,
        chat=CHAT,
        limits=ratelimit.CLIENT_LIMITS,
    )
    web_page.setup(app, settings=SETTINGS, signaling=signaling.protoo_websocket)  # GET / (page or protoo), /r/{roomId}
    app.add_routes(signaling.routes)  # protoo WebSocket: /ws (and / through web_page)
    return app

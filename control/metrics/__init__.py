"""Prometheus metrics: ``GET /metrics`` (:mod:`control.metrics.routes`).

Collection costs nothing on the hot paths:

- gauges (rooms, peers, producers, consumers, workers, recordings, queues) are read
  from the application's objects when Prometheus scrapes
  (:class:`~control.metrics.collector.StateCollector`), and so are the per-client
  limits' refusals, which :mod:`control.ratelimit` counts in a dict on the refusal path
  only (:class:`~control.metrics.collector.ClientLimitsCollector`);
- what costs a worker request or a query (transport bytes, consumer scores, the
  outbox) is sampled every ``METRICS_SAMPLE_INTERVAL_SECONDS``
  (:class:`~control.metrics.sampler.Sampler`);
- counters and histograms of events that happen anyway (a signaling request, a worker
  channel round trip, a chat message) are told by a hook: signaling's
  :data:`~control.signaling.observe.REQUEST_OBSERVER`, each worker channel's
  ``timing_hook`` (``workers/`` does not import Prometheus), the chat's ``subscribe``.

Every family lives in one registry per application (:data:`METRICS`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web
from loguru import logger
from prometheus_client import CollectorRegistry

from control.config import Settings
from control.metrics.channel import ChannelTimings
from control.metrics.collector import ClientLimitsCollector, ClientLimitsView, RecordingsView, StateCollector
from control.metrics.families import Families
from control.metrics.routes import METRICS_PATH, REGISTRY, metrics_routes
from control.metrics.sampler import Sampler
from control.signaling.messages import REQUESTS
from control.signaling.observe import RequestObserver

if TYPE_CHECKING:
    from control.chat.service import ChatService
    from control.events.bus import EventBus
    from control.ratelimit import ClientLimits
    from control.recording.service import RecordingService
    from control.rooms.manager import RoomManager
    from control.storage.uploads import UploadQueue
    from workers.worker import Worker
    from workers.worker_pool import WorkerPool

__all__ = ["METRICS", "METRICS_PATH", "Families", "Metrics", "setup"]

#: Signaling methods outside the known set are counted under this one label
#: (the method is a string chosen by the client: its values must stay bounded).
OTHER_METHOD: Final = "other"


class Metrics:
    """The metrics of one app: its registry, families, collector and sampler."""

    def __init__(
        self,
        *,
        rooms: RoomManager,
        pool: WorkerPool,
        recordings: RecordingsView | None,
        uploads: UploadQueue | None,
        events: EventBus | None,
        interval: float,
        limits: ClientLimitsView | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.families = Families(self.registry)
        self.rooms = rooms
        self.pool = pool
        self.collector = StateCollector(rooms, pool, lambda: recordings, uploads)
        self.registry.register(self.collector)
        self.sampler = Sampler(self.families, self.collector, events, interval)
        self.channel = ChannelTimings()
        self.registry.register(self.channel)
        if limits is not None:
            self.registry.register(ClientLimitsCollector(limits))

    # -- hooks (each must cost microseconds: they run on the paths they observe) -------

    def observe_signaling(self, method: str, outcome: str, seconds: float) -> None:
        """The signaling :data:`RequestObserver`."""
        if method not in REQUESTS and method not in self.rooms.methods:
            method = OTHER_METHOD
        self.families.signaling_requests.labels(method, outcome).inc()
        self.families.signaling_seconds.labels(method).observe(seconds)

    @property
    def observe_channel(self) -> Callable[[int, float], None]:
        """Every worker channel's ``timing_hook`` (:class:`~control.metrics.channel.ChannelTimings`)."""
        return self.channel.observe

    def count_chat_message(self, _message: object) -> None:
        self.families.chat_messages.inc()

    def watch_worker(self, worker: Worker) -> None:
        worker.channel.timing_hook = self.observe_channel

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        for worker in self.pool.workers:
            self.watch_worker(worker)
        self.pool.on("workerrespawned", self.watch_worker)
        self.sampler.start()

    async def close(self) -> None:
        self.pool.remove_listener("workerrespawned", self.watch_worker)
        for worker in self.pool.workers:
            if worker.channel.timing_hook == self.observe_channel:
                worker.channel.timing_hook = None
        await self.sampler.close()


#: This app's metrics (``control.metrics.setup``).
METRICS: Final = web.AppKey("metrics", Metrics)


def setup(
    app: web.Application,
    *,
    settings: Settings,
    pool: web.AppKey[WorkerPool],
    rooms: web.AppKey[RoomManager],
    signaling: web.AppKey[RequestObserver],
    recordings: web.AppKey[RecordingService] | None = None,
    uploads: web.AppKey[UploadQueue] | None = None,
    events: web.AppKey[EventBus] | None = None,
    chat: web.AppKey[ChatService] | None = None,
    limits: web.AppKey[ClientLimits] | None = None,
) -> None:
    """Serve ``GET /metrics`` (unless ``METRICS_ENABLED=false``) over the objects under the given keys.

    Call it after the subsystems it reads (its cleanup_ctx resolves them at start).
    """
    if not settings.metrics_enabled:
        return
    token = settings.metrics_token.get_secret_value() if settings.metrics_token is not None else None
    app.add_routes(metrics_routes(token))

    async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
        metrics = Metrics(
            rooms=app[rooms],
            pool=app[pool],
            recordings=app.get(recordings) if recordings is not None else None,
            uploads=app.get(uploads) if uploads is not None else None,
            events=app.get(events) if events is not None else None,
            interval=settings.metrics_sample_interval_seconds,
            limits=app.get(limits) if limits is not None else None,
        )
        app[METRICS] = metrics
        app[REGISTRY] = metrics.registry
        app[signaling] = metrics.observe_signaling
        unsubscribe: Callable[[], None] = lambda: None  # noqa: E731
        chat_service = app.get(chat) if chat is not None else None
        if chat_service is not None:
            unsubscribe = chat_service.subscribe(metrics.count_chat_message)
        metrics.start()
        logger.info("metrics: GET {} ({})", METRICS_PATH, "token" if token else "roomList tokens or dev mode")
        try:
            yield
        finally:
            unsubscribe()
            await metrics.close()

    app.cleanup_ctx.append(metrics_ctx)

"""What is sampled on an interval rather than read at scrape time: things that cost a
request to a worker or a database query (``METRICS_SAMPLE_INTERVAL_SECONDS``).

- transport bytes: ``getStats`` of every transport, the growth since the previous sample
  added to ``parley_transport_bytes_total{direction,worker}`` (bytes a transport moved
  between its last sample and its close are not counted);
- consumer scores: every consumer's last score (kept up to date by the worker's
  ``score`` notifications, no request) observed into ``parley_consumer_score``;
- the event outbox: its count and the age of its oldest event;
- without ``/proc``: each worker's ``getResourceUsage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from loguru import logger

from control.metrics.collector import StateCollector, WorkerUsage, proc_stats, worker_label
from control.metrics.families import Families
from workers.pipe_transport import PipeTransport

if TYPE_CHECKING:
    from control.events.bus import EventBus
    from workers.transport import Transport
    from workers.worker import Worker

__all__ = ["Sampler"]

#: A worker that does not answer a stats request within this long is skipped this round.
REQUEST_TIMEOUT = 2.0


class Sampler:
    """Samples into ``families`` and ``collector`` every ``interval`` seconds until closed."""

    def __init__(self, families: Families, collector: StateCollector, events: EventBus | None, interval: float) -> None:
        self.families = families
        self.collector = collector
        self.events = events
        self.interval = interval
        self._last_bytes: dict[str, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics-sampler")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception as error:  # noqa: BLE001 - metrics must never take the node down
                logger.warning("metrics: sampling failed: {}", error)
            await asyncio.sleep(self.interval)

    async def sample(self) -> None:
        """One round (also called by tests, to not wait for the interval)."""
        seen: dict[str, tuple[int, int]] = {}
        for worker in list(self.collector.pool.workers):
            await self._sample_worker(worker, seen)
        self._last_bytes = seen
        await self._sample_outbox()

    async def _sample_worker(self, worker: Worker, seen: dict[str, tuple[int, int]]) -> None:
        label = worker_label(worker)
        transports = [t for router in list(worker.routers) for t in list(router.transports.values())]
        stats = await asyncio.gather(*(self._bytes_of(t) for t in transports))
        grown_in = grown_out = 0
        for transport, moved in zip(transports, stats, strict=True):
            before = self._last_bytes.get(transport.id)
            if moved is None:
                if before is not None and not transport.closed:
                    seen[transport.id] = before  # no answer this round: keep its baseline
                continue
            before_in, before_out = before or (0, 0)
            grown_in += max(0, moved[0] - before_in)
            grown_out += max(0, moved[1] - before_out)
            seen[transport.id] = moved
            if isinstance(transport, PipeTransport):
                continue  # the same tracks, relayed to another router: scored there
            for consumer in list(transport.consumers.values()):
                self.families.consumer_score.observe(_score_of(consumer.score))
        if grown_in:
            self.families.transport_bytes.labels("in", label).inc(grown_in)
        if grown_out:
            self.families.transport_bytes.labels("out", label).inc(grown_out)
        if proc_stats(worker.pid) is None:
            await self._sample_usage(worker, label)

    @staticmethod
    async def _bytes_of(transport: Transport) -> tuple[int, int] | None:
        if transport.closed:
            return None
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                stats = await transport.get_stats()
        except Exception:  # noqa: BLE001 - closed meanwhile, worker busy or gone: next round
            return None
        if not stats:
            return None
        return int(stats[0].get("bytesReceived", 0)), int(stats[0].get("bytesSent", 0))

    async def _sample_usage(self, worker: Worker, label: str) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                usage = await worker.get_resource_usage()
        except Exception:  # noqa: BLE001 - reported as missing until it answers again
            return
        # mediasoup reports ru_utime/ru_stime in milliseconds and ru_maxrss in KiB.
        self.collector.usage[label] = WorkerUsage(
            cpu_seconds=(usage["ru_utime"] + usage["ru_stime"]) / 1000.0, rss_bytes=usage["ru_maxrss"] * 1024.0
        )

    async def _sample_outbox(self) -> None:
        if self.events is None:
            return
        outbox = self.events.outbox
        pending = await outbox.count()
        oldest = await outbox.oldest(1) if pending else []
        self.collector.outbox.pending = pending
        self.collector.outbox.oldest_seconds = max(0.0, time.time() - oldest[0].created_at) if oldest else 0.0


def _score_of(score: Any) -> float:
    """The consumer's own score out of mediasoup's ``{score, producerScore, producerScores}``."""
    if isinstance(score, dict):
        return float(score.get("score", 0))
    return float(getattr(score, "score", 0) or 0)

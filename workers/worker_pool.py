"""A set of workers, one per core by default (ours; mediasoup leaves this to apps).

New routers go to the least loaded live worker, measured by what actually
costs CPU in a worker (its live transports and consumers), not round robin:
a room of 50 people and an empty room are not the same load. A worker that
dies is replaced with exponential backoff, and the pool reports which routers
were lost with it (event ``workerdied(worker, routers, error)``) so the
control plane can rebuild its rooms on a live worker.

A worker that is alive but stops answering its channel (SIGSTOP, a spin) is
found by a health probe: every ``health_interval`` seconds each worker gets one
cheap request (:meth:`Worker.ping`) that must be answered within
``health_timeout``; one that is not is declared hung (event
``workerhung(worker)``), killed (:meth:`Worker.kill`) and so goes the
``workerdied`` way above: replaced, its rooms rebuilt. A late answer alone is
not a hang: a worker that kept sending on its channel while the probe waited
(the probe queued behind a burst of requests: a join storm) and is not stopped
(``T`` in ``/proc/<pid>/stat``) is busy, and is probed again instead of killed
with every room on it. The probe is an ordinary
request among the others (one per second per worker): it adds nothing to the
channel's hot path. While a probe is overdue (``suspect_after``) the worker is
left out of placement, and :meth:`WorkerPool.pick_worker` pings its choice
before handing it out, so a new room never goes to a worker that is not
answering.

Events: ``workerdied``, ``workerrespawned``, ``workerhung``, ``workerbusy`` (a
probe answered late by a worker that was answering others).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from loguru import logger

from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import ChannelTimeoutError, InvalidStateError
from workers.processes import proc_stat
from workers.worker import Worker, WorkerSettings

#: Defaults of the health probe: a worker silent for ``HEALTH_TIMEOUT`` seconds is
#: hung; it is noticed at most ``HEALTH_INTERVAL + HEALTH_TIMEOUT`` after it stopped.
HEALTH_INTERVAL = 1.0
HEALTH_TIMEOUT = 3.0
#: A probe unanswered this long takes the worker out of placement until it answers.
SUSPECT_AFTER = 0.5
#: How long :meth:`WorkerPool.pick_worker` waits for the chosen worker's answer.
PLACEMENT_PING_TIMEOUT = 0.5


def worker_load(worker: Worker) -> int:
    """Live transports plus consumers in all routers of ``worker``."""
    load = 0
    for router in worker.routers:
        for transport in router.transports.values():
            load += 1 + len(transport.consumers)
    return load


def _busy(worker: Worker, received_before: int) -> bool:
    """Sent something on its channel since ``received_before`` and not stopped."""
    return worker.channel.received_bytes != received_before and not _stopped(worker.pid)


def _stopped(pid: int) -> bool:
    """Stopped or traced (``T``/``t`` in ``/proc/<pid>/stat``); False if unreadable."""
    stat = proc_stat(pid)
    return stat is not None and stat.stopped


class WorkerPool(EnhancedEventEmitter):
    def __init__(
        self,
        num_workers: int | None = None,
        worker_settings: WorkerSettings | None = None,
        respawn_delay: float = 0.5,
        respawn_max_delay: float = 30.0,
        health_interval: float = HEALTH_INTERVAL,
        health_timeout: float = HEALTH_TIMEOUT,
        suspect_after: float = SUSPECT_AFTER,
    ) -> None:
        super().__init__()
        self.num_workers = num_workers or os.cpu_count() or 1
        self.worker_settings = worker_settings or WorkerSettings()
        self.respawn_delay = respawn_delay
        self.respawn_max_delay = respawn_max_delay
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.suspect_after = suspect_after
        self._slots: list[Worker | None] = []
        self._respawns: set[asyncio.Task[Any]] = set()
        #: Workers with a health probe in flight -> when it was sent (loop time).
        self._probing: dict[Worker, float] = {}
        #: ... and how many bytes their channel had received by then.
        self._received_at_probe: dict[Worker, int] = {}
        self._health: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def workers(self) -> list[Worker]:
        """The live workers."""
        return [w for w in self._slots if w is not None and not w.closed]

    async def start(self) -> None:
        """Spawn every worker; fail if any cannot start (bad settings, missing binary)."""
        spawned = await asyncio.gather(
            *(self._spawn(index) for index in range(self.num_workers)), return_exceptions=True
        )
        errors = [result for result in spawned if isinstance(result, BaseException)]
        if errors:
            await self.close()
            raise errors[0]
        self._slots = [worker for worker in spawned if not isinstance(worker, BaseException)]  # all of them
        if self.health_interval > 0:
            self._health = asyncio.create_task(self._watch_health(), name="worker-pool-health")

    async def _spawn(self, index: int) -> Worker:
        settings = replace(self.worker_settings, app_data={**self.worker_settings.app_data, "index": index})
        worker = await Worker.create(settings)
        worker.once("died", lambda error: self._on_died(index, worker, error))
        logger.bind(worker_pid=worker.pid).info("worker {} running", index)
        return worker

    def responsive(self, worker: Worker) -> bool:
        """Live, and not sitting on a health probe for longer than ``suspect_after``."""
        if worker.closed:
            return False
        sent = self._probing.get(worker)
        return sent is None or asyncio.get_running_loop().time() - sent < self.suspect_after

    def _by_load(self, prefer: Callable[[Worker], bool] | None = None) -> list[Worker]:
        """Live workers, responsive ones first, then those ``prefer`` accepts, each
        group least loaded first. Ties (e.g. rooms created before anyone joined) are
        broken by router count, so empty rooms spread over the workers too."""

        def rank(worker: Worker) -> tuple[bool, bool, int, int]:
            preferred = prefer is None or prefer(worker)
            return (not self.responsive(worker), not preferred, worker_load(worker), len(worker.routers))

        return sorted(self.workers, key=rank)

    def least_loaded(self, prefer: Callable[[Worker], bool] | None = None) -> Worker:
        """The least loaded live worker, preferring those that answer their probes
        (and those ``prefer`` accepts: e.g. whose WebRtcServer is up)."""
        ranked = self._by_load(prefer)
        if not ranked:
            raise InvalidStateError("no live mediasoup worker")
        return ranked[0]

    async def pick_worker(
        self, prefer: Callable[[Worker], bool] | None = None, ping_timeout: float = PLACEMENT_PING_TIMEOUT
    ) -> Worker:
        """The least loaded worker that answers a ping within ``ping_timeout``: where a
        new router goes (``prefer`` as for :meth:`least_loaded`). A worker stopped
        since its last probe is passed over (the next one answers); if none answers,
        the least loaded one (the probe decides its fate)."""
        ranked = self._by_load(prefer)
        if not ranked:
            raise InvalidStateError("no live mediasoup worker")
        for worker in ranked:
            if not self.responsive(worker):
                break  # the rest are suspects too
            try:
                await worker.ping(ping_timeout)
            except (ChannelTimeoutError, InvalidStateError):
                logger.bind(worker_pid=worker.pid).warning(
                    "worker did not answer within {:.1f}s; placing elsewhere", ping_timeout
                )
                continue
            if not worker.closed:
                return worker
        return self.least_loaded(prefer)

    async def create_router(self, media_codecs: list[Any] | None = None, app_data: dict[str, Any] | None = None) -> Any:
        """Create a router on the least loaded live worker."""
        return await self.least_loaded().create_router(media_codecs, app_data)

    # -- health ----------------------------------------------------------------------

    async def _watch_health(self) -> None:
        """Probe every worker each ``health_interval`` (one probe in flight per worker)."""
        while not self.closed:
            await asyncio.sleep(self.health_interval)
            for worker in self.workers:
                if worker not in self._probing:
                    self._probe(worker)

    def _probe(self, worker: Worker) -> None:
        try:
            future = worker.ping(self.health_timeout)
        except InvalidStateError:
            return
        self._probing[worker] = asyncio.get_running_loop().time()
        self._received_at_probe[worker] = worker.channel.received_bytes
        future.add_done_callback(lambda done: self._probed(worker, done))

    def _probed(self, worker: Worker, done: asyncio.Future[Any]) -> None:
        self._probing.pop(worker, None)
        received_before = self._received_at_probe.pop(worker, None)
        if done.cancelled():
            return
        error = done.exception()
        if not isinstance(error, ChannelTimeoutError) or worker.closed or self.closed:
            return
        if received_before is not None and _busy(worker, received_before):
            logger.bind(worker_pid=worker.pid).warning(
                "worker busy: a health probe waited over {:g}s behind other requests", self.health_timeout
            )
            self.safe_emit("workerbusy", worker)
            return
        self.safe_emit("workerhung", worker)
        worker.kill(f"no answer to a health probe within {self.health_timeout:g}s")

    def _on_died(self, index: int, worker: Worker, error: Exception) -> None:
        self._probing.pop(worker, None)
        self._received_at_probe.pop(worker, None)
        lost = worker.routers_at_death
        self.safe_emit("workerdied", worker, lost, error)
        if self.closed:
            return
        task = asyncio.ensure_future(self._respawn(index))
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def _respawn(self, index: int) -> None:
        delay = self.respawn_delay
        while not self.closed:
            await asyncio.sleep(delay)
            try:
                worker = await self._spawn(index)
            except Exception as error:  # noqa: BLE001  (any failure to respawn is retried with backoff)
                logger.error("respawning worker {} failed: {}; retrying in {:.1f}s", index, error, delay)
                delay = min(delay * 2, self.respawn_max_delay)
                continue
            if self.closed:
                worker.close()
                return
            self._slots[index] = worker
            self.safe_emit("workerrespawned", worker)
            return

    async def close(self) -> None:
        """Close every worker and wait for the processes to exit."""
        self.closed = True
        if self._health is not None:
            self._health.cancel()
        for task in list(self._respawns):
            task.cancel()
        workers = [w for w in self._slots if w is not None]
        for worker in workers:
            worker.close()
        await asyncio.gather(*(w.wait_closed() for w in workers), return_exceptions=True)

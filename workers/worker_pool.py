"""A set of workers, one per core by default (ours; mediasoup leaves this to apps).

New routers go to the least loaded live worker, measured by what actually
costs CPU in a worker (its live transports and consumers), not round robin:
a room of 50 people and an empty room are not the same load. A worker that
dies is replaced with exponential backoff, and the pool reports which routers
were lost with it (event ``workerdied(worker, routers, error)``) so the
control plane can rebuild its rooms on a live worker.

Events: ``workerdied``, ``workerrespawned``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any

from loguru import logger

from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import InvalidStateError
from workers.worker import Worker, WorkerSettings


def worker_load(worker: Worker) -> int:
    """Live transports plus consumers in all routers of ``worker``."""
    load = 0
    for router in worker.routers:
        for transport in router.transports.values():
            load += 1 + len(transport.consumers)
    return load


class WorkerPool(EnhancedEventEmitter):
    def __init__(
        self,
        num_workers: int | None = None,
        worker_settings: WorkerSettings | None = None,
        respawn_delay: float = 0.5,
        respawn_max_delay: float = 30.0,
    ) -> None:
        super().__init__()
        self.num_workers = num_workers or os.cpu_count() or 1
        self.worker_settings = worker_settings or WorkerSettings()
        self.respawn_delay = respawn_delay
        self.respawn_max_delay = respawn_max_delay
        self._slots: list[Worker | None] = []
        self._respawns: set[asyncio.Task[Any]] = set()
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

    async def _spawn(self, index: int) -> Worker:
        settings = replace(self.worker_settings, app_data={**self.worker_settings.app_data, "index": index})
        worker = await Worker.create(settings)
        worker.once("died", lambda error: self._on_died(index, worker, error))
        logger.bind(worker_pid=worker.pid).info("worker {} running", index)
        return worker

    def least_loaded(self) -> Worker:
        live = self.workers
        if not live:
            raise InvalidStateError("no live mediasoup worker")
        # Ties (e.g. rooms created before anyone joined) are broken by router
        # count, so empty rooms spread over the workers too.
        return min(live, key=lambda worker: (worker_load(worker), len(worker.routers)))

    async def create_router(self, media_codecs: list[Any] | None = None, app_data: dict[str, Any] | None = None) -> Any:
        """Create a router on the least loaded live worker."""
        return await self.least_loaded().create_router(media_codecs, app_data)

    def _on_died(self, index: int, worker: Worker, error: Exception) -> None:
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
        for task in list(self._respawns):
            task.cancel()
        workers = [w for w in self._slots if w is not None]
        for worker in workers:
            worker.close()
        await asyncio.gather(*(w.wait_closed() for w in workers), return_exceptions=True)

"""A room over several workers: which router a transport goes to, and pipes.

Every producer lives on the room's primary router. Once the consumers on one
worker pass ``ROOM_CONSUMERS_PER_WORKER``, new consuming-only transports go to
a router on another worker, and a producer reaches that router through
``pipe_to_router`` on its first consumer there (one pipe per producer and
router, however many consumers ask at once).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from control.errors import Gone

if TYPE_CHECKING:
    from control.rooms.room import Room
    from workers.data_producer import DataProducer
    from workers.producer import Producer
    from workers.router import Router

__all__ = ["Spreading", "consumer_count"]


def consumer_count(router: Router) -> int:
    """Consumers of peers and broadcasters on ``router`` (pipe consumers excluded)."""
    return sum(len(t.consumers) for t in router.transports.values() if t.type != "pipe")


class Spreading:
    """The routers of one room beyond its primary, and the pipes between them."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self._lock = asyncio.Lock()
        self._pipes: dict[tuple[str, str], asyncio.Future[Any]] = {}

    def forget_pipes(self) -> None:
        """The routers closed (room closed or rebuilt): their pipes went with them."""
        self._pipes.clear()

    def estimated_consumers(self, router: Router) -> int:
        """Consumers on ``router`` counting each consuming transport as at least
        one consumer per producer of the room (what it will soon consume)."""
        owners = self.room.participants()
        producers = sum(len(p.producers) for p in owners)
        own: dict[Any, int] = {p.id: len(p.producers) for p in owners}
        total = 0
        for transport in router.transports.values():
            if transport.type == "pipe":
                continue
            n = len(transport.consumers)
            if transport.app_data.get("consuming"):
                n = max(n, producers - own.get(transport.app_data.get("peerId"), 0))
            total += n
        return total

    async def router_for(self, *, producing: bool, consuming: bool) -> Router:
        """Producing transports use the primary router; consuming-only ones the
        first router under ``ROOM_CONSUMERS_PER_WORKER``, a new one on another
        worker when all are full (when there is one)."""
        room = self.room
        workers = room.host.workers
        if producing or not consuming or len(workers) < 2:
            return room.primary
        limit = room.host.settings.room_consumers_per_worker
        async with self._lock:
            for router in room.routers:
                if not router.closed and self.estimated_consumers(router) < limit:
                    return router
            used = {router.worker for router in room.routers}
            candidates = [w for w in workers if w not in used]
            if not candidates:
                return min(room.routers, key=self.estimated_consumers)
            worker = min(candidates, key=lambda w: (room.host.worker_load(w), len(w.routers)))
            router = await room.new_router(worker)
            if room.closed:
                router.close()
                raise Gone("room closed")
            room.routers.append(router)
            room.log.info(
                "room spreads to worker {} ({} routers, limit {} consumers per worker)",
                worker.pid,
                len(room.routers),
                limit,
            )
            return router

    async def make_available(self, entity: Producer | DataProducer, router: Router, *, data: bool = False) -> None:
        """Pipe a producer (or data producer) into ``router`` unless it is there already."""
        source = entity.transport.router
        table: dict[str, Any] = router.data_producers if data else router.producers
        if source is router or entity.id in table:
            return
        key = (entity.id, router.id)
        future = self._pipes.get(key)
        if future is None:
            producer_id, data_producer_id = (None, entity.id) if data else (entity.id, None)
            piping = source.pipe_to_router(router=router, producer_id=producer_id, data_producer_id=data_producer_id)
            future = asyncio.ensure_future(piping)
            self._pipes[key] = future
            future.add_done_callback(lambda f: self._piped(key, f, data))
            self.room.log.info(
                "piping {} {} to router on worker {}",
                "data producer" if data else "producer",
                entity.id,
                router.worker.pid,
            )
        await asyncio.shield(future)

    def _piped(self, key: tuple[str, str], future: asyncio.Future[Any], data: bool) -> None:
        """A pipe is known until it fails or its piped producer closes."""
        if future.cancelled() or future.exception() is not None:
            if self._pipes.get(key) is future:
                del self._pipes[key]
            return
        piped = future.result()["pipeDataProducer" if data else "pipeProducer"]
        piped.observer.on("close", lambda: self._pipes.get(key) is future and self._pipes.pop(key))

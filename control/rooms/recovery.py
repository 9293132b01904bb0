"""A room outliving the worker under it.

A worker that dies takes the room's routers with it: the room is rebuilt on a
live worker (waiting up to :data:`REBUILD_TIMEOUT` for one), the media state of
every participant is dropped (broadcasters leave: their media cannot come back
by itself), and every peer's socket is closed with 4002 ("reconnect"). The
peers stay in their grace period, so reconnecting and re-joining restores the
call. Requests meanwhile wait for the rebuild (:meth:`Recovery.wait_ready`).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from control.errors import Unavailable
from control.signaling.protoo import CLOSE_RECONNECT
from workers.errors import InvalidStateError, MediasoupError

if TYPE_CHECKING:
    from control.rooms.room import Room
    from workers.router import Router

__all__ = ["READY_TIMEOUT", "REBUILD_TIMEOUT", "Recovery"]

#: How long a rebuild after a worker death waits for a live worker.
REBUILD_TIMEOUT = 30.0
#: How long a request waits for a room being rebuilt.
READY_TIMEOUT = 35.0


class Recovery:
    """The rebuild of one room after a worker death."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self._ready = asyncio.Event()
        self._ready.set()
        self._task: asyncio.Task[None] | None = None

    def room_closed(self) -> None:
        # A rebuild in progress is not cancelled mid-request (it would orphan a
        # router in the worker): it sees the room closed and closes what it made.
        self._ready.set()

    async def wait_ready(self) -> None:
        """Return once the room is not being rebuilt (503 after READY_TIMEOUT)."""
        if self._ready.is_set():
            return
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self._ready.wait()
        except TimeoutError:
            raise Unavailable("room is being rebuilt, try again") from None

    def router_died(self, router: Router) -> None:
        """A router of the room went with its worker: rebuild (once)."""
        room = self.room
        if room.closed or self._task is not None:
            return
        room.log.error("media worker {} died under the room; rebuilding it on a live worker", router.worker.pid)
        self._ready.clear()
        self._task = asyncio.ensure_future(self._rebuild())

    def _drop_media(self) -> None:
        room = self.room
        for router in room.routers:
            router.close()
        room.spreading.forget_pipes()
        for participant in room.participants():
            for table in (
                participant.transports,
                participant.producers,
                participant.consumers,
                participant.data_producers,
                participant.data_consumers,
            ):
                table.clear()
            participant.consuming.clear()
        for broadcaster in list(room.broadcasters.values()):
            broadcaster.log.warning("broadcaster dropped: its media worker died")
            room.leave(broadcaster, tell_others=False)
        # Tell everyone to reconnect; their peers wait in the grace period.
        for peer in room.peers.values():
            if peer.connection is not None:
                peer.connection.close_soon(CLOSE_RECONNECT, "media worker died, reconnect")

    async def _build_when_possible(self) -> None:
        room = self.room
        deadline = time.monotonic() + REBUILD_TIMEOUT
        while not room.closed:
            try:
                await room.build()
                return
            except (InvalidStateError, MediasoupError) as error:
                if time.monotonic() > deadline:
                    raise
                room.log.warning("room rebuild waiting for a live worker: {}", error)
                await asyncio.sleep(0.25)

    async def _rebuild(self) -> None:
        room = self.room
        try:
            self._drop_media()
            await self._build_when_possible()
            if room.closed:  # everyone left meanwhile
                for router in room.routers:
                    router.close()
                self._task = None
                return
            room.log.info("room rebuilt on worker {}", room.primary.worker.pid)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001
            room.log.error("room could not be rebuilt: {}; closing it", error)
            self._task = None
            room.close(1011, "media worker died and the room could not be rebuilt")
            return
        self._task = None
        self._ready.set()

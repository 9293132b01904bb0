"""This node as a member of the cluster: its heartbeat, its rooms' placements, routing.

:class:`ClusterNode` registers the node (:class:`~control.cluster.registry.NodeInfo`:
its id, the URL other nodes reach it at, its load) every
:data:`~control.cluster.registry.HEARTBEAT_SECONDS`, keeps the placements of the
rooms it hosts, and forgets a room's placement when the room closes here.

:meth:`ClusterNode.route` is signaling's ``RoomRouter``: before a room is created
or joined locally, it says where the room lives. A room this node hosts, or a
connection another node relays here, is served locally (``None``); any other room is
placed (on the least-loaded live node, atomically) and, if that is another node,
the client's WebSocket is relayed there (:class:`~control.cluster.relay.Relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING

from aiohttp import web
from loguru import logger
from redis.exceptions import RedisError

from control.auth import principal_of, require_ws_join
from control.cluster.cascade import ORIGIN_HEADER, Cascade
from control.cluster.registry import HEARTBEAT_SECONDS, NODE_TTL_MS, NodeInfo, NodeLoad, Registry
from control.cluster.relay import NodeRefused, Relay
from control.errors import ParleyError, Unavailable

if TYPE_CHECKING:
    from control.rooms.manager import RoomManager
    from control.rooms.room import Room
    from workers.worker_pool import WorkerPool

__all__ = ["ClusterNode", "WorkerCpu"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class WorkerCpu:
    """CPU used by the mediasoup workers between two readings (``/proc/<pid>/stat``)."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self._last: tuple[float, float] | None = None

    @staticmethod
    def _ticks(pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return float(fields[11]) + float(fields[12])  # utime + stime

    def percent(self) -> float:
        """Percent of one core used since the previous call (0 on the first)."""
        now = time.monotonic()
        ticks = sum(self._ticks(worker.pid) for worker in self.pool.workers)
        last, self._last = self._last, (now, ticks)
        if last is None or now <= last[0]:
            return 0.0
        return round(max(0.0, ticks - last[1]) / _CLOCK_TICKS / (now - last[0]) * 100, 1)


class ClusterNode:
    """This node's membership of the cluster (see the module doc)."""

    def __init__(
        self, node_id: str, url: str, registry: Registry, relay: Relay, rooms: RoomManager, pool: WorkerPool
    ) -> None:
        self.node_id = node_id
        self.url = url
        self.registry = registry
        self.relay = relay
        self.rooms = rooms
        self.cpu = WorkerCpu(pool)
        #: The live nodes as of the last heartbeat, least loaded first.
        self.nodes: list[NodeInfo] = []
        self.closed = False
        self._beating: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[bool]] = set()
        #: Rooms extended over several nodes (control.cluster.cascade).
        self.cascade = Cascade(self)

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        """Register now (a failure to reach Redis stops the start), then beat."""
        await self.beat()
        self.rooms.observer.on("roomclosed", self._on_room_closed)
        self.cascade.start()
        self._beating = asyncio.create_task(self._beat_forever(), name=f"cluster heartbeat {self.node_id}")
        logger.info("cluster: node {} ({}) joined, {} node(s) live", self.node_id, self.url, len(self.nodes))

    async def close(self) -> None:
        """Leave the registry and hand back this node's placements (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.rooms.observer.remove_listener("roomclosed", self._on_room_closed)
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
        await self.relay.close()
        await self.cascade.close()
        with contextlib.suppress(RedisError, OSError):
            for room_id in list(self.rooms.rooms):
                await self.registry.release(room_id, self.node_id)
            await self.registry.leave(self.node_id)
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        logger.info("cluster: node {} left", self.node_id)

    # -- heartbeat --------------------------------------------------------------------

    def load(self) -> NodeLoad:
        rooms = list(self.rooms.rooms.values())
        peers = [peer for room in rooms for peer in room.peers.values()]
        return NodeLoad(
            full=len(rooms) >= self.rooms.settings.max_rooms,
            rooms=len(rooms),
            peers=len(peers),
            consumers=sum(len(peer.consumers) for peer in peers),
            worker_cpu=self.cpu.percent(),
        )

    async def beat(self) -> None:
        """One heartbeat: write this node's key, read the others', keep this node's rooms."""
        await self.registry.heartbeat(NodeInfo(self.node_id, self.url, self.load()))
        self.nodes = await self.registry.nodes()
        origins = [room_id for room_id, room in self.rooms.rooms.items() if room.origin is None]  # not satellites
        lost = await self.registry.keep(self.node_id, origins)
        await self.cascade.refresh()
        for room_id in lost:
            logger.bind(room=room_id).warning("cluster: room {} is also placed on another live node", room_id)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.beat()
            except (RedisError, OSError) as error:
                logger.warning("cluster: heartbeat failed ({!r}); retrying", error)

    def _on_room_closed(self, room: Room) -> None:
        task = asyncio.ensure_future(self._release(room.id))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, room_id: str) -> bool:
        try:
            return await self.registry.release(room_id, self.node_id)
        except (RedisError, OSError) as error:
            logger.warning("cluster: placement of {} not released ({!r}); it expires", room_id, error)
            return False

    # -- routing (signaling's RoomRouter) ------------------------------------------------

    async def owner_of(self, room_id: str) -> NodeInfo:
        """The live node that hosts ``room_id``, placing it first if it is nowhere."""
        candidate = self.nodes[0].node_id if self.nodes else self.node_id
        owner_id = await self.registry.place(room_id, candidate, fallback=self.node_id)
        if owner_id == self.node_id:
            return NodeInfo(self.node_id, self.url, NodeLoad())
        known = next((node for node in self.nodes if node.node_id == owner_id), None)
        owner = known or await self.registry.node(owner_id)
        if owner is None:  # it died between the two calls
            raise Unavailable(f"the node of room {room_id} is gone, try again")
        return owner

    async def route(self, request: web.Request, room_id: str) -> web.StreamResponse | None:
        """``None``: serve the room here; else the relayed connection to its node (the
        room's origin, or a satellite of it once the origin is full: cascade)."""
        if self.relay.is_relayed(request):
            await self.cascade.prepare(room_id, request.headers.get(ORIGIN_HEADER))
            return None
        local = self.rooms.get_room(room_id)
        peer_id = request.query.get("peerId", "")
        if local is not None and (elsewhere := self.cascade.node_of(local, peer_id)) is not None:
            # A peer of the room's other node reconnecting here: back to its session there.
            await self._may_join(request, room_id)
            target = await self._node(elsewhere)
            return await self.relay.relay(request, elsewhere, target.url, origin=local.origin or self.node_id)
        if local is not None and not self.cascade.overflows(local, peer_id):
            return None
        await self._may_join(request, room_id)
        try:
            return await self._place_and_route(request, room_id, local)
        except NodeRefused as refused:
            # That node died and its key has not expired yet: evict it, place again (once).
            if refused.node_id is None or not await self._evict(refused.node_id):
                raise
            return await self._place_and_route(request, room_id, self.rooms.get_room(room_id))

    async def _place_and_route(
        self, request: web.Request, room_id: str, local: Room | None
    ) -> web.StreamResponse | None:
        """Place the room (if it is nowhere), seat the joiner (cascade), serve or relay."""
        try:
            owner = await self.owner_of(room_id)
            seat = await self.cascade.seat(room_id, owner, local)
        except (RedisError, OSError) as error:
            logger.warning("cluster: Redis unreachable ({!r}): room {} not placed", error, room_id)
            raise Unavailable("the cluster registry is unreachable, try again") from None
        if seat == self.node_id:
            await self.cascade.prepare(room_id, owner.node_id)  # a satellite here unless this is the origin
            return None
        target = owner if seat == owner.node_id else await self._node(seat)
        try:
            return await self.relay.relay(
                request, seat, target.url, origin=owner.node_id if seat != owner.node_id else None
            )
        except NodeRefused as refused:
            refused.node_id = seat
            raise

    async def _node(self, node_id: str) -> NodeInfo:
        known = next((node for node in self.nodes if node.node_id == node_id), None)
        target = known or await self.registry.node(node_id)
        if target is None:
            raise Unavailable("the room's node is gone, try again")
        return target

    @staticmethod
    async def _may_join(request: web.Request, room_id: str) -> None:
        """The caller's credentials, checked here before anything is placed or relayed
        (401/403 as signaling answers them); the owner checks again, and the rest."""
        try:
            require_ws_join(await principal_of(request), room_id, request.query.get("peerId", ""))
        except ParleyError as error:
            logger.bind(room=room_id).warning(
                "signaling: connection from {} refused: {} ({})", request.remote, error.code, error.message
            )
            raise

    async def _evict(self, node_id: str) -> bool:
        """Evict a node that refuses connections, as soon as it has missed a heartbeat."""
        deadline = time.monotonic() + NODE_TTL_MS / 1000
        while time.monotonic() < deadline:
            if await self.registry.evict(node_id):
                logger.warning("cluster: node {} refuses connections and missed its heartbeat: evicted", node_id)
                self.nodes = [node for node in self.nodes if node.node_id != node_id]
                return True
            await asyncio.sleep(0.25)
        return False

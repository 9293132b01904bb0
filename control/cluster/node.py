"""This node as a member of the cluster: its heartbeat, its rooms' placements, routing.

:class:`ClusterNode` registers the node (:class:`~control.cluster.registry.NodeInfo`:
its id, the URL other nodes reach it at, its load) every
:data:`~control.cluster.registry.HEARTBEAT_SECONDS`, keeps the placements of the
rooms it hosts, and forgets a room's placement when the room closes here.

:meth:`ClusterNode.route` is signaling's ``RoomRouter``: before a room is created
or joined locally, it says where the room lives. A room this node hosts, or a
connection another node relays here, is served locally (``None``); any other room is
placed (on the least-loaded live node, atomically) and, if that is another node,
the client's WebSocket is relayed there (:class:`~control.cluster.relay.Relay`), or
its socket handed over when that node runs on this host
(:mod:`control.cluster.handover`; a handed-over client whose remembered room moved
meanwhile is routed from the node it was handed to, which cannot answer 421).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web
from loguru import logger
from redis.exceptions import RedisError

from control.auth import principal_of, require_ws_join
from control.cluster.cascade import ORIGIN_HEADER, Cascade
from control.cluster.handover import HANDOVER_HEADER, HandoverServer
from control.cluster.registry import HEARTBEAT_SECONDS, NODE_TTL_MS, NodeInfo, NodeLoad, Registry
from control.cluster.relay import PEER_NODE_HEADER, PLACEMENT_HEADER, NodeRefused, Relay, RoomMoved
from control.cluster.stopping import STOP_TIMEOUT, stop_tasks
from control.errors import ParleyError, Unavailable
from control.signaling.protoo import CLOSE_RECONNECT
from workers.processes import proc_stat

if TYPE_CHECKING:
    from control.cluster.front import FrontDoor
    from control.rooms.manager import RoomManager
    from control.rooms.room import Room
    from workers.worker_pool import WorkerPool

__all__ = ["ClusterNode", "WorkerCpu"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: How long a room's node, once placed, is relayed to without asking Redis again (the
#: room's node confirms a remembered placement, so a stale one costs a retry, not a
#: split room); at most :data:`OWNER_CACHE_SIZE` rooms are remembered.
OWNER_CACHE_SECONDS = 30.0
OWNER_CACHE_SIZE = 10_000


class WorkerCpu:
    """CPU used by the mediasoup workers between two readings (``/proc/<pid>/stat``)."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self._last: tuple[float, float] | None = None

    @staticmethod
    def _ticks(pid: int) -> float:
        stat = proc_stat(pid)
        return 0.0 if stat is None else float(stat.utime + stat.stime)

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
        self,
        node_id: str,
        url: str,
        registry: Registry,
        relay: Relay,
        rooms: RoomManager,
        pool: WorkerPool,
        *,
        host: str | None = None,
        handover: HandoverServer | None = None,
    ) -> None:
        self.node_id = node_id
        self.url = url
        #: This host's identity, and the Unix socket other nodes of it hand clients over on
        #: (None: socket handover off, ``CLUSTER_SOCKET_HANDOVER=false``).
        self.host = host
        self.handover = handover
        self.registry = registry
        self.relay = relay
        self.rooms = rooms
        self.cpu = WorkerCpu(pool)
        #: The live nodes as of the last heartbeat, least loaded first.
        self.nodes: list[NodeInfo] = []
        self.closed = False
        #: Draining (:meth:`drain`): no new room is placed here; the rooms here keep serving.
        self.draining = False
        self._beating: asyncio.Task[None] | None = None
        #: Heartbeat writes one at a time (see :meth:`beat`).
        self._writing_beat = asyncio.Lock()
        self._releases: set[asyncio.Task[bool]] = set()
        #: Rooms relayed from here lately: room id -> (its node's id, until when to trust it).
        self._owners: dict[str, tuple[str, float]] = {}
        #: Rooms extended over several nodes (control.cluster.cascade).
        self.cascade = Cascade(self)
        #: The protocol factory this node listens with, when it has one (``site()`` of
        #: control.cluster: control.cluster.front).
        self.front: FrontDoor | None = None

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
        if self._beating is not None:  # it also stops by itself after the beat under way
            await stop_tasks([self._beating], f"cluster: node {self.node_id}'s heartbeat")
        await self.relay.close()
        await self.cascade.close()
        with contextlib.suppress(RedisError, OSError):
            for room_id in list(self.rooms.rooms):
                await self.registry.release(room_id, self.node_id)
            await self.registry.leave(self.node_id)
        if self._releases:  # Redis calls, each bounded by the client's socket timeout
            _, pending = await asyncio.wait(list(self._releases), timeout=STOP_TIMEOUT)
            if pending:
                await stop_tasks(pending, "cluster: placement releases")
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
        """One heartbeat: write this node's key, read the others', keep this node's rooms.

        The writes go one at a time, each made when its turn comes: the periodic beat
        and a drain's or resume's own beat overlap, and two writes in flight at once
        (on two of the pool's connections) reach Redis in either order, so a periodic
        beat made just before a drain was called off could land after the call-off's
        and leave this node draining in the registry until the next beat (seen: a
        placement right after the call-off passed over the node, 1 make test run in 9)."""
        async with self._writing_beat:
            handover = self.handover
            path = str(handover.path) if handover is not None and handover.ready else None
            info = NodeInfo(self.node_id, self.url, self.load(), self.draining, self.host, path)
            await self.registry.heartbeat(info)
        await self._publish_rooms()
        self.nodes = await self.registry.nodes()
        self._warm_handover_links()
        origins = [room_id for room_id, room in self.rooms.rooms.items() if room.origin is None]  # not satellites
        lost = await self.registry.keep(self.node_id, origins)
        await self.cascade.refresh()
        self._close_split(lost)

    async def _beat_forever(self) -> None:
        # Not ``while True``: a cancellation can be lost inside a Redis call (see
        # control.cluster.stopping); a closed node stops after the beat under way.
        while not self.closed:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if self.closed:
                return
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
        accepting = [node for node in self.nodes if not node.draining]
        candidate = accepting[0].node_id if accepting else self.node_id
        owner_id = await self.registry.place(room_id, candidate, fallback=self.node_id)
        if owner_id is None:
            raise Unavailable("every node of the cluster is draining: no new room now, try again")
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
        relayed = self.relay.is_relayed(request)
        local = self.rooms.get_room(room_id)
        if relayed:
            if local is None and (origin := request.headers.get(ORIGIN_HEADER)) is not None:
                await self.cascade.prepare(room_id, origin)  # a satellite of that origin's room here
            elif local is None and not await self._confirm_remembered(request, room_id):
                # Handed over (its node is out of the path, no 421 can go back to it):
                # routed from here as if the client had connected here.
                logger.bind(room=room_id).info(
                    "cluster: room {} handed over here is not hosted here: placed from here", room_id
                )
                return await self._route_client(request, room_id, None)
            return await self._to_peers_node(request, room_id)
        return await self._route_client(request, room_id, local)

    async def _route_client(self, request: web.Request, room_id: str, local: Room | None) -> web.StreamResponse | None:
        """:meth:`route` for a client that connected here (not relayed)."""
        peer_id = request.query.get("peerId", "")
        if local is not None and self.cascade.node_of(local, peer_id) is not None:
            await self._may_join(request, room_id)
            return await self._to_peers_node(request, room_id)
        if local is not None and not self.cascade.overflows(local, peer_id):
            return None
        await self._may_join(request, room_id)
        remembers = local is None and self.cascade.fits(self._remembered(room_id))  # not full: no seating
        if remembers and (remembered := await self._relay_remembered(request, room_id)) is not None:
            return remembered
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
            return await self._to_peers_node(request, room_id)
        if seat == owner.node_id:
            self._remember(room_id, owner.node_id)
        target = owner if seat == owner.node_id else await self._node(seat)
        try:
            return await self.relay.relay(
                request,
                seat,
                target.url,
                origin=owner.node_id if seat != owner.node_id else None,
                handover=self._handover_to(target),
            )
        except NodeRefused as refused:
            refused.node_id = seat
            raise

    async def _to_peers_node(self, request: web.Request, room_id: str) -> web.StreamResponse | None:
        """Serve the connection here (None), unless its peer is a mirror here: a peer of
        another node of the room (cascade) reconnecting through this one, maybe while
        that node keeps its session for the reconnect grace period. It goes there and
        takes over its session, as on one node. From the room here, in memory: no Redis
        call. A connection sent on this way once is served where it arrives (no loops)."""
        local = self.rooms.get_room(room_id)
        if local is None or request.headers.get(PEER_NODE_HEADER) is not None:
            return None
        elsewhere = self.cascade.node_of(local, request.query.get("peerId", ""))
        if elsewhere is None or elsewhere == self.node_id:
            return None
        target = await self._node(elsewhere)
        local.log.info(
            "cluster: peer {} of node {} reconnects through this node: sent back there",
            request.query.get("peerId"),
            elsewhere,
        )
        return await self.relay.relay(
            request,
            elsewhere,
            target.url,
            origin=local.origin or self.node_id,
            peers_node=True,
            handover=self._handover_to(target),
        )

    def _handover_to(self, node: NodeInfo) -> str | None:
        """``node``'s Unix socket if this node may pass it a client's socket: same host,
        handover on at both ends (:mod:`control.cluster.handover`)."""
        if self.handover is None or node.handover is None or node.host is None or node.host != self.host:
            return None
        return node.handover

    def _warm_handover_links(self) -> None:
        """A link open to each node of this host that takes handovers, before a client needs it."""
        for node in self.nodes:
            path = self._handover_to(node) if node.node_id != self.node_id else None
            if path is not None:
                self.relay.handover_links.warm(path, node.node_id)

    def front_handover(self, room_id: str) -> tuple[str, str] | None:
        """For the front door (:mod:`control.cluster.front`): the node of this host (its
        socket's path and id) a client of ``room_id`` goes to at once, before any HTTP
        handling here, with a link to it open; None: the usual path. Only a room not
        hosted here whose node this node remembers (relayed to lately, live, not full):
        what :meth:`route` does with it then is that same handover, and the node it goes
        to does everything else (limits, access check, routing)."""
        if self.closed or self.handover is None or room_id in self.rooms.rooms:
            return None
        node = self._remembered(room_id)
        if node is None or not self.cascade.fits(node):
            return None
        path = self._handover_to(node)
        if path is None or self.relay.handover_links.ready(path, node.node_id) is None:
            return None
        return path, node.node_id

    async def _node(self, node_id: str) -> NodeInfo:
        known = next((node for node in self.nodes if node.node_id == node_id), None)
        target = known or await self.registry.node(node_id)
        if target is None:
            raise Unavailable("the room's node is gone, try again")
        return target

    # -- remembered placements: no Redis round trip per join of a known room ----------

    def _remember(self, room_id: str, node_id: str) -> None:
        if len(self._owners) >= OWNER_CACHE_SIZE:
            self._owners.clear()
        self._owners[room_id] = (node_id, time.monotonic() + OWNER_CACHE_SECONDS)

    def _remembered(self, room_id: str) -> NodeInfo | None:
        """The live node (as of the last heartbeat) this node relayed ``room_id`` to lately."""
        entry = self._owners.get(room_id)
        if entry is None:
            return None
        node_id, until = entry
        node = next((node for node in self.nodes if node.node_id == node_id), None)
        if node is None or time.monotonic() > until:
            del self._owners[room_id]
            return None
        return node

    async def _relay_remembered(self, request: web.Request, room_id: str) -> web.StreamResponse | None:
        """Relay to the room's remembered node (it confirms); None: place as usual (a
        node that refuses, is gone or no longer hosts the room is forgotten)."""
        node = self._remembered(room_id)
        if node is None:
            return None
        try:
            return await self.relay.relay(
                request, node.node_id, node.url, remembered=True, handover=self._handover_to(node)
            )
        except Unavailable:  # RoomMoved, NodeRefused, unreachable: nothing was sent to the client
            self._owners.pop(room_id, None)
            return None

    async def _confirm_remembered(self, request: web.Request, room_id: str) -> bool:
        """A relay for a room not hosted here, from a node that remembered this node as
        its owner: is it (still, or now) placed here? 421 ``room_moved`` if not, or False
        for a handed-over client (:data:`HANDOVER_HEADER`: no node can retry it)."""
        if request.headers.get(PLACEMENT_HEADER) != "remembered":
            return True  # the relaying node placed it here just now
        try:
            owner = await self.registry.place(room_id, self.node_id, fallback=self.node_id)
        except (RedisError, OSError) as error:
            logger.warning("cluster: Redis unreachable ({!r}): room {} served here unconfirmed", error, room_id)
            return True
        if owner == self.node_id:
            return True
        if request.headers.get(HANDOVER_HEADER) is not None:
            return False
        raise RoomMoved(f"room {room_id} is not hosted by node {self.node_id}")

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

    # -- split brain --------------------------------------------------------------------

    def _close_split(self, room_ids: list[str]) -> None:
        """Rooms hosted here whose placement another live node holds (two nodes each
        created the room: Redis lost the placement, or a partition let both place it).
        The placement is the truth: this copy closes with 4002 ("reconnect") and its
        peers rejoin, through any node, the room on the node the placement names."""
        for room_id in room_ids:
            room = self.rooms.get_room(room_id)
            # A satellite (cascade) is not placed here: the beat may have listed it just
            # before its origin was set (Cascade._make_satellite names it once created).
            if room is None or room.closed or room.origin is not None:
                continue
            logger.bind(room=room_id).warning(
                "cluster: room {} is placed on another live node: closing this copy, its peers reconnect there",
                room_id,
            )
            room.close(CLOSE_RECONNECT, "the room lives on another node, reconnect")

    # -- drain (a graceful stop) ------------------------------------------------------

    async def drain(self) -> None:
        """Take no new room from now on: the heartbeat says ``draining`` at once, so
        placement (one Lua script) passes over this node; its rooms keep serving."""
        if self.draining:
            return
        self.draining = True
        logger.info(
            "cluster: node {} draining: no new rooms, {} room(s) keep serving", self.node_id, len(self.rooms.rooms)
        )
        await self._beat_now()

    async def resume(self) -> None:
        """Take new rooms again (an operator's drain called off)."""
        if not self.draining:
            return
        self.draining = False
        logger.info("cluster: node {} takes new rooms again", self.node_id)
        await self._beat_now()

    async def _beat_now(self) -> None:
        try:
            await self.beat()
        except (RedisError, OSError) as error:
            logger.warning("cluster: heartbeat failed ({!r}); the next one says it", error)

    @property
    def drained(self) -> bool:
        """No room here and no client relayed through here: stopping now cuts nobody."""
        return not self.rooms.rooms and not self.relay.clients

    async def drain_and_wait(self, timeout: float) -> bool:  # noqa: ASYNC109 - a drain deadline, not an I/O timeout
        """Drain, then wait until :attr:`drained` (True) or ``timeout`` seconds (False)."""
        await self.drain()
        deadline = time.monotonic() + timeout
        while not self.drained:
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning(
                    "cluster: drain timeout: {} room(s), {} relayed client(s) still here; stopping",
                    len(self.rooms.rooms),
                    len(self.relay.clients),
                )
                return False
            await asyncio.sleep(min(0.25, left))
        logger.info("cluster: node {} drained", self.node_id)
        return True

    # -- cluster-wide views -------------------------------------------------------------

    async def _publish_rooms(self) -> None:
        """This node's rooms for the other nodes' ``GET /api/rooms`` (with each heartbeat)."""
        summaries = [room.summary() for room in self.rooms.rooms.values() if not room.closed]
        await self.registry.publish_rooms(self.node_id, summaries)

    async def cluster_rooms(self, local: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every room of the cluster, each with ``nodes`` (the ids of the nodes that host
        it): this node's ``local`` summaries as they are now, the others' as of their
        last heartbeat (at most :data:`HEARTBEAT_SECONDS` old)."""
        try:
            others = [node.node_id for node in await self.registry.nodes() if node.node_id != self.node_id]
            published = await self.registry.rooms_of(others)
        except (RedisError, OSError) as error:
            logger.warning("cluster: Redis unreachable ({!r}): no cluster-wide room list", error)
            raise Unavailable("the cluster registry is unreachable, try again") from None
        rooms: dict[str, dict[str, Any]] = {}
        for node_id, summaries in [(self.node_id, local), *published.items()]:
            for summary in summaries:
                entry = rooms.get(summary["id"])
                if entry is None:
                    rooms[summary["id"]] = {**summary, "nodes": [node_id]}
                    continue
                entry["nodes"].append(node_id)  # a room over several nodes: its figures add up
                for field in ("peers", "broadcasters"):
                    entry[field] = entry.get(field, 0) + summary.get(field, 0)
                entry["workers"] = [*entry.get("workers", []), *summary.get("workers", [])]
        return list(rooms.values())

    async def cluster_health(self, detailed: bool) -> dict[str, Any]:
        """This node's place in the cluster; with ``detailed`` (an operator asks), its id
        and every live node: id, URL, load, draining, age of its last heartbeat (node ids
        and URLs name internal hosts: not for anonymous callers)."""
        view: dict[str, Any] = {"draining": self.draining}
        try:
            states = await self.registry.node_states()
        except (RedisError, OSError) as error:
            logger.warning("cluster: Redis unreachable ({!r}) for the health check", error)
            view["registry"] = "unreachable"
            return view
        view["registry"] = "ok"
        view["nodeCount"] = len(states)
        if detailed:
            view["nodeId"] = self.node_id
            view["nodes"] = [
                {
                    "nodeId": info.node_id,
                    "url": info.url,
                    "load": asdict(info.load),
                    "draining": info.draining,
                    "heartbeatAgeMs": age,
                }
                for info, age in states
            ]
        return view

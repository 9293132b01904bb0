"""Cascading: a room that outgrows one node extends onto others.

The room's placement names its **origin** node (:mod:`control.cluster.registry`).
Every node reports, per room it hosts, an estimate of the room's consumers there
(each joined subscriber consumes every producer of the room but its own) into a
Redis hash. A joiner is **seated** (one Lua script, :data:`_SEAT`, so racing
routers agree) on the first node of the room, origin first, that is under
``ROOM_CONSUMERS_PER_NODE``; when all are full, a new **satellite** node is added to
the room's list (the least loaded live node the router knows of), else the least
full member. A node the room is not local to relays the client there as before
(with :data:`ORIGIN_HEADER` saying which node is the origin).

A satellite is an ordinary :class:`~control.rooms.room.Room` on its node (own
routers, its peers' transports and consumers) with ``room.origin`` set and one
:class:`~control.cluster.link.Link` to the origin. The link is a WebSocket
from the satellite to the origin's :data:`CASCADE_PATH`, authenticated with the
cluster relay token (:data:`~control.cluster.relay.RELAY_HEADER`; a call without it
is refused 401, with a wrong one 403). Its first message, ``hello``, carries the
satellite's PipeTransport address and SRTP key; the origin answers with its own and
the participants the satellite mirrors. Both PipeTransports have SRTP (RTP) and SCTP
(data) on; they
listen on ``NODE_PIPE_LISTEN_IP`` (default ``MEDIASOUP_LISTEN_IP``) and announce
``NODE_PIPE_ANNOUNCED_ADDRESS`` (default ``MEDIASOUP_ANNOUNCED_ADDRESS``). Origins
are hubs: satellites link to the origin only, which passes each one's participants
and producers on to the others.

What crosses: participants (``newPeer``/``peerClosed``), producers (piped; close,
pause and resume follow), data producers (DataChannels: piped over SCTP on the same
PipeTransports, as ``router.pipeToRouter({dataProducerId})`` does; close, pause and
resume follow; SRTP covers RTP only, so their messages cross as plain SCTP over UDP),
display names, and the notifications other services send
the whole room (``RoomManager.notify_room``: chat messages, recording state). Active
speaker is room-wide because each node feeds the piped audio producers to its own
RTP observers. A recording runs on the node whose room it was started in and
records every participant there, mirrors included: a mirror joining or producing is
told to the room's own listeners (``peerjoined``/``producercreated``/
``dataproducercreated``), while the meeting, chat and events skip mirrors (their own
node records them).

When a link ends: a satellite closes its room with 4002 "reconnect" (the origin
is gone), an origin's room loses that satellite's peers (``peerClosed``) and closes
if nobody is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp import web
from loguru import logger
from redis.exceptions import RedisError

from control.auth import Grant
from control.cluster.link import CLOSE_TIMEOUT, Link
from control.cluster.relay import HEARTBEAT, ORIGIN_HEADER, RELAY_HEADER, NodeRefused
from control.cluster.stopping import stop_tasks
from control.errors import NotFound, Unauthorized, Unavailable
from control.rooms.codecs import MAX_SCTP_MESSAGE_SIZE
from control.rooms.host import DATA_PRODUCER_CREATED, PEER_JOINED, PEER_LEFT, PEER_UPDATED, PRODUCER_CREATED
from control.signaling.protoo import CLOSE_RECONNECT
from workers.errors import MediasoupError

if TYPE_CHECKING:
    from control.cluster.node import ClusterNode
    from control.cluster.registry import NodeInfo
    from control.rooms.peer import Peer
    from control.rooms.room import Room
    from workers.data_producer import DataProducer
    from workers.pipe_transport import PipeTransport
    from workers.producer import Producer

__all__ = ["CASCADE_PATH", "ORIGIN_HEADER", "Cascade", "Seats", "estimated_consumers"]

#: The origin's endpoint a satellite links to (node to node, relay token required).
CASCADE_PATH: Final = "/cluster/cascade"
#: How long the handshake of a link may take (seconds).
HANDSHAKE_TIMEOUT: Final = 10.0
#: Seating keys outlive a node that died holding them by this much (ms).
SEATS_TTL_MS: Final = 3_600_000

# KEYS[1] consumers hash (node -> estimate), KEYS[2] the room's satellite list;
# ARGV[1] origin, ARGV[2] limit, ARGV[3] node key prefix, ARGV[4] TTL ms, ARGV[5..] candidates.
_SEAT: Final = """
local limit = tonumber(ARGV[2])
local members, seen = {ARGV[1]}, {[ARGV[1]] = true}
for _, node in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if not seen[node] then table.insert(members, node); seen[node] = true end
end
local best, fewest = nil, nil
for i, node in ipairs(members) do
  if i == 1 or redis.call('EXISTS', ARGV[3] .. node) == 1 then
    local count = tonumber(redis.call('HGET', KEYS[1], node) or '0')
    if count < limit then return node end
    if best == nil or count < fewest then best, fewest = node, count end
  end
end
for i = 5, #ARGV do
  local node = ARGV[i]
  if not seen[node] and redis.call('EXISTS', ARGV[3] .. node) == 1 then
    redis.call('RPUSH', KEYS[2], node)
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
    return node
  end
end
return best
"""

# KEYS[1] a room's satellite list; ARGV the satellites its origin links to: written only
# if the list is gone (Redis restarted), so a satellite added meanwhile is kept.
_RESTORE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def estimated_consumers(room: Room) -> int:
    """The room's consumers on this node, present and imminent: each joined subscriber
    consumes every producer of the room (mirrors' included) but its own."""
    own = {p.id: len(p.producers) for p in room.participants()}
    total = sum(own.values())
    return sum(total - own[p.id] for p in room.joined_peers() if p.principal.can(Grant.SUBSCRIBE, room.id))


class Seats:
    """The cascade's keys in Redis: per room, each node's consumers and the satellite list."""

    def __init__(self, node: ClusterNode) -> None:
        self.redis = node.registry.redis
        self.node_prefix = node.registry.node_prefix
        self.prefix = node.registry.room_prefix.replace("room:", "cascade:")
        self._seat = self.redis.register_script(_SEAT)
        self._restore = self.redis.register_script(_RESTORE)

    def keys(self, room_id: str) -> list[str]:
        return [f"{self.prefix}{room_id}:consumers", f"{self.prefix}{room_id}:nodes"]

    async def seat(self, room_id: str, origin: str, limit: int, candidates: list[str]) -> str:
        """The node a new joiner of ``room_id`` goes to (see the module doc)."""
        args: list[str | int] = [origin, limit, self.node_prefix, SEATS_TTL_MS, *candidates]
        return str(await self._seat(keys=self.keys(room_id), args=args))

    async def add_satellite(self, room_id: str, node_id: str) -> None:
        """Name ``node_id`` as the room's next satellite (operators; tests)."""
        await self.redis.rpush(self.keys(room_id)[1], node_id)

    async def report(self, counts: dict[str, int], node_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for room_id, count in counts.items():
                consumers = self.keys(room_id)[0]
                pipe.hset(consumers, node_id, count)
                pipe.pexpire(consumers, SEATS_TTL_MS)
            await pipe.execute()

    async def restore(self, room_id: str, satellites: list[str]) -> bool:
        """Write the room's satellite list if Redis lost it (True if it did)."""
        if not satellites:
            return False
        return bool(await self._restore(keys=[self.keys(room_id)[1]], args=[SEATS_TTL_MS, *satellites]))

    async def satellites(self, room_id: str) -> list[str]:
        return [str(node) for node in await self.redis.lrange(self.keys(room_id)[1], 0, -1)]

    async def consumers(self, room_id: str) -> dict[str, int]:
        values = await self.redis.hgetall(self.keys(room_id)[0])
        return {str(node): int(count) for node, count in values.items()}

    async def forget(self, room_id: str, node_id: str, *, origin: bool) -> None:
        """The room closed on ``node_id``: all its keys when it was the origin."""
        consumers, nodes = self.keys(room_id)
        if origin:
            await self.redis.delete(consumers, nodes)
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(consumers, node_id)
            pipe.lrem(nodes, 0, node_id)
            await pipe.execute()


class Cascade:
    """This node's part in cascaded rooms (see the module doc)."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.rooms = node.rooms
        self.seats = Seats(node)
        #: Links by room id, then far node id.
        self.links: dict[str, dict[str, Link]] = {}
        self._preparing: dict[str, asyncio.Future[None]] = {}
        self._dirty: set[Room] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._unwatch: Any = None

    @property
    def limit(self) -> int:
        return self.rooms.settings.room_consumers_per_node

    # -- life -------------------------------------------------------------------------

    def start(self) -> None:
        self._unwatch = self.rooms.watch_rooms(
            {
                PEER_JOINED: self._on_peer_joined,
                PEER_UPDATED: self._on_peer_updated,
                PEER_LEFT: self._on_peer_left,
                PRODUCER_CREATED: self._on_produced,
                DATA_PRODUCER_CREATED: self._on_produced_data,
            }
        )
        self.rooms.observer.on("roomclosed", self._on_room_closed)
        self.rooms.observer.on("roomnotified", self._on_room_notified)

    async def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self.rooms.observer.remove_listener("roomclosed", self._on_room_closed)
        self.rooms.observer.remove_listener("roomnotified", self._on_room_notified)
        for links in list(self.links.values()):
            for link in list(links.values()):
                link.close()
        if self._tasks:  # the links' runs (each closes its socket within CLOSE_TIMEOUT), reports
            _, pending = await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT + 1)
            if pending:
                await stop_tasks(pending, "cascade: closing")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- seating ------------------------------------------------------------------------

    def overflows(self, room: Room, peer_id: str) -> bool:
        """Should a joiner of local ``room`` be seated through Redis? (a peer that is
        here already reconnects here)."""
        return peer_id not in room.peers and estimated_consumers(room) >= self.limit

    def node_of(self, room: Room, peer_id: str) -> str | None:
        """The node whose peer ``peer_id`` of local ``room`` is (None: not a mirror here)."""
        mirror = room.broadcasters.get(peer_id)
        return self.home_of(room, mirror) if mirror is not None and mirror.node is not None else None

    def home_of(self, room: Room, participant: Peer) -> str:
        """The node ``participant`` of local ``room`` is on: this one, or for a mirror the
        node its link named (``node`` of ``peer``; the link's far end if it named none),
        which is not the link's far end when that is the hub passing it on."""
        if participant.node is None:
            return self.node.node_id
        link = self.links.get(room.id, {}).get(participant.node)
        return link.homes.get(participant.id, participant.node) if link is not None else participant.node

    def fits(self, node: NodeInfo | None) -> bool:
        """A (remembered) room's node whose whole load, as of its last heartbeat, is under
        the limit: the room cannot be full there, a joiner may go there without seating."""
        return node is not None and node.load.consumers < self.limit

    async def seat(self, room_id: str, owner: NodeInfo, local: Room | None) -> str:
        """The node a new joiner of ``room_id`` goes to: the owner (the origin) while the
        room is not full there, no Redis call needed while the owner's whole load (its
        last heartbeat) is under the limit; else what :data:`_SEAT` says."""
        origin = owner.node_id
        if local is None and (origin == self.node.node_id or owner.load.consumers < self.limit):
            return origin
        candidates = [n.node_id for n in self.node.nodes if not (n.load.full or n.draining) and n.node_id != origin]
        return await self.seats.seat(room_id, origin, self.limit, candidates)

    def report_soon(self, room: Room) -> None:
        """Write the room's consumer estimate (coalesced: one pipeline per loop turn)."""
        if not self._dirty:
            self._spawn(self._report())
        self._dirty.add(room)

    async def _report(self) -> None:
        await asyncio.sleep(0)
        rooms, self._dirty = self._dirty, set()
        counts = {room.id: estimated_consumers(room) for room in rooms if not room.closed}
        if not counts:
            return
        try:
            await self.seats.report(counts, self.node.node_id)
        except (RedisError, OSError) as error:
            logger.warning("cascade: consumer counts not reported ({!r})", error)

    async def refresh(self) -> None:
        """On each heartbeat: the counts of the rooms seating depends on (cascaded, or
        full here) and the satellite lists of this node's origins, written again, so a
        Redis that restarted seats as before."""
        rooms = [
            room
            for room in self.rooms.rooms.values()
            if not room.closed and (room.origin or room.satellites or estimated_consumers(room) >= self.limit)
        ]
        if not rooms:
            return
        await self.seats.report({room.id: estimated_consumers(room) for room in rooms}, self.node.node_id)
        for room in rooms:
            if room.origin is None and room.satellites:
                await self.seats.restore(room.id, sorted(room.satellites))

    # -- satellites -------------------------------------------------------------------

    async def prepare(self, room_id: str, origin: str | None) -> None:
        """Before a client is served here: if ``origin`` is another node, have (or make)
        a satellite of its room here, linked to it (Unavailable if it cannot be)."""
        if origin is None or origin == self.node.node_id:
            return
        room = self.rooms.get_room(room_id)
        if room is not None and room_id in self.links:
            return
        preparing = self._preparing.get(room_id)
        if preparing is None:
            preparing = asyncio.ensure_future(self._make_satellite(room_id, origin))
            self._preparing[room_id] = preparing
            preparing.add_done_callback(lambda f: self._preparing.pop(room_id, None))
        await asyncio.shield(preparing)

    async def _make_satellite(self, room_id: str, origin: str) -> None:
        room = await self.rooms.get_or_create_room(room_id)
        if room.origin is None and (room.peers or room.satellites):
            return  # it is an origin here (placed again meanwhile)
        room.origin = origin
        info = next((n for n in self.node.nodes if n.node_id == origin), None) or await self.node.registry.node(origin)
        if info is None:
            room.close(CLOSE_RECONNECT, "origin node gone")
            raise Unavailable("the room's node is gone, try again")
        transport = await self._pipe_transport(room, origin)
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            ws = await self.node.relay.session.ws_connect(
                f"{info.url}{CASCADE_PATH}?roomId={room_id}&nodeId={self.node.node_id}",
                headers={RELAY_HEADER: self.node.relay.token},
                heartbeat=HEARTBEAT,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
            await ws.send_str(json.dumps({"m": "hello", "d": self._pipe_info(transport)}))
            message = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
            answer = json.loads(message.data)
            await transport.connect(ip=answer["ip"], port=answer["port"], srtp_parameters=answer["srtpParameters"])
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError, MediasoupError) as error:
            logger.bind(room=room_id).warning("cascade: no link to origin node {}: {!r}", origin, error)
            transport.close()
            if ws is not None:
                await ws.close()
            room.close(CLOSE_RECONNECT, "origin node unreachable")
            if isinstance(error, aiohttp.ClientConnectorError) and isinstance(error.os_error, ConnectionRefusedError):
                refused = NodeRefused("the room's node is gone, try again")
                refused.node_id = origin  # it died: the router may evict it and place the room again
                raise refused from None
            raise Unavailable("the room's node is unreachable, try again") from None
        link = self._add_link(room, origin, ws, transport)
        for peer in answer.get("peers") or []:
            link.add_mirror(peer)
        for peer in link.shareable():
            link.share_peer(peer)
        link.offer_all()
        room.log.info("cascade: satellite of the room on node {} (origin {})", self.node.node_id, origin)

    async def _pipe_transport(self, room: Room, far: str) -> PipeTransport:
        settings = self.rooms.settings
        listen: dict[str, Any] = {
            "protocol": "udp",
            "ip": settings.node_pipe_listen_ip or settings.mediasoup_listen_ip,
            "portRange": {"min": settings.mediasoup_rtc_min_port, "max": settings.mediasoup_rtc_max_port},
        }
        announced = settings.node_pipe_announced_address or settings.mediasoup_announced_address
        if announced:
            listen["announcedAddress"] = announced
        return await room.primary.create_pipe_transport(
            listen_info=listen,
            enable_srtp=True,
            enable_sctp=True,  # data producers (mediasoup's pipeToRouter default)
            max_send_message_size=MAX_SCTP_MESSAGE_SIZE,
            max_receive_message_size=MAX_SCTP_MESSAGE_SIZE,
            app_data={"cascade": far, "roomId": room.id},
        )

    @staticmethod
    def _pipe_info(transport: PipeTransport) -> dict[str, Any]:
        return {
            "ip": transport.tuple["localAddress"],
            "port": transport.tuple["localPort"],
            "srtpParameters": transport.srtp_parameters,
        }

    def _add_link(self, room: Room, far: str, ws: Any, transport: PipeTransport, *, spawn: bool = True) -> Link:
        links = self.links.setdefault(room.id, {})
        old = links.pop(far, None)
        if old is not None:
            old.close()
        link = Link(self, room, far, ws, transport)
        links[far] = link
        if room.origin is None:
            room.satellites.add(far)
        if spawn:
            self._spawn(link.run())
        return link

    # -- the origin's endpoint ----------------------------------------------------------

    async def accept(self, request: web.Request) -> web.WebSocketResponse:
        """A satellite links to a room of this node (``CASCADE_PATH``)."""
        if not self.node.relay.is_relayed(request):  # a wrong token: 403
            raise Unauthorized("node-to-node call without the cluster token", code="cluster_token_required")
        room_id, far = request.query.get("roomId", ""), request.query.get("nodeId", "")
        room = self.rooms.get_room(room_id)
        if room is None or room.origin is not None or not far or far == self.node.node_id:
            raise NotFound(f"room {room_id!r} is not hosted here")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT)
        await ws.prepare(request)
        transport: PipeTransport | None = None
        try:
            message = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
            hello = json.loads(message.data)["d"]
            transport = await self._pipe_transport(room, far)
            await transport.connect(ip=hello["ip"], port=hello["port"], srtp_parameters=hello["srtpParameters"])
            if room.closed:
                raise MediasoupError("room closed")
        except (OSError, TimeoutError, ValueError, KeyError, TypeError, MediasoupError) as error:
            room.log.warning("cascade: link from node {} refused: {!r}", far, error)
            if transport is not None:
                transport.close()
            await ws.close()
            return ws
        link = self._add_link(room, far, ws, transport, spawn=False)
        answer = {**self._pipe_info(transport), "peers": [link.describe(peer) for peer in link.shareable()]}
        await ws.send_str(json.dumps(answer))
        link.offer_all()
        room.log.info("cascade: node {} holds a satellite of the room", far)
        await link.run()  # the WebSocket lives as long as this handler
        return ws

    # -- room events ------------------------------------------------------------------

    def _links(self, room: Room) -> list[Link]:
        return list(self.links.get(room.id, {}).values())

    def _on_peer_joined(self, room: Room, peer: Peer) -> None:
        if peer.node is not None:
            return  # a mirror: ``mirror_*`` passes it on
        for link in self._links(room):
            link.share_peer(peer)
        self.report_soon(room)

    def _on_peer_updated(self, room: Room, peer: Peer) -> None:
        for link in self._links(room):
            link.peer_updated(peer)

    def _on_room_notified(self, room: Room, method: str, data: dict[str, Any], exclude: str | None) -> None:
        self.notified(room, method, data, exclude)

    def notified(self, room: Room, method: str, data: dict[str, Any], exclude: Any, source: Link | None = None) -> None:
        """A room-wide notification: to every link of the room but the one it came through."""
        for link in self._links(room):
            if link is not source:
                link.post("notify", {"method": method, "data": data, "exclude": exclude})

    def mirror_updated(self, source: Link, mirror: Peer) -> None:
        for link in self._links(source.room):
            if link is not source:
                link.post("peerUpdated", {"id": mirror.id, "displayName": mirror.display_name})

    def _on_peer_left(self, room: Room, peer: Peer) -> None:
        if peer.node is not None:
            return  # a mirror: ``mirror_*`` passes it on
        for link in self._links(room):
            link.peer_left(peer)
        self.report_soon(room)

    def _on_produced(self, room: Room, peer: Peer, producer: Producer) -> None:
        if peer.node is not None:
            return  # a mirror: ``mirror_*`` passes it on
        for link in self._links(room):
            link.offer(peer, producer)
        self.report_soon(room)

    def _on_produced_data(self, room: Room, peer: Peer, data_producer: DataProducer) -> None:
        if peer.node is not None:
            return  # a mirror: ``mirror_produced_data`` passes it on
        for link in self._links(room):
            link.offer_data(peer, data_producer)

    def mirror_joined(self, source: Link, mirror: Peer) -> None:
        for link in self._links(source.room):
            if link is not source:
                link.post("peer", link.describe(mirror))
        self.report_soon(source.room)

    def mirror_left(self, source: Link, mirror: Peer) -> None:
        for link in self._links(source.room):
            if link is not source:
                link.post("peerClosed", {"peerId": mirror.id})
        self.report_soon(source.room)

    def mirror_produced(self, source: Link, mirror: Peer, producer: Producer) -> None:
        for link in self._links(source.room):
            if link is not source:
                link.offer(mirror, producer)
        self.report_soon(source.room)

    def mirror_produced_data(self, source: Link, mirror: Peer, data_producer: DataProducer) -> None:
        for link in self._links(source.room):
            if link is not source:
                link.offer_data(mirror, data_producer)

    def link_closed(self, link: Link) -> None:
        room = link.room
        links = self.links.get(room.id, {})
        if links.get(link.far) is not link:
            return  # replaced by a newer link with the same node
        del links[link.far]
        if not links:
            self.links.pop(room.id, None)
        if room.closed:
            return
        if room.origin == link.far:
            room.log.warning("cascade: link to origin node {} lost; peers here reconnect", link.far)
            room.close(CLOSE_RECONNECT, "the room's node is gone, reconnect")
            return
        room.satellites.discard(link.far)
        if not room.peers and not room.satellites:
            room.log.info("cascade: last satellite gone and nobody here, closing the room")
            room.close()

    def _on_room_closed(self, room: Room) -> None:
        for link in list(self.links.get(room.id, {}).values()):
            link.close()
        self._dirty.discard(room)
        self._spawn(self._forget(room))

    async def _forget(self, room: Room) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.seats.forget(room.id, self.node.node_id, origin=room.origin is None)

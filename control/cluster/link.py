"""One cascade link: a room's origin node and one of its satellites, media piped both ways.

Each end of a link has a PipeTransport on its room's primary router (SRTP on: the
keys cross in the handshake, see :mod:`control.cluster.cascade`) connected to the
other's, and one WebSocket between the two nodes that carries small JSON
notifications ``{"m": method, "d": data}``, in order:

``peer`` {id, displayName, device, node}
    a participant of the far end (announced there: joined, not hidden): mirrored
    here as a participant without a connection (``peer.node`` = the far node) that
    the local peers see (``newPeer``) and consume; ``node`` is the node it is on (the
    far one, or another satellite when the far end is the hub passing it on), where
    it goes back when it reconnects through this one (``ClusterNode.route``);
``peerClosed`` {peerId}
    it left: its mirror leaves (``peerClosed`` to the local peers);
``producer`` {peerId, id, kind, rtpParameters, paused, appData}
    the far end made a pipe consumer of one of its producers on its PipeTransport
    (as ``router.pipeToRouter`` does between two local routers): a pipe producer with
    the same id is made here on ours, and every local joined peer consumes it;
``producerClosed`` / ``producerPaused`` / ``producerResumed`` {producerId}
    what happened to the original (its pipe consumer's events over there);
``dataProducer`` {peerId, id, sctpStreamParameters, label, protocol, paused, appData}
    the same for a data producer (SCTP on both PipeTransports): the far end made a
    pipe data consumer of it, a pipe data producer with the same id, the stream
    parameters, label and protocol of that consumer is made here, and every local
    joined peer with SCTP consumes it (but a ``bot`` one, as on one node);
``dataProducerClosed`` / ``dataProducerPaused`` / ``dataProducerResumed`` {dataProducerId}
    what happened to the original data producer;
``peerUpdated`` {id, displayName}
    a shared participant changed its name (``peerDisplayNameChanged`` here);
``notify`` {method, data, exclude}
    a notification to the whole room (``RoomManager.notify_room``: chat messages,
    recording state): the local joined peers get it too.

An end shares every participant it announces except the mirrors of the far end
itself: an origin with two satellites passes each one's peers to the other.
Notifications are written by one task, in the order they were posted. The link
ends with its WebSocket (either node closed the room, stopped or died): the
PipeTransport closes (so do the piped producers and their consumers here), the
mirrors leave, and :class:`~control.cluster.cascade.Cascade` decides what
becomes of the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web

from control.cluster.stopping import stop_tasks
from control.rooms.consumers import consume, consume_data
from control.rooms.host import DATA_PRODUCER_CREATED, PEER_JOINED, PRODUCER_CREATED
from control.rooms.peer import Peer
from workers.errors import MediasoupError
from workers.wire import clone

if TYPE_CHECKING:
    from control.cluster.cascade import Cascade
    from control.rooms.room import Room
    from workers.consumer import Consumer
    from workers.data_consumer import DataConsumer
    from workers.data_producer import DataProducer
    from workers.pipe_transport import PipeTransport
    from workers.producer import Producer

__all__ = ["Link"]

Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
#: How long closing the link's WebSocket may wait for the far end (seconds).
CLOSE_TIMEOUT = 5.0


class Link:
    """The link of ``room`` on this node with ``far`` (see the module doc)."""

    def __init__(self, cascade: Cascade, room: Room, far: str, ws: Socket, transport: PipeTransport) -> None:
        self.cascade = cascade
        self.room = room
        self.far = far
        self.ws = ws
        self.transport = transport
        self.log = room.log.bind(link=far)
        #: Mirrors of the far end's participants, by peer id.
        self.mirrors: dict[str, Peer] = {}
        #: The node each mirror is on, by peer id (see ``peer``).
        self.homes: dict[str, str] = {}
        #: Pipe consumers of what this end sends, by producer id.
        self.sent: dict[str, Consumer] = {}
        #: Pipe data consumers of what this end sends, by data producer id.
        self.sent_data: dict[str, DataConsumer] = {}
        self.closed = False
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        transport.observer.on("close", self.close)

    # -- sending ------------------------------------------------------------------------

    def post(self, method: str, data: dict[str, Any]) -> None:
        if not self.closed:
            self._outbox.put_nowait(json.dumps({"m": method, "d": data}))

    def shareable(self) -> list[Peer]:
        """What this end announces to the far one: all but the far end's own mirrors."""
        return [p for p in self.room.visible_participants() if p.node != self.far]

    def describe(self, peer: Peer) -> dict[str, Any]:
        """What the far end mirrors of ``peer`` (``peer``)."""
        return {**peer.info(), "node": self.cascade.home_of(self.room, peer)}

    def share_peer(self, peer: Peer) -> None:
        if peer.node != self.far:
            self.post("peer", self.describe(peer))

    def peer_updated(self, peer: Peer) -> None:
        if peer.node != self.far:
            self.post("peerUpdated", {"id": peer.id, "displayName": peer.display_name})

    def peer_left(self, peer: Peer) -> None:
        if peer.node != self.far:
            self.post("peerClosed", {"peerId": peer.id})

    def offer_all(self) -> None:
        for peer in self.shareable():
            for producer in list(peer.producers.values()):
                self.offer(peer, producer)
            for data_producer in list(peer.data_producers.values()):
                self.offer_data(peer, data_producer)

    def offer(self, peer: Peer, producer: Producer) -> None:
        """Pipe ``producer`` to the far end (in the background)."""
        if peer.node != self.far and not self.closed:
            self.room.spawn(self._offer(peer, producer))

    async def _offer(self, peer: Peer, producer: Producer) -> None:
        pid = producer.id
        if producer.closed or pid in self.sent:
            return
        try:
            await self.room.make_available(producer, self.transport.router)
            consumer = await self.transport.consume(pid)
        except MediasoupError as error:
            if not self.closed and not producer.closed:
                self.log.warning("cascade: producer {} not piped to node {}: {}", pid, self.far, error)
            return
        if self.closed or producer.closed or pid in self.sent:
            consumer.close()
            return
        self.sent[pid] = consumer
        consumer.observer.on("close", lambda: self.sent.get(pid) is consumer and self.sent.pop(pid))
        consumer.on("producerclose", lambda: self.post("producerClosed", {"producerId": pid}))
        consumer.on("producerpause", lambda: self.post("producerPaused", {"producerId": pid}))
        consumer.on("producerresume", lambda: self.post("producerResumed", {"producerId": pid}))
        self.post(
            "producer",
            {
                "peerId": peer.id,
                "id": pid,
                "kind": consumer.kind,
                "rtpParameters": clone(consumer.rtp_parameters),
                "paused": consumer.producer_paused,
                "appData": clone(producer.app_data),
            },
        )
        self.log.info("cascade: producer {} of {} piped to node {}", pid, peer.id, self.far)

    def offer_data(self, peer: Peer, data_producer: DataProducer) -> None:
        """Pipe ``data_producer`` to the far end (in the background; a ``bot`` one is
        consumed by nobody, there as here, and is not piped)."""
        if peer.node != self.far and not self.closed and data_producer.label != "bot":
            self.room.spawn(self._offer_data(peer, data_producer))

    async def _offer_data(self, peer: Peer, data_producer: DataProducer) -> None:
        """mediasoup's ``pipeToRouter({dataProducerId})``, the far router's half done there."""
        did = data_producer.id
        if data_producer.closed or did in self.sent_data:
            return
        try:
            await self.room.make_available(data_producer, self.transport.router, data=True)
            consumer = await self.transport.consume_data(did)
        except MediasoupError as error:
            if not self.closed and not data_producer.closed:
                self.log.warning("cascade: data producer {} not piped to node {}: {}", did, self.far, error)
            return
        if self.closed or data_producer.closed or did in self.sent_data:
            consumer.close()
            return
        self.sent_data[did] = consumer
        consumer.observer.on("close", lambda: self.sent_data.get(did) is consumer and self.sent_data.pop(did))
        consumer.on("dataproducerclose", lambda: self.post("dataProducerClosed", {"dataProducerId": did}))
        consumer.on("dataproducerpause", lambda: self.post("dataProducerPaused", {"dataProducerId": did}))
        consumer.on("dataproducerresume", lambda: self.post("dataProducerResumed", {"dataProducerId": did}))
        self.post(
            "dataProducer",
            {
                "peerId": peer.id,
                "id": did,
                "sctpStreamParameters": consumer.sctp_stream_parameters,
                "label": consumer.label,
                "protocol": consumer.protocol,
                "paused": consumer.data_producer_paused,
                "appData": clone(data_producer.app_data),
            },
        )
        self.log.info("cascade: data producer {} of {} piped to node {}", did, peer.id, self.far)

    # -- receiving ----------------------------------------------------------------------

    def add_mirror(self, info: dict[str, Any]) -> None:
        """A participant of the far end: the local peers see it and consume what it produces."""
        room, peer_id = self.room, str(info.get("id", ""))
        if not peer_id or peer_id in room.peers or peer_id in room.broadcasters:
            self.log.warning("cascade: peer {!r} of node {} clashes with one here; not mirrored", peer_id, self.far)
            return
        mirror = Peer(room, peer_id, broadcaster=True)
        mirror.node = self.far
        mirror.display_name = str(info.get("displayName") or "")
        mirror.device = info.get("device") or {}
        room.broadcasters[peer_id] = mirror
        self.mirrors[peer_id] = mirror
        self.homes[peer_id] = str(info.get("node") or self.far)
        for peer in room.joined_peers():
            peer.notify("newPeer", mirror.info())
        self.cascade.mirror_joined(self, mirror)
        # The room's own listeners (a recording here) see it join; the meeting, chat
        # and events hear of it from its own node (they skip mirrors: ``peer.node``).
        room.observer.safe_emit(PEER_JOINED, mirror)

    def drop_mirror(self, peer_id: str) -> None:
        mirror = self.mirrors.pop(peer_id, None)
        self.homes.pop(peer_id, None)
        if mirror is None:
            return
        for producer in list(mirror.producers.values()):
            producer.close()
        for data_producer in list(mirror.data_producers.values()):
            data_producer.close()
        self.room.leave(mirror)
        self.cascade.mirror_left(self, mirror)

    async def mirror_producer(self, data: dict[str, Any]) -> None:
        """A pipe producer of the far end's producer, consumed by every local joined peer."""
        room = self.room
        mirror = self.mirrors.get(str(data.get("peerId")))
        if mirror is None or self.transport.closed:
            return
        try:
            producer = await self.transport.produce(
                data["kind"],
                data["rtpParameters"],
                id=data["id"],
                paused=bool(data.get("paused")),
                app_data=data.get("appData") or {},
            )
        except (MediasoupError, KeyError, TypeError) as error:
            self.log.warning("cascade: producer of node {} not mirrored: {!r}", self.far, error)
            return
        if mirror.closed or room.closed or self.closed:
            producer.close()
            return
        mirror.producers[producer.id] = producer
        producer.observer.on("close", lambda: mirror.producers.pop(producer.id, None))
        for peer in room.joined_peers():
            consume(room, peer, mirror, producer)
        if producer.kind == "audio" and self.transport.router is room.primary:
            room.spawn(room.observe_audio(producer))  # active speaker over the whole room
        self.cascade.mirror_produced(self, mirror, producer)
        room.observer.safe_emit(PRODUCER_CREATED, mirror, producer)  # a recording here records it

    async def mirror_data_producer(self, data: dict[str, Any]) -> None:
        """A pipe data producer of the far end's data producer, consumed by every local
        joined peer with SCTP (mediasoup's ``pipeToRouter({dataProducerId})``, this half)."""
        room = self.room
        mirror = self.mirrors.get(str(data.get("peerId")))
        if mirror is None or self.transport.closed:
            return
        try:
            data_producer = await self.transport.produce_data(
                data["sctpStreamParameters"],
                id=data["id"],
                label=str(data.get("label") or ""),
                protocol=str(data.get("protocol") or ""),
                paused=bool(data.get("paused")),
                app_data=data.get("appData") or {},
            )
        except (MediasoupError, KeyError, TypeError) as error:
            self.log.warning("cascade: data producer of node {} not mirrored: {!r}", self.far, error)
            return
        if mirror.closed or room.closed or self.closed:
            data_producer.close()
            return
        mirror.data_producers[data_producer.id] = data_producer
        data_producer.observer.on("close", lambda: mirror.data_producers.pop(data_producer.id, None))
        if data_producer.label != "bot":
            for peer in room.joined_peers():
                consume_data(room, peer, mirror, data_producer)
        self.cascade.mirror_produced_data(self, mirror, data_producer)
        room.observer.safe_emit(DATA_PRODUCER_CREATED, mirror, data_producer)

    def _mirrored(self, producer_id: Any) -> Producer | None:
        for mirror in self.mirrors.values():
            producer = mirror.producers.get(str(producer_id))
            if producer is not None:
                return producer
        return None

    def _mirrored_data(self, data_producer_id: Any) -> DataProducer | None:
        for mirror in self.mirrors.values():
            data_producer = mirror.data_producers.get(str(data_producer_id))
            if data_producer is not None:
                return data_producer
        return None

    def rename_mirror(self, data: dict[str, Any]) -> None:
        mirror = self.mirrors.get(str(data.get("id")))
        if mirror is None:
            return
        old, mirror.display_name = mirror.display_name, str(data.get("displayName") or "")
        change = {"peerId": mirror.id, "displayName": mirror.display_name, "oldDisplayName": old}
        for peer in self.room.joined_peers():
            peer.notify("peerDisplayNameChanged", change)
        self.cascade.mirror_updated(self, mirror)

    def notify_room(self, data: dict[str, Any]) -> None:
        method, body, exclude = str(data.get("method")), dict(data.get("data") or {}), data.get("exclude")
        for peer in self.room.joined_peers():
            if peer.id != exclude:
                peer.notify(method, body)
        self.cascade.notified(self.room, method, body, exclude, source=self)

    async def handle(self, method: str, data: dict[str, Any]) -> None:
        if method == "peer":
            self.add_mirror(data)
        elif method == "peerClosed":
            self.drop_mirror(str(data.get("peerId")))
        elif method == "producer":
            await self.mirror_producer(data)
        elif method == "dataProducer":
            await self.mirror_data_producer(data)
        elif method in ("dataProducerClosed", "dataProducerPaused", "dataProducerResumed"):
            data_producer = self._mirrored_data(data.get("dataProducerId"))
            if data_producer is None:
                return
            if method == "dataProducerClosed":
                data_producer.close()
            else:
                with contextlib.suppress(MediasoupError):
                    await (data_producer.pause() if method == "dataProducerPaused" else data_producer.resume())
        elif method == "peerUpdated":
            self.rename_mirror(data)
        elif method == "notify":
            self.notify_room(data)
        elif method in ("producerClosed", "producerPaused", "producerResumed"):
            producer = self._mirrored(data.get("producerId"))
            if producer is None:
                return
            if method == "producerClosed":
                producer.close()
            else:
                with contextlib.suppress(MediasoupError):
                    await (producer.pause() if method == "producerPaused" else producer.resume())
        else:
            self.log.warning("cascade: unknown notification {!r} from node {}", method, self.far)

    # -- life ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the link until its WebSocket ends or :meth:`close` is called."""
        if self.closed:  # closed during the handshake
            await self._close_socket()
            return
        writer = asyncio.ensure_future(self._write())
        reader = self._reader = asyncio.ensure_future(self._read())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            # Until the far end closes, or close() here: not on the reader alone, which
            # may not end when cancelled (control.cluster.stopping).
            await asyncio.wait([reader, ended], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.close()
            await stop_tasks([reader, writer, ended], f"cascade: link with node {self.far}")
            await self._close_socket()

    async def _close_socket(self) -> None:
        """Close the WebSocket, waiting for the far end's close frame a bounded time
        (then the connection is dropped)."""
        closing = asyncio.ensure_future(self.ws.close())
        done, _ = await asyncio.wait([closing], timeout=CLOSE_TIMEOUT)
        if closing in done:
            if not closing.cancelled() and isinstance(closing.exception(), (ConnectionError, RuntimeError)):
                self.log.debug("cascade: link socket with node {} closed with {!r}", self.far, closing.exception())
            return
        self.log.warning("cascade: node {} did not answer the link's close in {:.0f}s", self.far, CLOSE_TIMEOUT)
        await stop_tasks([closing], f"cascade: closing the link with node {self.far}")

    async def _write(self) -> None:
        while (text := await self._outbox.get()) is not None:
            await self.ws.send_str(text)

    async def _read(self) -> None:
        while not self.closed:
            message = await self.ws.receive()
            if message.type is not WSMsgType.TEXT:
                return  # closed, closing or broken: the link is over
            try:
                body = json.loads(message.data)
                await self.handle(str(body["m"]), dict(body.get("d") or {}))
            except (ValueError, KeyError, TypeError) as error:
                self.log.warning("cascade: bad message from node {}: {!r}", self.far, error)

    def close(self) -> None:
        """End the link (idempotent): transport closed, mirrors gone, the cascade told."""
        if self.closed:
            return
        self.closed = True
        self._ended.set()
        self._outbox.put_nowait(None)
        self.transport.close()
        for peer_id in list(self.mirrors):
            self.drop_mirror(peer_id)
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        self.log.info("cascade: link with node {} closed", self.far)
        self.cascade.link_closed(self)

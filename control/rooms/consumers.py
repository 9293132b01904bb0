"""Consumers of a room's peers: mediasoup-demo's ``_createConsumer`` and
``_createDataConsumer``, one skeleton for both.

A consumer is created on the peer's consuming transport (the producer piped to
that transport's router first when it lives elsewhere), announced to the peer
with a ``newConsumer`` (``newDataConsumer``) request, and, for media, resumed
once the client accepted it (a video one then asks for a key frame). A
consumer whose transport closed meanwhile (a re-join) is created again on the
peer's new consuming transport; one whose announcement was lost because the
peer reconnected is announced again on the new connection. Broadcasters
consume over REST, never here.

Only a peer whose principal holds ``canSubscribe`` for the room consumes (media
and data): without it no consumer is made and no ``newConsumer`` sent.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from control.auth import Grant
from control.rooms import limits
from control.signaling.protoo import ProtooError
from workers.consumer import Consumer
from workers.data_consumer import DataConsumer
from workers.data_producer import DataProducer
from workers.errors import MediasoupError, UnsupportedError
from workers.producer import Producer
from workers.transport import Transport
from workers.wire import clone

if TYPE_CHECKING:
    from control.rooms.peer import Peer
    from control.rooms.room import Room

__all__ = ["consume", "consume_data", "sync_consumers"]

S = TypeVar("S", Producer, DataProducer)
C = TypeVar("C", Consumer, DataConsumer)


class _Kind(Generic[S, C]):
    """What differs between consuming a producer and consuming a data producer."""

    noun = ""
    data = False

    def ready(self, peer: Peer) -> bool:
        raise NotImplementedError

    def usable(self, transport: Transport) -> bool:
        return True

    async def create(self, peer: Peer, transport: Transport, source: S) -> C:
        raise NotImplementedError

    def track(self, peer: Peer, consumer: C) -> None:
        """Keep ``consumer`` in the peer's table and forward its events to the peer."""
        raise NotImplementedError

    def announcement(self, producer_peer: Peer | None, source: S, consumer: C) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def closed_notice(self, consumer_id: str) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    async def start(self, peer: Peer, consumer: C) -> None:
        """After the client accepted the consumer."""


class _Media(_Kind[Producer, Consumer]):
    noun = "consumer"

    def ready(self, peer: Peer) -> bool:
        return bool(peer.rtp_capabilities)

    async def create(self, peer: Peer, transport: Transport, source: Producer) -> Consumer:
        # consume() refuses what the peer cannot receive (router.can_consume()
        # would check the capabilities a second time per consumer).
        return await transport.consume(source.id, peer.rtp_capabilities, paused=True, app_data={"peerId": peer.id})

    def track(self, peer: Peer, consumer: Consumer) -> None:
        cid = consumer.id
        peer.consumers[cid] = consumer
        consumer.observer.on("close", lambda: peer.consumers.pop(cid, None))
        consumer.on("producerclose", lambda: peer.notify("consumerClosed", {"consumerId": cid}))
        consumer.on("producerpause", lambda: peer.notify("consumerPaused", {"consumerId": cid}))
        consumer.on("producerresume", lambda: peer.notify("consumerResumed", {"consumerId": cid}))
        consumer.on("score", lambda score: peer.notify("consumerScore", {"consumerId": cid, "score": score}))
        consumer.on(
            "layerschange",
            lambda layers: peer.notify(
                "consumerLayersChanged",
                {
                    "consumerId": cid,
                    "spatialLayer": layers.get("spatialLayer") if layers else None,
                    "temporalLayer": layers.get("temporalLayer") if layers else None,
                },
            ),
        )

    def announcement(
        self, producer_peer: Peer | None, source: Producer, consumer: Consumer
    ) -> tuple[str, dict[str, Any]]:
        return "newConsumer", {
            "peerId": producer_peer.id if producer_peer is not None else None,
            "producerId": source.id,
            "id": consumer.id,
            "kind": consumer.kind,
            "rtpParameters": clone(consumer.rtp_parameters),
            "type": consumer.type,
            "appData": clone(source.app_data),
            "producerPaused": consumer.producer_paused,
        }

    def closed_notice(self, consumer_id: str) -> tuple[str, dict[str, Any]]:
        return "consumerClosed", {"consumerId": consumer_id}

    async def start(self, peer: Peer, consumer: Consumer) -> None:
        # Now that the client is ready for it, let the media flow.
        await consumer.resume()
        if consumer.kind == "video":
            await consumer.request_key_frame()
        peer.notify("consumerScore", {"consumerId": consumer.id, "score": consumer.score})


class _Data(_Kind[DataProducer, DataConsumer]):
    noun = "data consumer"
    data = True

    def ready(self, peer: Peer) -> bool:
        return bool(peer.sctp_capabilities)

    def usable(self, transport: Transport) -> bool:
        return bool(transport.sctp_parameters)

    async def create(self, peer: Peer, transport: Transport, source: DataProducer) -> DataConsumer:
        return await transport.consume_data(source.id, app_data={"peerId": peer.id})

    def track(self, peer: Peer, consumer: DataConsumer) -> None:
        cid = consumer.id
        peer.data_consumers[cid] = consumer
        consumer.observer.on("close", lambda: peer.data_consumers.pop(cid, None))
        consumer.on("dataproducerclose", lambda: peer.notify("dataConsumerClosed", {"dataConsumerId": cid}))

    def announcement(
        self, producer_peer: Peer | None, source: DataProducer, consumer: DataConsumer
    ) -> tuple[str, dict[str, Any]]:
        return "newDataConsumer", {
            "peerId": producer_peer.id if producer_peer is not None else None,
            "dataProducerId": source.id,
            "id": consumer.id,
            "sctpStreamParameters": consumer.sctp_stream_parameters,
            "label": consumer.label,
            "protocol": consumer.protocol,
            "appData": clone(source.app_data),
        }

    def closed_notice(self, consumer_id: str) -> tuple[str, dict[str, Any]]:
        return "dataConsumerClosed", {"dataConsumerId": consumer_id}


MEDIA = _Media()
DATA = _Data()


async def _consume(room: Room, kind: _Kind[S, C], peer: Peer, producer_peer: Peer | None, source: S) -> None:
    """Create, announce and start one consumer of ``source`` for ``peer``."""
    if peer.closed or not peer.joined or peer.broadcaster:
        return
    if not peer.principal.can(Grant.SUBSCRIBE, room.id):
        return
    if not peer.connected or not kind.ready(peer):
        return  # created by the resync when it reconnects
    if source.closed or source.id in peer.consumed_producer_ids():
        return
    in_use = len(peer.consumers) + len(peer.data_consumers) + len(peer.consuming)
    if limits.consumers_full(in_use, room.host.settings):
        peer.log.warning("{} of {} not created: MAX_CONSUMERS_PER_PEER reached", kind.noun, source.id)
        return
    transport = peer.consuming_transport()
    if transport is None or not kind.usable(transport):
        peer.log.debug("no transport for consuming yet: {} not consumed", source.id)
        return

    def again() -> None:
        _retry_on_new_transport(room, peer, transport, lambda: _consume(room, kind, peer, producer_peer, source))

    peer.consuming.add(source.id)
    try:
        await room.make_available(source, transport.router, data=kind.data)
        consumer = await kind.create(peer, transport, source)
    except UnsupportedError as error:
        peer.log.debug("cannot consume {}: {}", source.id, error)
        return
    except Exception as error:  # noqa: BLE001 - one consumer failing must not affect others
        peer.log.warning("{} of {} not created: {}", kind.noun, source.id, error)
        again()
        return
    finally:
        peer.consuming.discard(source.id)
    if peer.closed or transport.closed or room.closed:
        consumer.close()
        again()
        return
    kind.track(peer, consumer)
    connection = peer.connection
    try:
        await peer.request(*kind.announcement(producer_peer, source, consumer))
        if consumer.closed:
            return
        await kind.start(peer, consumer)
    except (TimeoutError, ProtooError, ConnectionError) as error:
        peer.log.warning("{} {} not accepted ({}: {}); closing it", kind.noun, consumer.id, type(error).__name__, error)
        if not consumer.closed:
            consumer.close()
            peer.notify(*kind.closed_notice(consumer.id))
        if isinstance(error, ConnectionError) and peer.connected and peer.connection is not connection:
            # The peer reconnected meanwhile: offer it on the new connection.
            room.spawn(_consume(room, kind, peer, producer_peer, source))
    except MediasoupError as error:
        peer.log.warning("{} {} not resumed: {}", kind.noun, consumer.id, error)


def _retry_on_new_transport(
    room: Room, peer: Peer, transport: Transport, make: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """A consumer was being created on a transport that closed meanwhile (a
    re-join): create it again on the peer's new consuming transport, if any."""
    current = peer.consuming_transport()
    if transport.closed and not peer.closed and not room.closed and current is not None and current is not transport:
        room.spawn(make())


def consume(room: Room, peer: Peer, producer_peer: Peer, producer: Producer) -> None:
    """Have ``peer`` consume ``producer`` (in the background)."""
    room.spawn(_consume(room, MEDIA, peer, producer_peer, producer))


def consume_data(room: Room, peer: Peer, producer_peer: Peer | None, data_producer: DataProducer) -> None:
    """Have ``peer`` consume ``data_producer`` (in the background)."""
    room.spawn(_consume(room, DATA, peer, producer_peer, data_producer))


async def sync_consumers(room: Room, peer: Peer) -> None:
    """Consume every producer of the others that ``peer`` does not consume yet
    (after a join, and after a reconnect that resumes the session)."""
    if not peer.principal.can(Grant.SUBSCRIBE, room.id):
        return
    consumed = peer.consumed_producer_ids()
    for other in [*room.joined_peers(exclude=peer), *room.broadcasters.values()]:
        for producer in list(other.producers.values()):
            if producer.id not in consumed:
                consume(room, peer, other, producer)
        for data_producer in list(other.data_producers.values()):
            if data_producer.id not in consumed and data_producer.label != "bot":
                consume_data(room, peer, other, data_producer)

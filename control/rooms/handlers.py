"""The protoo requests of a room's peers: one function per method, one table.

:func:`handle_request` is where every request of a peer lands. As in
mediasoup-demo, transports may be created before ``join``; everything that
produces or consumes needs a join (403 "Peer not yet joined" otherwise). Other
services' methods (chat, recording), registered with the host, are answered
first; the demo's methods cannot be replaced. Refusals are
:mod:`control.errors` ParleyErrors; the signaling layer answers them with
``errorCode`` = their status.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from control.errors import BadRequest, Conflict, Forbidden, Gone, NotFound
from control.rooms import media
from control.rooms.consumers import sync_consumers
from control.rooms.errors import worker_errors
from control.rooms.host import PEER_JOINED, PEER_UPDATED
from control.rooms.peer import ParticipantMetadata
from control.signaling import messages as m
from workers.transport import Transport
from workers.webrtc_transport import WebRtcTransport

if TYPE_CHECKING:
    from control.rooms.peer import Peer
    from control.rooms.room import Room

__all__ = ["HANDLERS", "handle_request"]

Handler = Callable[["Room", "Peer", Any], Awaitable[Any]]
#: method -> its handler ``(room, peer, parsed request)``.
HANDLERS: dict[str, Handler] = {}

H = TypeVar("H", bound=Handler)
T = TypeVar("T")


def handles(method: str) -> Callable[[H], H]:
    def register(handler: H) -> H:
        assert method in m.REQUESTS, method
        HANDLERS[method] = handler
        return handler

    return register


async def handle_request(room: Room, peer: Peer, method: str, data: dict[str, Any]) -> Any:
    """Answer one protoo request of ``peer`` (raises ParleyErrors)."""
    extra = room.host.extra_method(method) if method not in m.REQUESTS else None
    if extra is not None:
        handler, before_join = extra
        if not before_join and not peer.joined:
            raise Forbidden("Peer not yet joined")
        return await handler(room, peer, data)
    request = m.parse(method, data)
    await room.recovery.wait_ready()
    if room.closed or peer.closed:
        raise Gone("peer closed")
    if method not in m.BEFORE_JOIN and not peer.joined:
        raise Forbidden("Peer not yet joined")
    return await HANDLERS[method](room, peer, request)


# -- lookups --------------------------------------------------------------------------


def _transport(peer: Peer, transport_id: str) -> Transport:
    transport = peer.transports.get(transport_id)
    if transport is None:
        raise NotFound(f'transport with id "{transport_id}" not found')
    return transport


def _webrtc_transport(peer: Peer, transport_id: str) -> WebRtcTransport:
    transport = _transport(peer, transport_id)
    if not isinstance(transport, WebRtcTransport):
        raise BadRequest(f'transport with id "{transport_id}" is not a WebRtcTransport')
    return transport


def _find(table: dict[str, T], what: str, item_id: str) -> T:
    item = table.get(item_id)
    if item is None:
        raise NotFound(f'{what} with id "{item_id}" not found')
    return item


# -- joining --------------------------------------------------------------------------


@handles("getRouterRtpCapabilities")
async def get_router_rtp_capabilities(room: Room, peer: Peer, request: m.Empty) -> Any:
    return room.primary.rtp_capabilities


@handles("join")
async def join(room: Room, peer: Peer, request: m.Join) -> Any:
    """Join (or re-join after a reconnect: what earlier connections made is dropped,
    without ``peerClosed``/``newPeer`` churn); answers the others."""
    if peer.joined and peer.joined_generation == peer.generation:
        raise Conflict("Peer already joined")
    rejoin = peer.joined
    old_name = peer.display_name
    if rejoin:
        for transport in list(peer.transports.values()):
            if transport.app_data.get("generation", 0) < peer.generation:
                transport.close()
    peer.display_name = request.displayName
    peer.device = request.device or {}
    peer.rtp_capabilities = request.rtpCapabilities
    peer.sctp_capabilities = request.sctpCapabilities
    peer.metadata = ParticipantMetadata(
        email=request.email, ai_settings=request.aiSettings, integrations=request.integrations
    )
    peer.joined = True
    peer.joined_generation = peer.generation
    if peer.joined_at is None:
        peer.joined_at = time.time()
    others = [*room.joined_peers(exclude=peer), *room.broadcasters.values()]
    peer.log.info("peer {} ({} others in the room)", "re-joined" if rejoin else "joined", len(others))
    if not rejoin:
        for other in room.joined_peers(exclude=peer):
            other.notify("newPeer", peer.info())
        room.observer.safe_emit(PEER_JOINED, peer)
    elif old_name != peer.display_name:
        _display_name_changed(room, peer, old_name)
    # Consumers are created after the answer is queued (the spawned task runs later).
    room.spawn(sync_consumers(room, peer))
    return {"peers": [other.info() for other in others]}


def _display_name_changed(room: Room, peer: Peer, old: str) -> None:
    for other in room.joined_peers(exclude=peer):
        other.notify(
            "peerDisplayNameChanged", {"peerId": peer.id, "displayName": peer.display_name, "oldDisplayName": old}
        )


@handles("changeDisplayName")
async def change_display_name(room: Room, peer: Peer, request: m.ChangeDisplayName) -> Any:
    old, peer.display_name = peer.display_name, request.displayName
    _display_name_changed(room, peer, old)
    room.observer.safe_emit(PEER_UPDATED, peer)
    return None


# -- transports -----------------------------------------------------------------------


@handles("createWebRtcTransport")
async def create_webrtc_transport(room: Room, peer: Peer, request: m.CreateWebRtcTransport) -> Any:
    return await media.create_webrtc_transport(
        room,
        peer,
        producing=request.producing,
        consuming=request.consuming,
        sctp_capabilities=request.sctpCapabilities,
        force_tcp=request.forceTcp,
    )


@handles("connectWebRtcTransport")
async def connect_webrtc_transport(room: Room, peer: Peer, request: m.ConnectWebRtcTransport) -> Any:
    transport = _webrtc_transport(peer, request.transportId)
    with worker_errors("connectWebRtcTransport"):
        await transport.connect(dtls_parameters=request.dtlsParameters.model_dump())
    return None


@handles("restartIce")
async def restart_ice(room: Room, peer: Peer, request: m.TransportId) -> Any:
    transport = _webrtc_transport(peer, request.transportId)
    with worker_errors("restartIce"):
        return await transport.restart_ice()


# -- producers ------------------------------------------------------------------------


@handles("produce")
async def produce(room: Room, peer: Peer, request: m.Produce) -> Any:
    transport = _transport(peer, request.transportId)
    producer = await media.produce(
        room, peer, transport, request.kind, request.rtpParameters, request.appData, request.paused
    )
    return {"id": producer.id}


@handles("closeProducer")
async def close_producer(room: Room, peer: Peer, request: m.ProducerId) -> Any:
    producer = _find(peer.producers, "producer", request.producerId)
    producer.close()
    peer.producers.pop(producer.id, None)
    return None


@handles("pauseProducer")
async def pause_producer(room: Room, peer: Peer, request: m.ProducerId) -> Any:
    producer = _find(peer.producers, "producer", request.producerId)
    with worker_errors("pauseProducer"):
        await producer.pause()


@handles("resumeProducer")
async def resume_producer(room: Room, peer: Peer, request: m.ProducerId) -> Any:
    producer = _find(peer.producers, "producer", request.producerId)
    with worker_errors("resumeProducer"):
        await producer.resume()


@handles("produceData")
async def produce_data(room: Room, peer: Peer, request: m.ProduceData) -> Any:
    transport = _transport(peer, request.transportId)
    data_producer = await media.produce_data(
        room, peer, transport, request.sctpStreamParameters, request.label, request.protocol, request.appData
    )
    return {"id": data_producer.id}


# -- consumers ------------------------------------------------------------------------


@handles("pauseConsumer")
async def pause_consumer(room: Room, peer: Peer, request: m.ConsumerId) -> Any:
    consumer = _find(peer.consumers, "consumer", request.consumerId)
    with worker_errors("pauseConsumer"):
        await consumer.pause()


@handles("resumeConsumer")
async def resume_consumer(room: Room, peer: Peer, request: m.ConsumerId) -> Any:
    consumer = _find(peer.consumers, "consumer", request.consumerId)
    with worker_errors("resumeConsumer"):
        await consumer.resume()


@handles("setConsumerPreferredLayers")
async def set_consumer_preferred_layers(room: Room, peer: Peer, request: m.SetConsumerPreferredLayers) -> Any:
    consumer = _find(peer.consumers, "consumer", request.consumerId)
    with worker_errors("setConsumerPreferredLayers"):
        await consumer.set_preferred_layers(request.spatialLayer, request.temporalLayer)


@handles("setConsumerPriority")
async def set_consumer_priority(room: Room, peer: Peer, request: m.SetConsumerPriority) -> Any:
    consumer = _find(peer.consumers, "consumer", request.consumerId)
    with worker_errors("setConsumerPriority"):
        await consumer.set_priority(request.priority)


@handles("requestConsumerKeyFrame")
async def request_consumer_key_frame(room: Room, peer: Peer, request: m.ConsumerId) -> Any:
    consumer = _find(peer.consumers, "consumer", request.consumerId)
    with worker_errors("requestConsumerKeyFrame"):
        await consumer.request_key_frame()


# -- stats ----------------------------------------------------------------------------


@handles("getTransportStats")
async def get_transport_stats(room: Room, peer: Peer, request: m.TransportId) -> Any:
    transport = _transport(peer, request.transportId)
    with worker_errors("getTransportStats"):
        return await transport.get_stats()


@handles("getProducerStats")
async def get_producer_stats(room: Room, peer: Peer, request: m.ProducerId) -> Any:
    producer = _find(peer.producers, "producer", request.producerId)
    with worker_errors("getProducerStats"):
        return await producer.get_stats()


@handles("getConsumerStats")
async def get_consumer_stats(room: Room, peer: Peer, request: m.ConsumerId) -> Any:
    consumer = _find(peer.consumers, "consumer", request.consumerId)
    with worker_errors("getConsumerStats"):
        return await consumer.get_stats()


@handles("getDataProducerStats")
async def get_data_producer_stats(room: Room, peer: Peer, request: m.DataProducerId) -> Any:
    data_producer = _find(peer.data_producers, "dataProducer", request.dataProducerId)
    with worker_errors("getDataProducerStats"):
        return await data_producer.get_stats()


@handles("getDataConsumerStats")
async def get_data_consumer_stats(room: Room, peer: Peer, request: m.DataConsumerId) -> Any:
    data_consumer = _find(peer.data_consumers, "dataConsumer", request.dataConsumerId)
    with worker_errors("getDataConsumerStats"):
        return await data_consumer.get_stats()


assert set(HANDLERS) == set(m.REQUESTS), set(m.REQUESTS) ^ set(HANDLERS)

"""The protoo requests of a room's peers: one function per method, one table.

:func:`handle_request` is where every request of a peer lands. First the one
access check (:func:`authorize`): the grant :data:`REQUIRED_GRANTS` names for
the method, asked of the peer's principal for this room (403 ``missing_grant``
naming it), and for ``produce`` the source too (``canPublishSources``, from
``kind`` and ``appData.source``: :func:`control.auth.source_of`). A hidden
participant does not publish (media, data or chat: any of it would announce
it). As in mediasoup-demo, transports may be created before ``join``;
everything that produces or consumes needs a join (403 "Peer not yet joined"
otherwise). Other services' methods (chat, recording), registered with the
host, are answered next; the demo's methods cannot be replaced. Refusals are
:mod:`control.errors` ParleyErrors; the signaling layer answers them with
``errorCode`` = their status.

Transports need no more than ``roomJoin``: they carry nothing by themselves, and
clients (mediasoup-demo's, LiveKit's) create their sending and receiving ones
whatever they may do; producing and consuming are what the grants refuse.
Consumers are not requests: :mod:`control.rooms.consumers` makes them only for
a principal with ``canSubscribe``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from control.auth import Grant, source_of
from control.errors import BadRequest, Conflict, Forbidden, Gone, NotFound
from control.rooms import media
from control.rooms.consumers import sync_consumers
from control.rooms.errors import worker_errors
from control.rooms.host import PEER_JOINED, PEER_UPDATED
from control.rooms.peer import ParticipantMetadata, token_email, token_name
from control.signaling import messages as m
from workers.transport import Transport
from workers.webrtc_transport import WebRtcTransport

if TYPE_CHECKING:
    from control.rooms.peer import Peer
    from control.rooms.room import Room

__all__ = ["HANDLERS", "REQUIRED_GRANTS", "authorize", "handle_request"]

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


#: The grant each request needs (of the peer's principal, for this room). Every method
#: a peer may call is here, the other services' too; a method missing from it needs
#: ``roomJoin`` (which the connection already proved).
REQUIRED_GRANTS: Final[Mapping[str, Grant]] = {
    "getRouterRtpCapabilities": Grant.JOIN,
    "join": Grant.JOIN,
    "changeDisplayName": Grant.JOIN,
    "createWebRtcTransport": Grant.JOIN,
    "connectWebRtcTransport": Grant.JOIN,
    "restartIce": Grant.JOIN,
    "produce": Grant.PUBLISH,  # and the source: canPublishSources
    "closeProducer": Grant.JOIN,  # giving up is always allowed
    "pauseProducer": Grant.PUBLISH,
    "resumeProducer": Grant.PUBLISH,
    "produceData": Grant.PUBLISH_DATA,
    "pauseConsumer": Grant.SUBSCRIBE,
    "resumeConsumer": Grant.SUBSCRIBE,
    "requestConsumerKeyFrame": Grant.SUBSCRIBE,
    "setConsumerPreferredLayers": Grant.SUBSCRIBE,
    "setConsumerPriority": Grant.SUBSCRIBE,
    "getTransportStats": Grant.JOIN,
    "getProducerStats": Grant.JOIN,
    "getConsumerStats": Grant.JOIN,
    "getDataProducerStats": Grant.JOIN,
    "getDataConsumerStats": Grant.JOIN,
    # Other services' methods (control.chat.signaling, control.recording.service).
    "chatMessage": Grant.PUBLISH_DATA,
    "getChatHistory": Grant.JOIN,
    "startRecording": Grant.RECORD,
    "stopRecording": Grant.RECORD,
}

#: Grants that publish something the others see: never for a hidden participant.
_PUBLISHING = frozenset({Grant.PUBLISH, Grant.PUBLISH_DATA})


def authorize(room: Room, peer: Peer, method: str, data: Mapping[str, Any]) -> None:
    """The one access check of a request: raise Forbidden (403) unless the peer's
    principal holds the method's grant in this room (and, for ``produce``, the source)."""
    grant = REQUIRED_GRANTS.get(method, Grant.JOIN)
    principal = peer.principal
    principal.require(grant, room.id)
    if grant in _PUBLISHING and peer.hidden:
        raise Forbidden("hidden participants do not publish", code="missing_grant")
    if method == "produce":
        app_data = data.get("appData")
        source = source_of(str(data.get("kind")), app_data if isinstance(app_data, Mapping) else None)
        principal.require_publish_source(source, room.id)


async def handle_request(room: Room, peer: Peer, method: str, data: dict[str, Any]) -> Any:
    """Answer one protoo request of ``peer`` (raises ParleyErrors)."""
    authorize(room, peer, method, data)
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
    peer.display_name = token_name(peer.principal) or request.displayName
    peer.device = request.device or {}
    peer.rtp_capabilities = request.rtpCapabilities
    peer.sctp_capabilities = request.sctpCapabilities
    peer.metadata = ParticipantMetadata(
        email=token_email(peer.principal) or request.email,
        ai_settings=request.aiSettings,
        integrations=request.integrations,
    )
    peer.joined = True
    peer.joined_generation = peer.generation
    if peer.joined_at is None:
        peer.joined_at = time.time()
    others = room.visible_participants(exclude=peer)
    peer.log.info(
        "peer {}{} ({} others in the room)",
        "re-joined" if rejoin else "joined",
        " (hidden)" if peer.hidden else "",
        len(others),
    )
    if not rejoin and not peer.hidden:
        for other in room.joined_peers(exclude=peer):
            other.notify("newPeer", peer.info())
        room.observer.safe_emit(PEER_JOINED, peer)
    elif old_name != peer.display_name:
        _display_name_changed(room, peer, old_name)
    # Consumers are created after the answer is queued (the spawned task runs later).
    room.spawn(sync_consumers(room, peer))
    return {"peers": [other.info() for other in others]}


def _display_name_changed(room: Room, peer: Peer, old: str) -> None:
    if peer.hidden:
        return
    for other in room.joined_peers(exclude=peer):
        other.notify(
            "peerDisplayNameChanged", {"peerId": peer.id, "displayName": peer.display_name, "oldDisplayName": old}
        )


@handles("changeDisplayName")
async def change_display_name(room: Room, peer: Peer, request: m.ChangeDisplayName) -> Any:
    """A rename; refused (403 ``display_name_from_token``) when the name is the token's."""
    if token_name(peer.principal):
        raise Forbidden(
            "the display name is the access token's name; it cannot be changed", code="display_name_from_token"
        )
    old, peer.display_name = peer.display_name, request.displayName
    _display_name_changed(room, peer, old)
    if not peer.hidden:
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
assert set(m.REQUESTS) <= set(REQUIRED_GRANTS), set(m.REQUESTS) - set(REQUIRED_GRANTS)

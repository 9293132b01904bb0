"""What a participant creates in a room: transports, producers, data producers.

Shared by the protoo handlers (:mod:`control.rooms.handlers`) and the
broadcaster REST API (:mod:`control.rooms.broadcasters`). Each checks, once the
worker answered, that the participant and the room are still there (410
otherwise, and what was just made is closed), keeps the new entity in the
participant's table until it closes, and has the room's other joined peers
consume what it produces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from control.errors import Gone
from control.rooms import limits
from control.rooms.codecs import INITIAL_AVAILABLE_OUTGOING_BITRATE, MAX_INCOMING_BITRATE, MAX_SCTP_MESSAGE_SIZE
from control.rooms.consumers import consume, consume_data
from control.rooms.errors import worker_errors
from control.rooms.host import DATA_PRODUCER_CREATED, PRODUCER_CREATED
from workers.data_producer import DataProducer
from workers.errors import MediasoupError
from workers.producer import Producer
from workers.transport import Transport
from workers.webrtc_transport import WebRtcTransport
from workers.wire import clone

if TYPE_CHECKING:
    from control.rooms.peer import Peer
    from control.rooms.room import Room

__all__ = ["create_webrtc_transport", "produce", "produce_data"]


async def create_webrtc_transport(
    room: Room, peer: Peer, *, producing: bool, consuming: bool, sctp_capabilities: Any, force_tcp: bool = False
) -> dict[str, Any]:
    """A WebRtcTransport on the router :mod:`~control.rooms.spreading` picks; the
    client's view of it."""
    limits.check_transports(peer.transports, room.host.settings)
    with worker_errors("createWebRtcTransport"):
        router = await room.spreading.router_for(producing=producing, consuming=consuming)
        server = await room.host.webrtc_server(router.worker)
        transport = await router.create_webrtc_transport(
            webrtc_server=server,
            enable_udp=not force_tcp,
            enable_tcp=True,
            prefer_udp=not force_tcp,
            initial_available_outgoing_bitrate=INITIAL_AVAILABLE_OUTGOING_BITRATE,
            enable_sctp=bool(sctp_capabilities),
            max_send_message_size=MAX_SCTP_MESSAGE_SIZE,
            max_receive_message_size=MAX_SCTP_MESSAGE_SIZE,
            app_data={"producing": producing, "consuming": consuming, "peerId": peer.id, "generation": peer.generation},
        )
    if peer.closed or room.closed:
        transport.close()
        raise Gone("peer closed")
    peer.transports[transport.id] = transport
    transport.observer.on("close", lambda: peer.transports.pop(transport.id, None))
    transport.on("dtlsstatechange", lambda state: _on_dtls_state(peer, transport, state))
    transport.on("trace", lambda trace: _on_transport_trace(peer, trace))
    try:
        await transport.enable_trace_event(["bwe"])
        if producing:
            await transport.set_max_incoming_bitrate(MAX_INCOMING_BITRATE)
    except MediasoupError as error:
        peer.log.warning("transport options not applied: {}", error)
    return {
        "id": transport.id,
        "iceParameters": clone(transport.ice_parameters),
        "iceCandidates": clone(transport.ice_candidates),
        "dtlsParameters": clone(transport.dtls_parameters),
        "sctpParameters": clone(transport.sctp_parameters),
    }


def _on_dtls_state(peer: Peer, transport: WebRtcTransport, state: str) -> None:
    if state == "failed":
        peer.log.warning("WebRtcTransport {} DTLS failed", transport.id)
    elif state == "closed":
        peer.log.debug("WebRtcTransport {} DTLS closed", transport.id)


def _on_transport_trace(peer: Peer, trace: dict[str, Any]) -> None:
    if trace.get("type") == "bwe" and trace.get("direction") == "out":
        info = trace.get("info") or {}
        peer.notify(
            "downlinkBwe",
            {
                "desiredBitrate": info.get("desiredBitrate"),
                "effectiveDesiredBitrate": info.get("effectiveDesiredBitrate"),
                "availableBitrate": info.get("availableBitrate"),
            },
        )


async def produce(
    room: Room,
    peer: Peer,
    transport: Transport,
    kind: str,
    rtp_parameters: Any,
    app_data: dict[str, Any] | None = None,
    paused: bool = False,
) -> Producer:
    """Create a producer of ``peer`` and have every other joined peer consume it."""
    limits.check_producers(peer.producers, room.host.settings)
    # As the demo: peerId in appData tells the audio level observer whose it is.
    app_data = {**(app_data or {}), "peerId": peer.id}
    with worker_errors("produce"):
        producer = await transport.produce(kind, rtp_parameters, app_data=app_data, paused=paused)
    if peer.closed or room.closed:
        producer.close()
        raise Gone("peer closed")
    peer.producers[producer.id] = producer
    producer.observer.on("close", lambda: peer.producers.pop(producer.id, None))
    producer.on("score", lambda score: peer.notify("producerScore", {"producerId": producer.id, "score": score}))
    peer.log.info("{} producer {} created", kind, producer.id)
    room.observer.safe_emit(PRODUCER_CREATED, peer, producer)
    for other in room.joined_peers(exclude=peer):
        consume(room, other, peer, producer)
    if kind == "audio" and producer.transport.router is room.primary:
        room.spawn(room.observe_audio(producer))
    return producer


async def produce_data(
    room: Room,
    peer: Peer,
    transport: Transport,
    sctp_stream_parameters: Any,
    label: str,
    protocol: str,
    app_data: dict[str, Any] | None,
) -> DataProducer:
    """Create a data producer of ``peer``; the others consume it unless it is a bot's."""
    limits.check_data_producers(peer.data_producers, room.host.settings)
    app_data = {**(app_data or {}), "peerId": peer.id}
    with worker_errors("produceData"):
        data_producer = await transport.produce_data(
            sctp_stream_parameters, label=label, protocol=protocol, app_data=app_data
        )
    if peer.closed or room.closed:
        data_producer.close()
        raise Gone("peer closed")
    peer.data_producers[data_producer.id] = data_producer
    data_producer.observer.on("close", lambda: peer.data_producers.pop(data_producer.id, None))
    peer.log.info("data producer {} ({!r}) created", data_producer.id, label)
    room.observer.safe_emit(DATA_PRODUCER_CREATED, peer, data_producer)
    if label != "bot":
        for other in room.joined_peers(exclude=peer):
            consume_data(room, other, peer, data_producer)
    return data_producer

"""mediasoup-demo's broadcaster REST API: FFmpeg/GStreamer and server-side tools.

Same paths and bodies as the demo's ``server.js`` (its ``broadcasters/*.sh``
scripts work unchanged); the room must exist (404 otherwise):

- ``GET    /rooms/{roomId}``: the router's RTP capabilities
- ``POST   /rooms/{roomId}/broadcasters`` ``{id, displayName, device, rtpCapabilities}``
  -> ``{peers: [{id, displayName, device, producers: [{id, kind}]}]}``
- ``DELETE /rooms/{roomId}/broadcasters/{broadcasterId}``
- ``POST   .../broadcasters/{broadcasterId}/transports``
  ``{type: "plain"|"webrtc", rtcpMux, comedia, sctpCapabilities}``
- ``POST   .../transports/{transportId}/connect`` ``{dtlsParameters}`` (WebRTC)
- ``POST   .../transports/{transportId}/plain/connect`` ``{ip, port, rtcpPort}``
- ``POST   .../transports/{transportId}/producers`` ``{kind, rtpParameters}`` -> ``{id}``
- ``POST   .../transports/{transportId}/consume?producerId=`` -> ``{id, producerId, kind, rtpParameters, type}``
- ``POST   .../transports/{transportId}/consume/data`` ``{dataProducerId}`` -> ``{id, streamId}``
- ``POST   .../transports/{transportId}/produce/data``
  ``{sctpStreamParameters, label, protocol, appData}`` -> ``{id}``

Access (``Authorization: Bearer``, checked by :mod:`control.auth` at the top of
every handler, before the room is looked up): ``ingressAdmin`` for the room (a
roomless one: every room), or a participant token of that room that may join and
publish (:func:`control.auth.require_ingress`). A participant token (no
``ingressAdmin``) drives only the broadcaster whose ``id`` is its identity
(``sub``, 403 ``wrong_identity`` otherwise), publishes only its
``canPublishSources`` and data only with ``canPublishData``. Consuming (``consume``,
``consume/data``) sends the room's media out of it, to whatever address a plain
transport was connected to: it needs ``canSubscribe`` in that room besides (a
roomless ``ingressAdmin`` is not enough). In dev mode and with
``AUTH_OPEN_JOIN=true`` token-less callers pass, as the demo's scripts expect.

A broadcaster appears to the room's peers as a peer (``newPeer``,
``peerClosed``, its producers consumed by everyone); its ``id`` follows the peer
id rule and ``{roomId}`` the room id rule of :mod:`control.ids`. Errors are
ParleyErrors, answered in the application's one shape
``{"error": {"code", "message"}}`` (:mod:`control.http`): 400 invalid body or
room id (``invalid_room_id``), 404 unknown room/broadcaster/transport, 409
duplicate id, 410 broadcaster gone meanwhile, 503 worker unavailable, 504
worker timeout.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from control.auth import AuthMethod, Grant, Principal, principal_of, require_ingress, source_of
from control.errors import BadRequest, Forbidden, Gone, NotFound, PayloadTooLarge
from control.ids import validate_peer_id
from control.keys import ROOMS
from control.rooms import limits, media
from control.rooms.codecs import MAX_SCTP_MESSAGE_SIZE
from control.rooms.errors import worker_errors
from control.rooms.peer import Peer, token_name
from control.rooms.room import Room
from control.rooms.routes import checked_room_id
from control.signaling import messages as m
from workers import ortc
from workers.plain_transport import PlainTransport
from workers.transport import Transport
from workers.webrtc_transport import WebRtcTransport

__all__ = ["routes"]

routes = web.RouteTableDef()
_BASE = "/rooms/{roomId}/broadcasters/{broadcasterId}/transports/{transportId}"
_MAX_BODY = 1_048_576


# -- bodies ---------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Device(_Body):
    name: str = Field(min_length=1, max_length=128)
    version: str | None = Field(None, max_length=64)


class CreateBroadcaster(_Body):
    id: str
    displayName: m.DisplayName = Field(min_length=1)
    device: Device
    rtpCapabilities: dict[str, Any] | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> Any:
        return validate_peer_id(v, "id")  # a broadcaster is a peer: the peer id rule

    @field_validator("rtpCapabilities", mode="before")
    @classmethod
    def _caps(cls, v: Any) -> Any:
        return None if v is None else m._ortc(ortc.validate_rtp_capabilities, v, "rtpCapabilities")


class CreateTransport(_Body):
    type: Literal["plain", "webrtc"]
    rtcpMux: bool = False
    comedia: bool = True
    sctpCapabilities: dict[str, Any] | None = None

    @field_validator("rtcpMux", "comedia", mode="before")
    @classmethod
    def _none(cls, v: Any, info: Any) -> Any:
        return (info.field_name == "comedia") if v is None else v

    @field_validator("sctpCapabilities", mode="before")
    @classmethod
    def _sctp(cls, v: Any) -> Any:
        return None if v is None else m._ortc(ortc.validate_sctp_capabilities, v, "sctpCapabilities")


class ConnectTransport(_Body):
    dtlsParameters: m.DtlsParameters


class ConnectPlain(_Body):
    ip: str = Field(min_length=1, max_length=64)
    port: int = Field(ge=1, le=65535)
    rtcpPort: int | None = Field(None, ge=1, le=65535)


class CreateProducer(_Body):
    kind: Literal["audio", "video"]
    rtpParameters: dict[str, Any]
    appData: dict[str, Any] | None = None

    @field_validator("rtpParameters", mode="before")
    @classmethod
    def _rtp(cls, v: Any) -> Any:
        return m._ortc(ortc.validate_rtp_parameters, v, "rtpParameters")

    @field_validator("appData", mode="before")
    @classmethod
    def _app_data(cls, v: Any) -> Any:
        return m.check_object(v, "appData", m.MAX_APP_DATA_BYTES)


class ConsumeData(_Body):
    dataProducerId: m.Id


class _ProduceDataBody(m.ProduceData):
    """``produceData`` without ``transportId`` (it is in the path)."""

    transportId: str = ""


# -- access ---------------------------------------------------------------------------


async def _ingress(request: web.Request) -> Principal:
    """The caller, once it may use the broadcaster API of the path's room and, when the path
    names a broadcaster, drive that one (401/403 otherwise): the first line of every handler."""
    principal = await principal_of(request)
    room_id = request.match_info["roomId"]
    require_ingress(principal, room_id)
    broadcaster_id = request.match_info.get("broadcasterId")
    if broadcaster_id is not None:
        _require_own(principal, room_id, broadcaster_id)
    return principal


def _is_participant(principal: Principal, room_id: str) -> bool:
    """A participant's token (join + publish), not an ingress admin nor an anonymous open/dev caller."""
    anonymous = principal.method in (AuthMethod.OPEN, AuthMethod.DEV)
    return not anonymous and not principal.can(Grant.INGRESS, room_id)


def _require_own(principal: Principal, room_id: str, broadcaster_id: str) -> None:
    """A participant drives only the broadcaster named after it (as it joins only as its ``sub``)."""
    if _is_participant(principal, room_id) and principal.identity != broadcaster_id:
        raise Forbidden(
            "access token is for another broadcaster (sub is not the broadcaster id)", code="wrong_identity"
        )


def _require_subscribe(principal: Principal, room_id: str) -> None:
    """Consuming sends the room's media out: only for a caller who may subscribe in that room."""
    principal.require(Grant.SUBSCRIBE, room_id)


# -- helpers --------------------------------------------------------------------------

B = TypeVar("B", bound=BaseModel)


def _room(request: web.Request) -> Room:
    room_id = checked_room_id(request)
    manager = request.app.get(ROOMS)
    room = manager.get_room(room_id) if manager is not None else None
    if room is None:
        raise NotFound(f'room with id "{room_id}" not found')
    return room


def _broadcaster(request: web.Request) -> tuple[Room, Peer]:
    room = _room(request)
    broadcaster_id = request.match_info["broadcasterId"]
    broadcaster = room.broadcasters.get(broadcaster_id)
    if broadcaster is None:
        raise NotFound(f'broadcaster with id "{broadcaster_id}" does not exist')
    return room, broadcaster


def _transport(request: web.Request) -> tuple[Room, Peer, Transport]:
    room, broadcaster = _broadcaster(request)
    transport_id = request.match_info["transportId"]
    transport = broadcaster.transports.get(transport_id)
    if transport is None:
        raise NotFound(f'transport with id "{transport_id}" does not exist')
    return room, broadcaster, transport


async def _body(request: web.Request, model: type[B]) -> B:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise PayloadTooLarge("request body too large", code="too_large")
    raw = await request.read()
    if len(raw) > _MAX_BODY:
        raise PayloadTooLarge("request body too large", code="too_large")
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise BadRequest("request body is not JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise BadRequest(m.describe(error)) from None


# -- room side ------------------------------------------------------------------------


def create_broadcaster(room: Room, body: CreateBroadcaster) -> dict[str, Any]:
    """The broadcaster enters the room; the peers whose producers it can consume."""
    broadcaster = Peer(room, body.id, broadcaster=True)
    broadcaster.display_name = body.displayName
    broadcaster.device = {
        "flag": "broadcaster",
        "name": body.device.name or "Unknown device",
        "version": body.device.version,
    }
    broadcaster.rtp_capabilities = body.rtpCapabilities
    room.add_broadcaster(broadcaster)
    peers = []
    if body.rtpCapabilities:
        for peer in room.joined_peers():
            peers.append(
                {
                    **peer.info(),
                    "producers": [
                        {"id": p.id, "kind": p.kind}
                        for p in peer.producers.values()
                        if room.primary.can_consume(p.id, body.rtpCapabilities)
                    ],
                }
            )
    return {"peers": peers}


async def create_transport(room: Room, broadcaster: Peer, body: CreateTransport) -> dict[str, Any]:
    limits.check_transports(broadcaster.transports, room.host.settings)
    if body.type == "webrtc":
        return await media.create_webrtc_transport(
            room, broadcaster, producing=True, consuming=True, sctp_capabilities=body.sctpCapabilities
        )
    with worker_errors("createBroadcasterTransport"):
        transport = await room.primary.create_plain_transport(
            listen_info=room.host.plain_listen_info(),
            rtcp_mux=body.rtcpMux,
            comedia=body.comedia,
            enable_sctp=bool(body.sctpCapabilities),
            max_send_message_size=MAX_SCTP_MESSAGE_SIZE,
            max_receive_message_size=MAX_SCTP_MESSAGE_SIZE,
            app_data={"producing": True, "consuming": False, "peerId": broadcaster.id},
        )
    if broadcaster.closed or room.closed:
        transport.close()
        raise Gone("broadcaster closed")
    broadcaster.transports[transport.id] = transport
    transport.observer.on("close", lambda: broadcaster.transports.pop(transport.id, None))
    tuple_ = transport.tuple
    rtcp = transport.rtcp_tuple
    result: dict[str, Any] = {
        "id": transport.id,
        "ip": tuple_.get("localAddress") or tuple_.get("localIp"),
        "port": tuple_.get("localPort"),
    }
    if rtcp:
        result["rtcpPort"] = rtcp.get("localPort")
    if transport.sctp_parameters:
        result["sctpParameters"] = transport.sctp_parameters
    return result


# -- routes ---------------------------------------------------------------------------


@routes.get("/rooms/{roomId}")
async def get_room(request: web.Request) -> web.Response:
    await _ingress(request)
    return web.json_response(_room(request).primary.rtp_capabilities)


@routes.post("/rooms/{roomId}/broadcasters")
async def post_broadcaster(request: web.Request) -> web.Response:
    principal = await _ingress(request)
    room = _room(request)
    body = await _body(request, CreateBroadcaster)
    _require_own(principal, room.id, body.id)
    if principal.identity == body.id and (name := token_name(principal)):
        body = body.model_copy(update={"displayName": name})  # its own token names it, as a peer's
    return web.json_response(create_broadcaster(room, body))


@routes.delete("/rooms/{roomId}/broadcasters/{broadcasterId}")
async def remove_broadcaster(request: web.Request) -> web.Response:
    await _ingress(request)
    room, broadcaster = _broadcaster(request)
    room.leave(broadcaster)
    return web.Response(text="broadcaster deleted")


@routes.post("/rooms/{roomId}/broadcasters/{broadcasterId}/transports")
async def post_transport(request: web.Request) -> web.Response:
    await _ingress(request)
    room, broadcaster = _broadcaster(request)
    body = await _body(request, CreateTransport)
    return web.json_response(await create_transport(room, broadcaster, body))


@routes.post(_BASE + "/connect")
async def connect_transport(request: web.Request) -> web.Response:
    await _ingress(request)
    _, _, transport = _transport(request)
    body = await _body(request, ConnectTransport)
    if not isinstance(transport, WebRtcTransport):
        raise BadRequest(f'transport with id "{transport.id}" is not a WebRtcTransport')
    with worker_errors("connectBroadcasterTransport"):
        await transport.connect(dtls_parameters=body.dtlsParameters.model_dump())
    return web.json_response({})


@routes.post(_BASE + "/plain/connect")
async def connect_plain(request: web.Request) -> web.Response:
    await _ingress(request)  # where it sends to matters only if it consumes: see post_consume
    _, _, transport = _transport(request)
    body = await _body(request, ConnectPlain)
    if not isinstance(transport, PlainTransport):
        raise BadRequest(f'transport with id "{transport.id}" is not a PlainTransport')
    with worker_errors("connectPlainTransport"):
        await transport.connect(ip=body.ip, port=body.port, rtcp_port=body.rtcpPort)
    return web.json_response({})


@routes.post(_BASE + "/producers")
async def post_producer(request: web.Request) -> web.Response:
    principal = await _ingress(request)
    room, broadcaster, transport = _transport(request)
    body = await _body(request, CreateProducer)
    if _is_participant(principal, room.id):
        principal.require_publish_source(source_of(body.kind, body.appData), room.id)
    producer = await media.produce(room, broadcaster, transport, body.kind, body.rtpParameters, body.appData)
    return web.json_response({"id": producer.id})


@routes.post(_BASE + "/consume")
async def post_consume(request: web.Request) -> web.Response:
    _require_subscribe(await _ingress(request), request.match_info["roomId"])
    _, broadcaster, transport = _transport(request)
    producer_id = request.query.get("producerId", "")
    if not producer_id:
        raise BadRequest("missing producerId")
    if not broadcaster.rtp_capabilities:
        raise BadRequest("broadcaster does not have rtpCapabilities")
    with worker_errors("consume"):
        consumer = await transport.consume(
            producer_id, broadcaster.rtp_capabilities, app_data={"peerId": broadcaster.id}
        )
    broadcaster.consumers[consumer.id] = consumer
    consumer.observer.on("close", lambda: broadcaster.consumers.pop(consumer.id, None))
    return web.json_response(
        {
            "id": consumer.id,
            "producerId": producer_id,
            "kind": consumer.kind,
            "rtpParameters": consumer.rtp_parameters,
            "type": consumer.type,
        }
    )


@routes.post(_BASE + "/consume/data")
async def post_consume_data(request: web.Request) -> web.Response:
    _require_subscribe(await _ingress(request), request.match_info["roomId"])
    _, broadcaster, transport = _transport(request)
    body = await _body(request, ConsumeData)
    with worker_errors("consumeData"):
        data_consumer = await transport.consume_data(body.dataProducerId, app_data={"peerId": broadcaster.id})
    broadcaster.data_consumers[data_consumer.id] = data_consumer
    data_consumer.observer.on("close", lambda: broadcaster.data_consumers.pop(data_consumer.id, None))
    stream = data_consumer.sctp_stream_parameters or {}
    return web.json_response({"id": data_consumer.id, "streamId": stream.get("streamId")})


@routes.post(_BASE + "/produce/data")
async def post_produce_data(request: web.Request) -> web.Response:
    principal = await _ingress(request)
    room, broadcaster, transport = _transport(request)
    if _is_participant(principal, room.id):
        principal.require(Grant.PUBLISH_DATA, room.id)
    body = await _body(request, _ProduceDataBody)
    data_producer = await media.produce_data(
        room, broadcaster, transport, body.sctpStreamParameters, body.label, body.protocol, body.appData
    )
    return web.json_response({"id": data_producer.id})

"""What every transport shares (mediasoup's ``Transport``).

A transport belongs to a router and owns producers, consumers, data producers
and data consumers. Closing it (``close()``) tells the worker and closes the
children; a parent-driven close (``router_closed()``, ``listen_server_closed()``)
only closes the Python side, since the worker already dropped everything.

Wire shapes (RTP parameters and capabilities, SCTP stream parameters, listen
infos) are mediasoup's camelCase dicts; pydantic models from
``workers.rtp_parameters`` are accepted too and converted with ``as_wire``.
"""

from __future__ import annotations

import asyncio
import marshal
import uuid
from functools import cache
from typing import TYPE_CHECKING, Any, TypedDict

from loguru import logger

from workers import fbs_reader as fr
from workers import ortc
from workers.consumer import Consumer
from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import MediasoupTypeError, NotFoundError, UnsupportedError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_blob import Blob, Fragment, TableLayout, checked, table_layout
from workers.fbs_utils import PRODUCER_TRACE_EVENT, PROTOCOL, SCTP_STATE, body_as, to_dict, vector
from workers.producer import Producer
from workers.rtp_parameters import write_rtp_encoding_parameters, write_rtp_mapping, write_rtp_parameters
from workers.wire import as_wire, clone, new_id

import FBS.Notification.Event as FbsEvent
import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod
import FBS.RtpParameters.MediaKind as FbsMediaKind
import FBS.RtpParameters.Type as FbsRtpType
import FBS.Transport.BweTraceInfo as FbsBweTraceInfo
import FBS.Transport.EnableTraceEventRequest as FbsEnableTraceEventRequest
import FBS.Transport.ListenInfo as FbsListenInfo
import FBS.Transport.Options as FbsOptions
import FBS.Transport.PortRange as FbsPortRange
import FBS.Transport.Protocol as FbsProtocol
import FBS.Transport.SctpNegotiatedCapabilitiesNotification as FbsSctpNegotiated
import FBS.Transport.SctpStateChangeNotification as FbsSctpStateChange
import FBS.Transport.SetMaxIncomingBitrateRequest as FbsSetMaxIncoming
import FBS.Transport.SetMaxOutgoingBitrateRequest as FbsSetMaxOutgoing
import FBS.Transport.SetMinOutgoingBitrateRequest as FbsSetMinOutgoing
import FBS.Transport.SocketFlags as FbsSocketFlags
import FBS.Transport.TraceEventType as FbsTraceEventType
import FBS.Transport.TraceNotification as FbsTraceNotification

if TYPE_CHECKING:
    from workers.channel import Channel
    from workers.router import Router

TRANSPORT_TRACE_EVENT_TYPES = {
    "probation": FbsTraceEventType.TraceEventType.PROBATION,
    "bwe": FbsTraceEventType.TraceEventType.BWE,
}
_TRACE_TYPE_NAMES = {v: k for k, v in TRANSPORT_TRACE_EVENT_TYPES.items()}
_MID_LIMIT = 100_000_000


# -- request building shared by the transport kinds ------------------------------------


def build_listen_info(builder: Any, info: Any) -> int:
    """Serialise one mediasoup ``TransportListenInfo`` dict."""
    info = as_wire(info)
    if not isinstance(info, dict) or not info.get("ip") or not isinstance(info["ip"], str):
        raise MediasoupTypeError("listenInfo must be an object with an ip string")
    protocol = info.get("protocol", "udp")
    if protocol not in ("udp", "tcp"):
        raise MediasoupTypeError(f"invalid listenInfo protocol {protocol!r}")
    ip = builder.CreateString(info["ip"])
    announced = info.get("announcedAddress") or info.get("announcedIp")
    announced_offset = builder.CreateString(announced) if announced else 0
    port_range = info.get("portRange") or {}
    FbsPortRange.Start(builder)
    FbsPortRange.AddMin(builder, int(port_range.get("min", 0)))
    FbsPortRange.AddMax(builder, int(port_range.get("max", 0)))
    port_range_offset = FbsPortRange.End(builder)
    flags = info.get("flags") or {}
    FbsSocketFlags.Start(builder)
    FbsSocketFlags.AddIpv6Only(builder, bool(flags.get("ipv6Only", False)))
    FbsSocketFlags.AddUdpReusePort(builder, bool(flags.get("udpReusePort", False)))
    flags_offset = FbsSocketFlags.End(builder)
    FbsListenInfo.Start(builder)
    FbsListenInfo.AddProtocol(builder, FbsProtocol.Protocol.UDP if protocol == "udp" else FbsProtocol.Protocol.TCP)
    FbsListenInfo.AddIp(builder, ip)
    if announced_offset:
        FbsListenInfo.AddAnnouncedAddress(builder, announced_offset)
    FbsListenInfo.AddExposeInternalIp(builder, bool(info.get("exposeInternalIp", False)))
    FbsListenInfo.AddPort(builder, int(info.get("port") or 0))
    FbsListenInfo.AddPortRange(builder, port_range_offset)
    FbsListenInfo.AddFlags(builder, flags_offset)
    FbsListenInfo.AddSendBufferSize(builder, int(info.get("sendBufferSize") or 0))
    FbsListenInfo.AddRecvBufferSize(builder, int(info.get("recvBufferSize") or 0))
    offset: int = FbsListenInfo.End(builder)
    return offset


class SctpOptions(TypedDict, total=False):
    """The SCTP sizes ``create_*_transport(**sctp_options)`` pass through to ``build_base_options``."""

    max_send_message_size: int
    max_receive_message_size: int
    sctp_send_buffer_size: int
    sctp_per_stream_send_queue_limit: int
    sctp_max_receiver_window_buffer_size: int
    sctp_default_stream_buffered_amount_low_threshold: int


def build_base_options(
    builder: Any,
    *,
    direct: bool = False,
    initial_available_outgoing_bitrate: int | None = None,
    enable_sctp: bool = False,
    max_send_message_size: int = 262144,
    max_receive_message_size: int = 262144,
    sctp_send_buffer_size: int = 2_000_000,
    sctp_per_stream_send_queue_limit: int = 2_000_000,
    sctp_max_receiver_window_buffer_size: int = 5_242_880,
    sctp_default_stream_buffered_amount_low_threshold: int = 1024,
    is_data_channel: bool = False,
) -> int:
    """Serialise ``FBS.Transport.Options`` (the part all transports share)."""
    FbsOptions.Start(builder)
    FbsOptions.AddDirect(builder, direct)
    if initial_available_outgoing_bitrate is not None:
        FbsOptions.AddInitialAvailableOutgoingBitrate(builder, int(initial_available_outgoing_bitrate))
    FbsOptions.AddEnableSctp(builder, enable_sctp)
    FbsOptions.AddMaxSendMessageSize(builder, max_send_message_size)
    FbsOptions.AddMaxReceiveMessageSize(builder, max_receive_message_size)
    FbsOptions.AddSctpSendBufferSize(builder, sctp_send_buffer_size)
    FbsOptions.AddSctpPerStreamSendQueueLimit(builder, sctp_per_stream_send_queue_limit)
    FbsOptions.AddSctpMaxReceiverWindowBufferSize(builder, sctp_max_receiver_window_buffer_size)
    FbsOptions.AddSctpDefaultStreamBufferedAmountLowThreshold(
        builder, sctp_default_stream_buffered_amount_low_threshold
    )
    FbsOptions.AddIsDataChannel(builder, is_data_channel)
    offset: int = FbsOptions.End(builder)
    return offset


# Validated RTP capabilities by the marshal bytes of what was given (see below).
_VALIDATED_CAPABILITIES: dict[bytes, dict[str, Any]] = {}
_MAX_VALIDATED_CAPABILITIES = 256


def validated_rtp_capabilities(rtp_capabilities: Any) -> dict[str, Any]:
    """A validated, normalised copy of an endpoint's RTP capabilities (read only).

    An endpoint consumes every producer of a room with the same capabilities,
    and copying plus validating them is most of what ``consume`` costs in
    Python. Validation depends only on the value, so the result is kept, keyed
    by ``marshal`` bytes: they tell 1, 1.0 and True apart, as the validators
    do, and dumping is several times cheaper than copying. The cached dict is
    shared: ``ortc`` only reads it (its re-normalising is a no-op on
    validated capabilities) and copies what it puts in consumer parameters.
    """
    caps = as_wire(rtp_capabilities)
    try:
        key = marshal.dumps(caps, 2)
    except ValueError:  # not plain data: validate a copy every time
        return ortc.validate_rtp_capabilities(clone(caps))
    validated = _VALIDATED_CAPABILITIES.get(key)
    if validated is None:
        validated = ortc.validate_rtp_capabilities(clone(caps))
        if len(_VALIDATED_CAPABILITIES) >= _MAX_VALIDATED_CAPABILITIES:
            _VALIDATED_CAPABILITIES.clear()
        _VALIDATED_CAPABILITIES[key] = validated
    return validated


def check_app_data(app_data: Any) -> dict[str, Any]:
    if app_data is not None and not isinstance(app_data, dict):
        raise MediasoupTypeError("if given, appData must be an object")
    return app_data if app_data is not None else {}


def parse_base_dump(base: Any) -> dict[str, Any]:
    """mediasoup's ``parseBaseTransportDump`` on the object API."""
    dump = to_dict(base)
    dump["traceEventTypes"] = vector(base.traceEventTypes)
    return _finish_base_dump(dump)


def _finish_base_dump(dump: dict[str, Any]) -> dict[str, Any]:
    """What mediasoup's ``parseBaseTransportDump`` adds to the fields of a ``FBS.Transport.Dump``."""
    dump["traceEventTypes"] = [_TRACE_TYPE_NAMES.get(t, t) for t in dump["traceEventTypes"] or ()]
    # As mediasoup: id vectors are arrays (never absent) and the SSRC maps stay
    # arrays of ``{key, value}``.
    for table in (
        "producerIds",
        "consumerIds",
        "dataProducerIds",
        "dataConsumerIds",
        "mapSsrcConsumerId",
        "mapRtxSsrcConsumerId",
    ):
        dump[table] = dump.get(table) or []
    listener = dump.get("rtpListener")
    if isinstance(listener, dict):
        for table in ("ssrcTable", "midTable", "ridTable"):
            listener[table] = listener.get(table) or []
    sctp = dump.get("sctpParameters")
    if isinstance(sctp, dict):
        # The 3.27 worker no longer reports OS/MIS; mediasoup's JSON still has
        # them (65535) and maxMessageSize (parseSctpParameters), and
        # _allocate_sctp_stream_id sizes its table from MIS.
        sctp.update(OS=65535, MIS=65535, maxMessageSize=sctp["maxReceiveMessageSize"])
    return dump


# -- direct readers (``fbs_reader``) for the tables every WebRtcTransport call reads ----
#
# Field names, slots and defaults from transport.fbs, common.fbs, sctpParameters.fbs
# and sctpAssociation.fbs; the values are those of the object API + ``to_dict``.


def _tuple_json(fields: dict[str, Any]) -> dict[str, Any]:
    """mediasoup's ``parseTuple`` (``localIp`` is the deprecated alias of ``localAddress``)."""
    return {"localIp": fields["localAddress"], **fields}


TUPLE = fr.table(
    (
        ("localAddress", 0, fr.string, None),
        ("localPort", 1, fr.u16, 0),
        ("remoteIp", 2, fr.string, None),
        ("remotePort", 3, fr.u16, 0),
        ("protocol", 4, fr.enum(PROTOCOL), PROTOCOL[1]),
    ),
    _tuple_json,
)
_UINT32_STRING = (("key", 0, fr.u32, 0), ("value", 1, fr.string, None))
_UINT16_STRING = (("key", 0, fr.u16, 0), ("value", 1, fr.string, None))
_STRING_STRING = (("key", 0, fr.string, None), ("value", 1, fr.string, None))
_RECV_RTP_HEADER_EXTENSIONS = tuple(
    (name, slot, fr.u8, None) for slot, name in enumerate(("mid", "rid", "rrid", "absSendTime", "transportWideCc01"))
)
_RTP_LISTENER = (
    ("ssrcTable", 0, fr.vector(fr.table(_UINT32_STRING)), None),
    ("midTable", 1, fr.vector(fr.table(_STRING_STRING)), None),
    ("ridTable", 2, fr.vector(fr.table(_STRING_STRING)), None),
)
_SCTP_PARAMETERS = (
    ("port", 0, fr.u16, 0),
    ("maxSendMessageSize", 1, fr.u32, 0),
    ("maxReceiveMessageSize", 2, fr.u32, 0),
    ("sendBufferSize", 3, fr.u32, 0),
    ("perStreamSendQueueLimit", 4, fr.u32, 0),
    ("maxReceiverWindowBufferSize", 5, fr.u32, 0),
    ("isDataChannel", 6, fr.boolean, False),
)
_SCTP_NEGOTIATED_CAPABILITIES = (
    ("negotiatedMaxOutboundStreams", 0, fr.u16, 0),
    ("negotiatedMaxInboundStreams", 1, fr.u16, 0),
)
_BASE_DUMP = (
    ("id", 0, fr.string, None),
    ("direct", 1, fr.boolean, False),
    ("producerIds", 2, fr.vector(fr.string), None),
    ("consumerIds", 3, fr.vector(fr.string), None),
    ("mapSsrcConsumerId", 4, fr.vector(fr.table(_UINT32_STRING)), None),
    ("mapRtxSsrcConsumerId", 5, fr.vector(fr.table(_UINT32_STRING)), None),
    ("dataProducerIds", 6, fr.vector(fr.string), None),
    ("dataConsumerIds", 7, fr.vector(fr.string), None),
    ("recvRtpHeaderExtensions", 8, fr.table(_RECV_RTP_HEADER_EXTENSIONS), None),
    ("rtpListener", 9, fr.table(_RTP_LISTENER), None),
    ("maxSendMessageSize", 10, fr.u32, 0),
    ("maxReceiveMessageSize", 11, fr.u32, 0),
    ("sctpParameters", 12, fr.table(_SCTP_PARAMETERS), None),
    ("sctpState", 13, fr.enum(SCTP_STATE), None),
    ("sctpNegotiatedCapabilities", 14, fr.table(_SCTP_NEGOTIATED_CAPABILITIES), None),
    ("sctpListener", 15, fr.table((("streamIdTable", 0, fr.vector(fr.table(_UINT16_STRING)), None),)), None),
    ("traceEventTypes", 16, fr.u8_vector, None),
)
BASE_DUMP = fr.table(_BASE_DUMP, _finish_base_dump)
_COUNTERS = (
    "bytesReceived",
    "recvBitrate",
    "bytesSent",
    "sendBitrate",
    "rtpBytesReceived",
    "rtpRecvBitrate",
    "rtpBytesSent",
    "rtpSendBitrate",
    "rtxBytesReceived",
    "rtxRecvBitrate",
    "rtxBytesSent",
    "rtxSendBitrate",
    "probationBytesSent",
    "probationSendBitrate",
)
_OPTIONAL_BITRATES = (
    "availableOutgoingBitrate",
    "availableIncomingBitrate",
    "maxIncomingBitrate",
    "maxOutgoingBitrate",
    "minOutgoingBitrate",
)
# FBS.Transport.Stats: transportId, timestamp, sctpState, the counters (3-16),
# the optional bitrates (17-21) and the optional packet losses (22, 23).
BASE_STATS = fr.table(
    (
        ("transportId", 0, fr.string, None),
        ("timestamp", 1, fr.u64, 0),
        ("sctpState", 2, fr.enum(SCTP_STATE), None),
        *((name, 3 + index, fr.u64, 0) for index, name in enumerate(_COUNTERS)),
        *((name, 17 + index, fr.u64, None) for index, name in enumerate(_OPTIONAL_BITRATES)),
        ("rtpPacketLossReceived", 22, fr.f64, None),
        ("rtpPacketLossSent", 23, fr.f64, None),
    )
)
_CONSUMER_SCORE = (
    ("score", 0, fr.u8, 0),
    ("producerScore", 1, fr.u8, 0),
    ("producerScores", 2, fr.u8_vector, None),
)
_CONSUMER_LAYERS = (("spatialLayer", 0, fr.u8, 0), ("temporalLayer", 1, fr.u8, None))


def _layers_json(layers: dict[str, Any]) -> dict[str, Any]:
    """A ``ConsumerLayers`` as mediasoup reports it: no temporalLayer key when unset."""
    if layers["temporalLayer"] is None:
        del layers["temporalLayer"]
    return layers


# FBS.Transport.ConsumeResponse: paused, producerPaused, score, preferredLayers.
_CONSUME_RESPONSE = (
    ("paused", 0, fr.boolean, False),
    ("producerPaused", 1, fr.boolean, False),
    ("score", 2, fr.table(_CONSUMER_SCORE), None),
    ("preferredLayers", 3, fr.table(_CONSUMER_LAYERS, _layers_json), None),
)


class Transport(EnhancedEventEmitter):
    """Base class of WebRtcTransport, PlainTransport, PipeTransport and DirectTransport.

    Events: ``routerclose``, ``listenserverclose``, ``trace``, ``sctpstatechange``
    (per subclass). Observer: ``close``, ``newproducer``, ``newconsumer``,
    ``newdataproducer``, ``newdataconsumer``, ``trace``.
    """

    type = "base"

    def __init__(self, transport_id: str, router: Router, data: dict[str, Any], app_data: dict[str, Any]) -> None:
        super().__init__()
        self.id = transport_id
        self.router = router
        self.channel: Channel = router.channel
        self.app_data = app_data
        self.data = data
        self.closed = False
        self.observer = EnhancedEventEmitter()
        self.producers: dict[str, Producer] = {}
        self.consumers: dict[str, Consumer] = {}
        self.data_producers: dict[str, Any] = {}
        self.data_consumers: dict[str, Any] = {}
        self._cname_for_producers: str | None = None
        self._next_mid_for_consumers = 0
        self._sctp_stream_ids: bytearray | None = None
        self._next_sctp_stream_id = 0
        self._sctp_max_outbound_streams: int | None = None
        self.channel.subscribe(self.id, self._on_notification)

    # -- lifecycle -------------------------------------------------------------------

    def _begin_close(self) -> bool:
        """Mark this transport closed (once); False if it already was."""
        if self.closed:
            return False
        self.closed = True
        self._mark_closed()
        self.channel.unsubscribe(self.id)
        return True

    def _mark_closed(self) -> None:
        """The state a closed transport reports; subclasses add theirs (ICE, DTLS)."""
        if self.data.get("sctpState"):
            self.data["sctpState"] = "closed"

    def close(self) -> None:
        if not self._begin_close():
            return
        self.router.fire_and_forget(
            FbsMethod.Method.ROUTER_CLOSE_TRANSPORT,
            FbsRequestBody.Body.Router_CloseTransportRequest,
            self.id,
            self.router.id,
        )
        self._close_children(notify_router=True)
        self.emit("@close")
        self.observer.safe_emit("close")

    def router_closed(self) -> None:
        if not self._begin_close():
            return
        self._close_children(notify_router=False)
        self.safe_emit("routerclose")
        self.observer.safe_emit("close")

    def listen_server_closed(self) -> None:
        if not self._begin_close():
            return
        self._close_children(notify_router=False)
        self.emit("@listenserverclose")
        self.safe_emit("listenserverclose")
        self.observer.safe_emit("close")

    def _close_children(self, notify_router: bool) -> None:
        for producer in list(self.producers.values()):
            producer.transport_closed()
            if notify_router:
                self.emit("@producerclose", producer)
        self.producers.clear()
        for consumer in list(self.consumers.values()):
            consumer.transport_closed()
        self.consumers.clear()
        for data_producer in list(self.data_producers.values()):
            data_producer.transport_closed()
            if notify_router:
                self.emit("@dataproducerclose", data_producer)
        self.data_producers.clear()
        for data_consumer in list(self.data_consumers.values()):
            data_consumer.transport_closed()
        self.data_consumers.clear()

    # -- requests --------------------------------------------------------------------

    def request(self, method: int, body_type: int = 0, body_offset: int = 0) -> asyncio.Future[Any]:
        return self.channel.request(method, body_type, body_offset, self.id)

    async def dump(self) -> dict[str, Any]:
        raise NotImplementedError

    async def get_stats(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def connect(self, **params: Any) -> None:
        raise NotImplementedError

    async def set_max_incoming_bitrate(self, bitrate: int) -> None:
        builder = self.channel.builder
        FbsSetMaxIncoming.Start(builder)
        FbsSetMaxIncoming.AddMaxIncomingBitrate(builder, int(bitrate))
        await self.request(
            FbsMethod.Method.TRANSPORT_SET_MAX_INCOMING_BITRATE,
            FbsRequestBody.Body.Transport_SetMaxIncomingBitrateRequest,
            FbsSetMaxIncoming.End(builder),
        )

    async def set_max_outgoing_bitrate(self, bitrate: int) -> None:
        builder = self.channel.builder
        FbsSetMaxOutgoing.Start(builder)
        FbsSetMaxOutgoing.AddMaxOutgoingBitrate(builder, int(bitrate))
        await self.request(
            FbsMethod.Method.TRANSPORT_SET_MAX_OUTGOING_BITRATE,
            FbsRequestBody.Body.Transport_SetMaxOutgoingBitrateRequest,
            FbsSetMaxOutgoing.End(builder),
        )

    async def set_min_outgoing_bitrate(self, bitrate: int) -> None:
        builder = self.channel.builder
        FbsSetMinOutgoing.Start(builder)
        FbsSetMinOutgoing.AddMinOutgoingBitrate(builder, int(bitrate))
        await self.request(
            FbsMethod.Method.TRANSPORT_SET_MIN_OUTGOING_BITRATE,
            FbsRequestBody.Body.Transport_SetMinOutgoingBitrateRequest,
            FbsSetMinOutgoing.End(builder),
        )

    async def enable_trace_event(self, types: list[str] | None = None) -> None:
        """Enable ``trace`` events of the given types ("probation", "bwe")."""
        if types is None:
            types = []
        if not isinstance(types, list):
            raise MediasoupTypeError("types must be an array")
        if any(not isinstance(t, str) for t in types):
            raise MediasoupTypeError("every type must be a string")
        # As mediasoup: unknown types are ignored.
        values = [TRANSPORT_TRACE_EVENT_TYPES[t] for t in types if t in TRANSPORT_TRACE_EVENT_TYPES]
        builder = self.channel.builder
        FbsEnableTraceEventRequest.StartEventsVector(builder, len(values))
        for value in reversed(values):
            builder.PrependUint8(value)
        events = builder.EndVector()
        FbsEnableTraceEventRequest.Start(builder)
        FbsEnableTraceEventRequest.AddEvents(builder, events)
        await self.request(
            FbsMethod.Method.TRANSPORT_ENABLE_TRACE_EVENT,
            FbsRequestBody.Body.Transport_EnableTraceEventRequest,
            FbsEnableTraceEventRequest.End(builder),
        )

    # -- producing and consuming -------------------------------------------------------

    async def produce(
        self,
        kind: str,
        rtp_parameters: Any,
        *,
        id: str | None = None,
        paused: bool = False,
        key_frame_request_delay: int = 0,
        enable_mediasoup_packet_id_header_extension: bool = False,
        app_data: dict[str, Any] | None = None,
    ) -> Producer:
        """Create a Producer; invalid parameters are refused before reaching the worker."""
        if id is not None and id in self.producers:
            raise MediasoupTypeError(f'a Producer with same id "{id}" already exists')
        if kind not in ("audio", "video"):
            raise MediasoupTypeError(f'invalid kind "{kind}"')
        app_data = check_app_data(app_data)
        params = clone(as_wire(rtp_parameters))
        ortc.validate_rtp_parameters(params)
        if not params.get("encodings"):
            params["encodings"] = [{}]
        self._assign_producer_cname(params)
        router_caps = self.router.rtp_capabilities_wire
        rtp_mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps)
        consumable = ortc.get_consumable_rtp_parameters(kind, params, router_caps, rtp_mapping)
        producer_id = id or new_id()
        request = _produce_request(
            producer_id,
            kind,
            params,
            rtp_mapping,
            paused,
            key_frame_request_delay or 0,
            bool(enable_mediasoup_packet_id_header_extension),
        )
        response = await self.channel.request_fragment(
            FbsMethod.Method.TRANSPORT_PRODUCE, FbsRequestBody.Body.Transport_ProduceRequest, request, self.id
        )
        produce_type = fr.scalar(response.buffer, response.body_position, 0, fr.u8, 0)  # ProduceResponse.type
        producer = Producer(
            producer_id,
            self,
            kind=kind,
            rtp_parameters=params,
            producer_type=produce_type,
            consumable_rtp_parameters=consumable,
            paused=paused,
            app_data=app_data,
        )
        self.producers[producer_id] = producer
        producer.once("@close", lambda: self._on_producer_close(producer))
        self.emit("@newproducer", producer)
        self.observer.safe_emit("newproducer", producer)
        return producer

    def _assign_producer_cname(self, params: dict[str, Any]) -> None:
        rtcp = params.setdefault("rtcp", {})
        if self.type == "pipe":
            rtcp.setdefault("cname", uuid.uuid4().hex[:8])
            return
        if not self._cname_for_producers:
            self._cname_for_producers = rtcp.get("cname") or uuid.uuid4().hex[:8]
        rtcp["cname"] = self._cname_for_producers

    def _on_producer_close(self, producer: Producer) -> None:
        self.producers.pop(producer.id, None)
        self.emit("@producerclose", producer)

    def close_producer_request(self, producer_id: str) -> None:
        self.router.fire_and_forget(
            FbsMethod.Method.TRANSPORT_CLOSE_PRODUCER,
            FbsRequestBody.Body.Transport_CloseProducerRequest,
            producer_id,
            self.id,
        )

    async def consume(
        self,
        producer_id: str,
        rtp_capabilities: Any,
        *,
        paused: bool = False,
        mid: str | None = None,
        preferred_layers: dict[str, int] | None = None,
        ignore_dtx: bool = False,
        enable_rtx: bool | None = None,
        pipe: bool = False,
        app_data: dict[str, Any] | None = None,
    ) -> Consumer:
        """Create a Consumer of ``producer_id`` for an endpoint with ``rtp_capabilities``."""
        if not producer_id or not isinstance(producer_id, str):
            raise MediasoupTypeError("missing producerId")
        if mid is not None and (not isinstance(mid, str) or not mid):
            raise MediasoupTypeError("if given, mid must be non empty string")
        app_data = check_app_data(app_data)
        caps = validated_rtp_capabilities(rtp_capabilities)
        producer = self.router.producers.get(producer_id)
        if producer is None:
            raise NotFoundError(f'Producer with id "{producer_id}" not found')
        if enable_rtx is None:
            enable_rtx = producer.kind == "video"
        rtp_parameters = ortc.get_consumer_rtp_parameters(
            consumable_rtp_parameters=producer.consumable_rtp_parameters,
            remote_rtp_capabilities=caps,
            pipe=pipe,
            enable_rtx=enable_rtx,
        )
        if not pipe:
            rtp_parameters["mid"] = mid or self._allocate_mid()
        consumer_id = new_id()
        request = _consume_request(consumer_id, producer, rtp_parameters, paused, preferred_layers, ignore_dtx, pipe)
        response = await self.channel.request_fragment(
            FbsMethod.Method.TRANSPORT_CONSUME, FbsRequestBody.Body.Transport_ConsumeRequest, request, self.id
        )
        status = fr.decode(response.buffer, response.body_position, _CONSUME_RESPONSE)
        consumer = Consumer(
            consumer_id,
            self,
            producer_id=producer_id,
            kind=producer.kind,
            rtp_parameters=rtp_parameters,
            consumer_type="pipe" if pipe else producer.type,
            paused=status["paused"],
            producer_paused=status["producerPaused"],
            score=status["score"],
            preferred_layers=status["preferredLayers"],
            app_data=app_data,
        )
        self.consumers[consumer_id] = consumer
        consumer.once("@close", lambda: self.consumers.pop(consumer_id, None))
        consumer.once("@producerclose", lambda: self.consumers.pop(consumer_id, None))
        self.observer.safe_emit("newconsumer", consumer)
        return consumer

    def _allocate_mid(self) -> str:
        mid = str(self._next_mid_for_consumers)
        self._next_mid_for_consumers += 1
        if self._next_mid_for_consumers == _MID_LIMIT:
            logger.error("consume() | reaching max MID value {}", _MID_LIMIT)
            self._next_mid_for_consumers = 0
        return mid

    def close_consumer_request(self, consumer_id: str) -> None:
        self.router.fire_and_forget(
            FbsMethod.Method.TRANSPORT_CLOSE_CONSUMER,
            FbsRequestBody.Body.Transport_CloseConsumerRequest,
            consumer_id,
            self.id,
        )

    # -- data ------------------------------------------------------------------------

    async def produce_data(
        self,
        sctp_stream_parameters: Any = None,
        *,
        id: str | None = None,
        label: str = "",
        protocol: str = "",
        paused: bool = False,
        app_data: dict[str, Any] | None = None,
    ) -> Any:
        """Create a DataProducer (SCTP, or direct on a DirectTransport)."""
        from workers.data_producer import DataProducer

        if id is not None and id in self.data_producers:
            raise MediasoupTypeError(f'a DataProducer with same id "{id}" already exists')
        app_data = check_app_data(app_data)
        if self.type == "direct":
            if sctp_stream_parameters is not None:
                logger.warning("produce_data() | sctpStreamParameters are ignored on a DirectTransport")
            stream_params = None
            data_type = "direct"
        else:
            stream_params = clone(as_wire(sctp_stream_parameters))
            ortc.validate_sctp_stream_parameters(stream_params)
            data_type = "sctp"
        data_producer = await DataProducer.create(
            self, id or new_id(), data_type, stream_params, label, protocol, paused, app_data
        )
        self.data_producers[data_producer.id] = data_producer
        data_producer.once("@close", lambda: self._on_data_producer_close(data_producer))
        self.emit("@newdataproducer", data_producer)
        self.observer.safe_emit("newdataproducer", data_producer)
        return data_producer

    def _on_data_producer_close(self, data_producer: Any) -> None:
        self.data_producers.pop(data_producer.id, None)
        self.emit("@dataproducerclose", data_producer)

    def close_data_producer_request(self, data_producer_id: str) -> None:
        self.router.fire_and_forget(
            FbsMethod.Method.TRANSPORT_CLOSE_DATAPRODUCER,
            FbsRequestBody.Body.Transport_CloseDataProducerRequest,
            data_producer_id,
            self.id,
        )

    async def consume_data(
        self,
        data_producer_id: str,
        *,
        ordered: bool | None = None,
        max_packet_life_time: int | None = None,
        max_retransmits: int | None = None,
        paused: bool = False,
        subchannels: list[int] | None = None,
        app_data: dict[str, Any] | None = None,
    ) -> Any:
        """Create a DataConsumer of ``data_producer_id``."""
        from workers.data_consumer import DataConsumer

        if not data_producer_id or not isinstance(data_producer_id, str):
            raise MediasoupTypeError("missing dataProducerId")
        app_data = check_app_data(app_data)
        data_producer = self.router.data_producers.get(data_producer_id)
        if data_producer is None:
            raise NotFoundError(f'DataProducer with id "{data_producer_id}" not found')
        stream_params = None
        if self.type == "direct":
            data_type = "direct"
            if ordered is not None or max_packet_life_time is not None or max_retransmits is not None:
                logger.warning("consume_data() | ordered/maxPacketLifeTime/maxRetransmits ignored on DirectTransport")
        else:
            data_type = "sctp"
            stream_params = self._consumer_stream_parameters(
                data_producer, ordered, max_packet_life_time, max_retransmits
            )
        try:
            data_consumer = await DataConsumer.create(
                self, new_id(), data_producer, data_type, stream_params, paused, subchannels or [], app_data
            )
        except BaseException:
            if stream_params and self._sctp_stream_ids is not None:  # refused: its stream id is free again
                self._sctp_stream_ids[stream_params["streamId"]] = 0
            raise
        self.data_consumers[data_consumer.id] = data_consumer
        data_consumer.once("@close", lambda: self._on_data_consumer_gone(data_consumer))
        data_consumer.once("@dataproducerclose", lambda: self._on_data_consumer_gone(data_consumer))
        self.observer.safe_emit("newdataconsumer", data_consumer)
        return data_consumer

    def _on_data_consumer_gone(self, data_consumer: Any) -> None:
        self.data_consumers.pop(data_consumer.id, None)
        stream = data_consumer.sctp_stream_parameters
        if stream and self._sctp_stream_ids is not None:
            self._sctp_stream_ids[stream["streamId"]] = 0

    def _consumer_stream_parameters(
        self, data_producer: Any, ordered: bool | None, max_packet_life_time: int | None, max_retransmits: int | None
    ) -> dict[str, Any]:
        stream_id = self._allocate_sctp_stream_id()
        params = (
            clone(data_producer.sctp_stream_parameters) if data_producer.sctp_stream_parameters else {"ordered": True}
        )
        params["streamId"] = stream_id
        if ordered is not None:
            params["ordered"] = ordered
            if ordered:
                params.pop("maxPacketLifeTime", None)
                params.pop("maxRetransmits", None)
        if not ordered:
            if max_packet_life_time is not None:
                params["ordered"] = False
                params["maxPacketLifeTime"] = max_packet_life_time
            if max_retransmits is not None:
                params["ordered"] = False
                params["maxRetransmits"] = max_retransmits
        return params

    def _allocate_sctp_stream_id(self) -> int:
        sctp = self.data.get("sctpParameters")
        if not sctp:
            raise UnsupportedError("SCTP not enabled in this transport")
        if self._sctp_stream_ids is None:
            self._sctp_stream_ids = bytearray(sctp["MIS"])
        # As mediasoup: data consumers made before the association connected may have
        # gone past the outbound streams it negotiated; start again from 0.
        limit = self._sctp_max_outbound_streams
        if limit is not None and self._next_sctp_stream_id + 1 > limit:
            logger.warning("SCTP negotiated max outbound streams reached, next sctpStreamId reset to 0")
            self._next_sctp_stream_id = 0
        ids = self._sctp_stream_ids
        for offset in range(len(ids)):
            stream_id = (self._next_sctp_stream_id + offset) % len(ids)
            if not ids[stream_id]:
                ids[stream_id] = 1
                self._next_sctp_stream_id = stream_id + 1
                return stream_id
        raise UnsupportedError("no sctpStreamId available")

    def close_data_consumer_request(self, data_consumer_id: str) -> None:
        self.router.fire_and_forget(
            FbsMethod.Method.TRANSPORT_CLOSE_DATACONSUMER,
            FbsRequestBody.Body.Transport_CloseDataConsumerRequest,
            data_consumer_id,
            self.id,
        )

    # -- notifications ---------------------------------------------------------------

    def _on_notification(self, event: int, notification: Any) -> None:
        if event == FbsEvent.Event.TRANSPORT_SCTP_STATE_CHANGE:
            state = SCTP_STATE[body_as(notification, FbsSctpStateChange.SctpStateChangeNotification).SctpState()]
            if self.data.get("sctpParameters") is not None:
                self.data["sctpState"] = state
            self.safe_emit("sctpstatechange", state)
            self.observer.safe_emit("sctpstatechange", state)
        elif event == FbsEvent.Event.TRANSPORT_TRACE:
            trace = parse_trace(body_as(notification, FbsTraceNotification.TraceNotification))
            self.safe_emit("trace", trace)
            self.observer.safe_emit("trace", trace)
        else:
            self._on_specific_notification(event, notification)

    def _on_specific_notification(self, event: int, notification: Any) -> None:
        logger.error("ignoring unknown transport event {}", event)

    def _on_sctp_negotiated_capabilities(self, notification: Any) -> None:
        """``TRANSPORT_SCTP_NEGOTIATED_CAPABILITIES`` (WebRTC, plain and pipe transports):
        kept in ``sctpNegotiatedCapabilities``, and mediasoup's
        ``handleSctpNegotiatedCapabilities`` (stream ids stay under the outbound streams)."""
        caps = body_as(notification, FbsSctpNegotiated.SctpNegotiatedCapabilitiesNotification).NegotiatedCapabilities()
        self.data["sctpNegotiatedCapabilities"] = {
            "negotiatedMaxOutboundStreams": caps.NegotiatedMaxOutboundStreams(),
            "negotiatedMaxInboundStreams": caps.NegotiatedMaxInboundStreams(),
        }
        self._sctp_max_outbound_streams = caps.NegotiatedMaxOutboundStreams()

    @property
    def sctp_state(self) -> str | None:
        return self.data.get("sctpState")

    @property
    def sctp_parameters(self) -> dict[str, Any] | None:
        return self.data.get("sctpParameters")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} closed={self.closed}>"


# -- produce and consume requests, written with ``fbs_blob`` --------------------------
#
# Slots from transport.fbs (ProduceRequest, ConsumeRequest) and consumer.fbs
# (ConsumerLayers). The RTP parameters inside are most of each request; they are
# written into the same blob (``rtp_parameters.write_*``), with no builder.

_PRODUCE_REQUEST = table_layout(
    ((0, "ref"), (2, "ref"), (3, "ref"), (5, "u32"), (1, "u8"), (4, "bool"), (6, "bool"))
)  # producer_id, rtp_parameters, rtp_mapping, key_frame_request_delay, kind, paused, enable_..._packet_id


def _produce_request(
    producer_id: str,
    kind: str,
    params: dict[str, Any],
    rtp_mapping: dict[str, Any],
    paused: bool,
    key_frame_request_delay: int,
    enable_packet_id: bool,
) -> Fragment:
    layout = _PRODUCE_REQUEST
    blob = Blob()
    position = blob.table(
        layout,
        (
            0,
            0,
            0,
            checked(key_frame_request_delay, "u32"),
            _media_kind(kind),
            checked(paused, "bool"),
            enable_packet_id,
        ),
    )
    id_ref, params_ref, mapping_ref = layout.ref_positions
    blob.patch(position + id_ref, blob.utf8_string(producer_id.encode()))
    blob.patch(position + params_ref, write_rtp_parameters(blob, params))
    blob.patch(position + mapping_ref, write_rtp_mapping(blob, rtp_mapping))
    return blob.as_fragment(position)


@cache
def _consume_request_layout(has_encodings: bool, has_layers: bool) -> TableLayout:
    """consumer_id, producer_id, rtp_parameters, [consumable_rtp_encodings], [preferred_layers],
    kind, type, paused, ignore_dtx."""
    refs = ((0, "ref"), (1, "ref"), (3, "ref")) + ((5, "ref"),) * has_encodings + ((7, "ref"),) * has_layers
    return table_layout(refs + ((2, "u8"), (4, "u8"), (6, "bool"), (8, "bool")))


def _consumer_layers(preferred_layers: dict[str, Any]) -> tuple[TableLayout, tuple[Any, ...]]:
    spatial = checked(int(preferred_layers["spatialLayer"]), "u8")
    temporal = preferred_layers.get("temporalLayer")
    if temporal is None:
        return table_layout(((0, "u8"),)), (spatial,)
    return table_layout(((0, "u8"), (1, "u8"))), (spatial, checked(int(temporal), "u8"))


def _consume_request(
    consumer_id: str,
    producer: Producer,
    rtp_parameters: dict[str, Any],
    paused: bool,
    preferred_layers: dict[str, Any] | None,
    ignore_dtx: bool,
    pipe: bool,
) -> Fragment:
    encodings = producer.consumable_rtp_parameters.get("encodings")
    layout = _consume_request_layout(bool(encodings), bool(preferred_layers))
    consumer_type = FbsRtpType.Type.PIPE if pipe else producer.fbs_type
    blob = Blob()
    position = blob.table(
        layout,
        (0,) * len(layout.ref_positions)
        + (_media_kind(producer.kind), consumer_type, checked(paused, "bool"), bool(ignore_dtx)),
    )
    refs = iter(layout.ref_positions)
    blob.patch(position + next(refs), blob.utf8_string(consumer_id.encode()))
    blob.patch(position + next(refs), blob.utf8_string(producer.id.encode()))
    blob.patch(position + next(refs), write_rtp_parameters(blob, rtp_parameters))
    if encodings:
        blob.patch(position + next(refs), write_rtp_encoding_parameters(blob, encodings))
    if preferred_layers:
        layers_layout, values = _consumer_layers(preferred_layers)
        blob.patch(position + next(refs), blob.table(layers_layout, values))
    return blob.as_fragment(position)


def parse_trace(trace: Any) -> dict[str, Any]:
    from workers.fbs_utils import TRACE_DIRECTION

    event: dict[str, Any] = {
        "type": _TRACE_TYPE_NAMES.get(trace.Type(), trace.Type()),
        "timestamp": trace.Timestamp(),
        "direction": TRACE_DIRECTION.get(trace.Direction()),
        "info": {},
    }
    if trace.Type() == FbsTraceEventType.TraceEventType.BWE and trace.Info() is not None:
        info = FbsBweTraceInfo.BweTraceInfo()
        table = trace.Info()
        info.Init(table.Bytes, table.Pos)
        event["info"] = to_dict(FbsBweTraceInfo.BweTraceInfoT.InitFromObj(info))
    return event


def _media_kind(kind: str) -> int:
    media_kind: int = FbsMediaKind.MediaKind.AUDIO if kind == "audio" else FbsMediaKind.MediaKind.VIDEO
    return media_kind


PRODUCER_TRACE_TYPES = {name: value for value, name in PRODUCER_TRACE_EVENT.items()}

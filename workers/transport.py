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
import uuid
from typing import TYPE_CHECKING, Any

from loguru import logger

from workers import ortc
from workers.consumer import Consumer
from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import MediasoupTypeError, NotFoundError, UnsupportedError
from workers.fbs import FBS  # noqa: F401
from workers.fbs_utils import PRODUCER_TRACE_EVENT, SCTP_STATE, body_as, to_dict, vector
from workers.producer import Producer
from workers.rtp_parameters import serialize_rtp_encoding_parameters, serialize_rtp_parameters
from workers.wire import as_wire, clone

import FBS.Consumer.ConsumerLayers as FbsConsumerLayers  # noqa: E402
import FBS.Notification.Event as FbsEvent  # noqa: E402
import FBS.Request.Body as FbsRequestBody  # noqa: E402
import FBS.Request.Method as FbsMethod  # noqa: E402
import FBS.Router.CloseTransportRequest as FbsCloseTransportRequest  # noqa: E402
import FBS.RtpParameters.MediaKind as FbsMediaKind  # noqa: E402
import FBS.RtpParameters.Type as FbsRtpType  # noqa: E402
import FBS.Transport.BweTraceInfo as FbsBweTraceInfo  # noqa: E402
import FBS.Transport.CloseConsumerRequest as FbsCloseConsumerRequest  # noqa: E402
import FBS.Transport.CloseDataConsumerRequest as FbsCloseDataConsumerRequest  # noqa: E402
import FBS.Transport.CloseDataProducerRequest as FbsCloseDataProducerRequest  # noqa: E402
import FBS.Transport.CloseProducerRequest as FbsCloseProducerRequest  # noqa: E402
import FBS.Transport.ConsumeRequest as FbsConsumeRequest  # noqa: E402
import FBS.Transport.ConsumeResponse as FbsConsumeResponse  # noqa: E402
import FBS.Transport.EnableTraceEventRequest as FbsEnableTraceEventRequest  # noqa: E402
import FBS.Transport.ListenInfo as FbsListenInfo  # noqa: E402
import FBS.Transport.Options as FbsOptions  # noqa: E402
import FBS.Transport.PortRange as FbsPortRange  # noqa: E402
import FBS.Transport.ProduceRequest as FbsProduceRequest  # noqa: E402
import FBS.Transport.ProduceResponse as FbsProduceResponse  # noqa: E402
import FBS.Transport.Protocol as FbsProtocol  # noqa: E402
import FBS.Transport.SctpStateChangeNotification as FbsSctpStateChange  # noqa: E402
import FBS.Transport.SetMaxIncomingBitrateRequest as FbsSetMaxIncoming  # noqa: E402
import FBS.Transport.SetMaxOutgoingBitrateRequest as FbsSetMaxOutgoing  # noqa: E402
import FBS.Transport.SetMinOutgoingBitrateRequest as FbsSetMinOutgoing  # noqa: E402
import FBS.Transport.SocketFlags as FbsSocketFlags  # noqa: E402
import FBS.Transport.TraceEventType as FbsTraceEventType  # noqa: E402
import FBS.Transport.TraceNotification as FbsTraceNotification  # noqa: E402

if TYPE_CHECKING:
    from workers.router import Router

TRANSPORT_TRACE_EVENT_TYPES = {"probation": FbsTraceEventType.TraceEventType.PROBATION,
                               "bwe": FbsTraceEventType.TraceEventType.BWE}
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
    return FbsListenInfo.End(builder)


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
    return FbsOptions.End(builder)


def check_app_data(app_data: Any) -> dict:
    if app_data is not None and not isinstance(app_data, dict):
        raise MediasoupTypeError("if given, appData must be an object")
    return app_data if app_data is not None else {}


def parse_base_dump(base: Any) -> dict[str, Any]:
    """mediasoup's ``parseBaseTransportDump`` on the object API."""
    dump = to_dict(base)
    dump["traceEventTypes"] = [_TRACE_TYPE_NAMES.get(t, t) for t in vector(base.traceEventTypes)]
    # As mediasoup: id vectors are arrays (never absent) and the SSRC maps stay
    # arrays of ``{key, value}``.
    for table in ("producerIds", "consumerIds", "dataProducerIds", "dataConsumerIds",
                  "mapSsrcConsumerId", "mapRtxSsrcConsumerId"):
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


class Transport(EnhancedEventEmitter):
    """Base class of WebRtcTransport, PlainTransport, PipeTransport and DirectTransport.

    Events: ``routerclose``, ``listenserverclose``, ``trace``, ``sctpstatechange``
    (per subclass). Observer: ``close``, ``newproducer``, ``newconsumer``,
    ``newdataproducer``, ``newdataconsumer``, ``trace``.
    """

    type = "base"

    def __init__(self, transport_id: str, router: "Router", data: dict[str, Any], app_data: dict) -> None:
        super().__init__()
        self.id = transport_id
        self.router = router
        self.channel = router.channel
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
        self.channel.subscribe(self.id, self._on_notification)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.channel.unsubscribe(self.id)
        builder = self.channel.builder
        id_offset = builder.CreateString(self.id)
        FbsCloseTransportRequest.Start(builder)
        FbsCloseTransportRequest.AddTransportId(builder, id_offset)
        self.router.fire_and_forget(
            FbsMethod.Method.ROUTER_CLOSE_TRANSPORT,
            FbsRequestBody.Body.Router_CloseTransportRequest,
            FbsCloseTransportRequest.End(builder),
            self.router.id,
        )
        self._close_children(notify_router=True)
        self.emit("@close")
        self.observer.safe_emit("close")

    def router_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.channel.unsubscribe(self.id)
        self._close_children(notify_router=False)
        self.safe_emit("routerclose")
        self.observer.safe_emit("close")

    def listen_server_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.channel.unsubscribe(self.id)
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

    def request(self, method: int, body_type: int = 0, body_offset: int = 0) -> asyncio.Future:
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
        id: str | None = None,  # noqa: A002  (mediasoup's option name)
        paused: bool = False,
        key_frame_request_delay: int = 0,
        enable_mediasoup_packet_id_header_extension: bool = False,
        app_data: dict | None = None,
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
        producer_id = id or str(uuid.uuid4())
        builder = self.channel.builder
        id_offset = builder.CreateString(producer_id)
        params_offset = serialize_rtp_parameters(builder, params)
        mapping_offset = ortc.serialize_rtp_mapping(builder, rtp_mapping)
        FbsProduceRequest.Start(builder)
        FbsProduceRequest.AddProducerId(builder, id_offset)
        FbsProduceRequest.AddKind(builder, _media_kind(kind))
        FbsProduceRequest.AddRtpParameters(builder, params_offset)
        FbsProduceRequest.AddRtpMapping(builder, mapping_offset)
        FbsProduceRequest.AddPaused(builder, paused)
        FbsProduceRequest.AddKeyFrameRequestDelay(builder, key_frame_request_delay or 0)
        FbsProduceRequest.AddEnableMediasoupPacketIdHeaderExtension(
            builder, bool(enable_mediasoup_packet_id_header_extension)
        )
        response = await self.request(
            FbsMethod.Method.TRANSPORT_PRODUCE,
            FbsRequestBody.Body.Transport_ProduceRequest,
            FbsProduceRequest.End(builder),
        )
        produce_type = body_as(response, FbsProduceResponse.ProduceResponse).Type()
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
        builder = self.channel.builder
        id_offset = builder.CreateString(producer_id)
        FbsCloseProducerRequest.Start(builder)
        FbsCloseProducerRequest.AddProducerId(builder, id_offset)
        self.router.fire_and_forget(
            FbsMethod.Method.TRANSPORT_CLOSE_PRODUCER,
            FbsRequestBody.Body.Transport_CloseProducerRequest,
            FbsCloseProducerRequest.End(builder),
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
        app_data: dict | None = None,
    ) -> Consumer:
        """Create a Consumer of ``producer_id`` for an endpoint with ``rtp_capabilities``."""
        if not producer_id or not isinstance(producer_id, str):
            raise MediasoupTypeError("missing producerId")
        if mid is not None and (not isinstance(mid, str) or not mid):
            raise MediasoupTypeError("if given, mid must be non empty string")
        app_data = check_app_data(app_data)
        caps = clone(as_wire(rtp_capabilities))
        ortc.validate_rtp_capabilities(caps)
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
        consumer_id = str(uuid.uuid4())
        offset = self._build_consume_request(consumer_id, producer, rtp_parameters, paused, preferred_layers,
                                             ignore_dtx, pipe)
        response = await self.request(
            FbsMethod.Method.TRANSPORT_CONSUME, FbsRequestBody.Body.Transport_ConsumeRequest, offset
        )
        status = body_as(response, FbsConsumeResponse.ConsumeResponse)
        layers = status.PreferredLayers()
        consumer = Consumer(
            consumer_id,
            self,
            producer_id=producer_id,
            kind=producer.kind,
            rtp_parameters=rtp_parameters,
            consumer_type="pipe" if pipe else producer.type,
            paused=status.Paused(),
            producer_paused=status.ProducerPaused(),
            score=to_dict(_score_object(status)),
            preferred_layers=_layers(layers),
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

    def _build_consume_request(
        self,
        consumer_id: str,
        producer: Producer,
        rtp_parameters: dict,
        paused: bool,
        preferred_layers: dict | None,
        ignore_dtx: bool,
        pipe: bool,
    ) -> int:
        builder = self.channel.builder
        params_offset = serialize_rtp_parameters(builder, rtp_parameters)
        consumer_offset = builder.CreateString(consumer_id)
        producer_offset = builder.CreateString(producer.id)
        encodings = producer.consumable_rtp_parameters.get("encodings")
        encodings_offset = serialize_rtp_encoding_parameters(builder, encodings) if encodings else 0
        layers_offset = 0
        if preferred_layers:
            FbsConsumerLayers.Start(builder)
            FbsConsumerLayers.AddSpatialLayer(builder, int(preferred_layers["spatialLayer"]))
            if preferred_layers.get("temporalLayer") is not None:
                FbsConsumerLayers.AddTemporalLayer(builder, int(preferred_layers["temporalLayer"]))
            layers_offset = FbsConsumerLayers.End(builder)
        FbsConsumeRequest.Start(builder)
        FbsConsumeRequest.AddConsumerId(builder, consumer_offset)
        FbsConsumeRequest.AddProducerId(builder, producer_offset)
        FbsConsumeRequest.AddKind(builder, _media_kind(producer.kind))
        FbsConsumeRequest.AddRtpParameters(builder, params_offset)
        FbsConsumeRequest.AddType(builder, FbsRtpType.Type.PIPE if pipe else producer.fbs_type)
        if encodings_offset:
            FbsConsumeRequest.AddConsumableRtpEncodings(builder, encodings_offset)
        FbsConsumeRequest.AddPaused(builder, paused)
        if layers_offset:
            FbsConsumeRequest.AddPreferredLayers(builder, layers_offset)
        FbsConsumeRequest.AddIgnoreDtx(builder, bool(ignore_dtx))
        return FbsConsumeRequest.End(builder)

    def close_consumer_request(self, consumer_id: str) -> None:
        builder = self.channel.builder
        id_offset = builder.CreateString(consumer_id)
        FbsCloseConsumerRequest.Start(builder)
        FbsCloseConsumerRequest.AddConsumerId(builder, id_offset)
        self.router.fire_and_forget(
            FbsMethod.Method.TRANSPORT_CLOSE_CONSUMER,
            FbsRequestBody.Body.Transport_CloseConsumerRequest,
            FbsCloseConsumerRequest.End(builder),
            self.id,
        )

    # -- data ------------------------------------------------------------------------

    async def produce_data(
        self,
        sctp_stream_parameters: Any = None,
        *,
        id: str | None = None,  # noqa: A002
        label: str = "",
        protocol: str = "",
        paused: bool = False,
        app_data: dict | None = None,
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
            self, id or str(uuid.uuid4()), data_type, stream_params, label, protocol, paused, app_data
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
        builder = self.channel.builder
        id_offset = builder.CreateString(data_producer_id)
        FbsCloseDataProducerRequest.Start(builder)
        FbsCloseDataProducerRequest.AddDataProducerId(builder, id_offset)
        self.router.fire_and_forget(
            FbsMethod.Method.TRANSPORT_CLOSE_DATAPRODUCER,
            FbsRequestBody.Body.Transport_CloseDataProducerRequest,
            FbsCloseDataProducerRequest.End(builder),
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
        app_data: dict | None = None,
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
                self, str(uuid.uuid4()), data_producer, data_type, stream_params, paused, subchannels or [], app_data
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
        params = clone(data_producer.sctp_stream_parameters) if data_producer.sctp_stream_parameters else {
            "ordered": True
        }
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
        ids = self._sctp_stream_ids
        for offset in range(len(ids)):
            stream_id = (self._next_sctp_stream_id + offset) % len(ids)
            if not ids[stream_id]:
                ids[stream_id] = 1
                self._next_sctp_stream_id = stream_id + 1
                return stream_id
        raise UnsupportedError("no sctpStreamId available")

    def close_data_consumer_request(self, data_consumer_id: str) -> None:
        builder = self.channel.builder
        id_offset = builder.CreateString(data_consumer_id)
        FbsCloseDataConsumerRequest.Start(builder)
        FbsCloseDataConsumerRequest.AddDataConsumerId(builder, id_offset)
        self.router.fire_and_forget(
            FbsMethod.Method.TRANSPORT_CLOSE_DATACONSUMER,
            FbsRequestBody.Body.Transport_CloseDataConsumerRequest,
            FbsCloseDataConsumerRequest.End(builder),
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

    @property
    def sctp_state(self) -> str | None:
        return self.data.get("sctpState")

    @property
    def sctp_parameters(self) -> dict | None:
        return self.data.get("sctpParameters")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} closed={self.closed}>"


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
    return FbsMediaKind.MediaKind.AUDIO if kind == "audio" else FbsMediaKind.MediaKind.VIDEO


def _score_object(status: Any) -> Any:
    score = status.Score()
    if score is None:
        return None
    import FBS.Consumer.ConsumerScore as FbsConsumerScore

    return FbsConsumerScore.ConsumerScoreT.InitFromObj(score)


def _layers(layers: Any) -> dict[str, int] | None:
    if layers is None:
        return None
    result = {"spatialLayer": layers.SpatialLayer()}
    temporal = layers.TemporalLayer()
    if temporal is not None:
        result["temporalLayer"] = temporal
    return result


PRODUCER_TRACE_TYPES = {name: value for value, name in PRODUCER_TRACE_EVENT.items()}

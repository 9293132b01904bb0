"""An RTP sink in a router, fed by one producer (mediasoup's ``Consumer``).

Events: ``transportclose``, ``producerclose``, ``producerpause``,
``producerresume``, ``score``, ``layerschange``, ``trace``, ``rtp``.
Observer: ``close``, ``pause``, ``resume``, ``score``, ``layerschange``, ``trace``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger

from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import MediasoupTypeError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_utils import (
    CONSUMER_TRACE_EVENT,
    MEDIA_KIND,
    RTP_TYPE,
    body_as,
    byte_vector,
    to_dict,
    unpack,
    vector,
)
from workers.producer import _rtp_stream_stats, parse_trace
from workers.rtp_parameters import parse_rtp_encoding_parameters, parse_rtp_parameters
from workers.transport_child import TransportChild

import FBS.Consumer.ConsumerDump as FbsConsumerDump
import FBS.Consumer.ConsumerLayers as FbsConsumerLayers
import FBS.Consumer.DumpResponse as FbsDumpResponse
import FBS.Consumer.EnableTraceEventRequest as FbsEnableTraceEvent
import FBS.Consumer.GetStatsResponse as FbsGetStatsResponse
import FBS.Consumer.LayersChangeNotification as FbsLayersChange
import FBS.Consumer.RtpNotification as FbsRtpNotification
import FBS.Consumer.ScoreNotification as FbsScoreNotification
import FBS.Consumer.SetPreferredLayersRequest as FbsSetPreferredLayers
import FBS.Consumer.SetPreferredLayersResponse as FbsSetPreferredLayersResponse
import FBS.Consumer.SetPriorityRequest as FbsSetPriority
import FBS.Consumer.SetPriorityResponse as FbsSetPriorityResponse
import FBS.Consumer.TraceNotification as FbsTraceNotification
import FBS.Notification.Event as FbsEvent
import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod

if TYPE_CHECKING:
    from workers.transport import Transport

CONSUMER_TRACE_TYPES = {name: value for value, name in CONSUMER_TRACE_EVENT.items()}


class Consumer(TransportChild):
    def __init__(
        self,
        consumer_id: str,
        transport: Transport,
        *,
        producer_id: str,
        kind: str,
        rtp_parameters: dict[str, Any],
        consumer_type: str,
        paused: bool,
        producer_paused: bool,
        score: dict[str, Any] | None,
        preferred_layers: dict[str, int] | None,
        app_data: dict[str, Any],
    ) -> None:
        super().__init__()
        self.id = consumer_id
        self.transport = transport
        self.channel = transport.channel
        self.producer_id = producer_id
        self.kind = kind
        self.rtp_parameters = rtp_parameters
        self.type = consumer_type
        self.paused = paused
        self.producer_paused = producer_paused
        self.score = score or {"score": 10, "producerScore": 10, "producerScores": []}
        self.preferred_layers = preferred_layers
        self.current_layers: dict[str, int] | None = None
        self.priority = 1
        self.app_data = app_data
        self.closed = False
        self.observer = EnhancedEventEmitter()
        self.channel.subscribe(self.id, self._on_notification)

    def _send_close_request(self) -> None:
        self.transport.close_consumer_request(self.id)

    def _request(self, method: int, body_type: int = 0, offset: int = 0) -> Any:
        return self.channel.request(method, body_type, offset, self.id)

    async def dump(self) -> dict[str, Any]:
        response = await self._request(FbsMethod.Method.CONSUMER_DUMP)
        return parse_consumer_dump(body_as(response, FbsDumpResponse.DumpResponse).Data())

    async def get_stats(self) -> list[dict[str, Any]]:
        response = await self._request(FbsMethod.Method.CONSUMER_GET_STATS)
        stats = unpack(response, FbsGetStatsResponse.GetStatsResponse, FbsGetStatsResponse.GetStatsResponseT)
        return [_rtp_stream_stats(stat) for stat in stats.stats or []]

    async def pause(self) -> None:
        await self._request(FbsMethod.Method.CONSUMER_PAUSE)
        was_paused, self.paused = self.paused, True
        if not was_paused and not self.producer_paused:
            self.observer.safe_emit("pause")

    async def resume(self) -> None:
        await self._request(FbsMethod.Method.CONSUMER_RESUME)
        was_paused, self.paused = self.paused, False
        if was_paused and not self.producer_paused:
            self.observer.safe_emit("resume")

    async def set_preferred_layers(self, spatial_layer: int, temporal_layer: int | None = None) -> None:
        if not isinstance(spatial_layer, int) or isinstance(spatial_layer, bool):
            raise MediasoupTypeError("spatialLayer must be a number")
        if temporal_layer is not None and (not isinstance(temporal_layer, int) or isinstance(temporal_layer, bool)):
            raise MediasoupTypeError("if given, temporalLayer must be a number")
        builder = self.channel.builder
        FbsConsumerLayers.Start(builder)
        FbsConsumerLayers.AddSpatialLayer(builder, spatial_layer)
        if temporal_layer is not None:
            FbsConsumerLayers.AddTemporalLayer(builder, temporal_layer)
        layers = FbsConsumerLayers.End(builder)
        FbsSetPreferredLayers.Start(builder)
        FbsSetPreferredLayers.AddPreferredLayers(builder, layers)
        response = await self._request(
            FbsMethod.Method.CONSUMER_SET_PREFERRED_LAYERS,
            FbsRequestBody.Body.Consumer_SetPreferredLayersRequest,
            FbsSetPreferredLayers.End(builder),
        )
        self.preferred_layers = None
        if response.Body() is not None:
            status = body_as(response, FbsSetPreferredLayersResponse.SetPreferredLayersResponse)
            self.preferred_layers = parse_layers(status.PreferredLayers())

    async def set_priority(self, priority: int) -> None:
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 1:
            raise MediasoupTypeError("priority must be a positive number")
        builder = self.channel.builder
        FbsSetPriority.Start(builder)
        FbsSetPriority.AddPriority(builder, priority)
        response = await self._request(
            FbsMethod.Method.CONSUMER_SET_PRIORITY,
            FbsRequestBody.Body.Consumer_SetPriorityRequest,
            FbsSetPriority.End(builder),
        )
        self.priority = body_as(response, FbsSetPriorityResponse.SetPriorityResponse).Priority()

    async def unset_priority(self) -> None:
        await self.set_priority(1)

    async def request_key_frame(self) -> None:
        await self._request(FbsMethod.Method.CONSUMER_REQUEST_KEY_FRAME)

    async def enable_trace_event(self, types: list[str] | None = None) -> None:
        """Enable ``trace`` events: "rtp", "keyframe", "nack", "pli", "fir"."""
        types = types or []
        if not isinstance(types, list) or any(not isinstance(t, str) for t in types):
            raise MediasoupTypeError("types must be an array of strings")
        values = [CONSUMER_TRACE_TYPES[t] for t in types if t in CONSUMER_TRACE_TYPES]
        builder = self.channel.builder
        FbsEnableTraceEvent.StartEventsVector(builder, len(values))
        for value in reversed(values):
            builder.PrependUint8(value)
        events = builder.EndVector()
        FbsEnableTraceEvent.Start(builder)
        FbsEnableTraceEvent.AddEvents(builder, events)
        await self._request(
            FbsMethod.Method.CONSUMER_ENABLE_TRACE_EVENT,
            FbsRequestBody.Body.Consumer_EnableTraceEventRequest,
            FbsEnableTraceEvent.End(builder),
        )

    def _on_notification(self, event: int, notification: Any) -> None:
        Event = FbsEvent.Event
        if event == Event.CONSUMER_PRODUCER_CLOSE:
            if self.closed:
                return
            self.closed = True
            self.channel.unsubscribe(self.id)
            self.emit("@producerclose")
            self.safe_emit("producerclose")
            self.observer.safe_emit("close")
        elif event == Event.CONSUMER_PRODUCER_PAUSE:
            if self.producer_paused:
                return
            self.producer_paused = True
            self.safe_emit("producerpause")
            if not self.paused:
                self.observer.safe_emit("pause")
        elif event == Event.CONSUMER_PRODUCER_RESUME:
            if not self.producer_paused:
                return
            self.producer_paused = False
            self.safe_emit("producerresume")
            if not self.paused:
                self.observer.safe_emit("resume")
        elif event == Event.CONSUMER_SCORE:
            body = FbsScoreNotification.ScoreNotificationT.InitFromObj(
                body_as(notification, FbsScoreNotification.ScoreNotification)
            )
            self.score = to_dict(body.score)
            self.safe_emit("score", self.score)
            self.observer.safe_emit("score", self.score)
        elif event == Event.CONSUMER_LAYERS_CHANGE:
            body = body_as(notification, FbsLayersChange.LayersChangeNotification)
            self.current_layers = parse_layers(body.Layers())
            self.safe_emit("layerschange", self.current_layers)
            self.observer.safe_emit("layerschange", self.current_layers)
        elif event == Event.CONSUMER_TRACE:
            trace = parse_trace(body_as(notification, FbsTraceNotification.TraceNotification), CONSUMER_TRACE_EVENT)
            self.safe_emit("trace", trace)
            self.observer.safe_emit("trace", trace)
        elif event == Event.CONSUMER_RTP:
            if not self.closed:
                body = body_as(notification, FbsRtpNotification.RtpNotification)
                self.safe_emit("rtp", byte_vector(body, 0))
        else:
            logger.error("ignoring unknown consumer event {}", event)

    def __repr__(self) -> str:
        return f"<Consumer id={self.id} kind={self.kind} closed={self.closed}>"


def _parse_rtp_stream(stream: Any) -> dict[str, Any]:
    """mediasoup's ``parseRtpStream``: an empty rid (or RTX rrid) is None."""
    dump = to_dict(stream)
    params = dump.get("params") or {}
    if not params.get("rid"):
        params["rid"] = None
    rtx = dump.get("rtxStream")
    if rtx and rtx.get("params") is not None and not rtx["params"].get("rrid"):
        rtx["params"]["rrid"] = None
    return {"params": params, "score": dump.get("score"), "rtxStream": rtx}


def parse_consumer_dump(data: Any) -> dict[str, Any]:
    """mediasoup's ``parseConsumerDumpResponse`` on an ``FBS.Consumer.ConsumerDump`` table."""
    dump_t = FbsConsumerDump.ConsumerDumpT.InitFromObj(data)
    base_table = data.Base()
    base_t = dump_t.base
    consumer_type = RTP_TYPE.get(base_t.type, base_t.type)
    encodings = [
        parse_rtp_encoding_parameters(base_table.ConsumableRtpEncodings(i))
        for i in range(base_table.ConsumableRtpEncodingsLength())
    ]
    dump: dict[str, Any] = {
        "id": to_dict(base_t.id),
        "producerId": to_dict(base_t.producerId),
        "kind": MEDIA_KIND.get(base_t.kind, base_t.kind),
        "rtpParameters": parse_rtp_parameters(base_table.RtpParameters()),
        "consumableRtpEncodings": encodings or None,
        "traceEventTypes": [CONSUMER_TRACE_EVENT.get(t, t) for t in vector(base_t.traceEventTypes)],
        "supportedCodecPayloadTypes": vector(base_t.supportedCodecPayloadTypes),
        "paused": base_t.paused,
        "producerPaused": base_t.producerPaused,
        "priority": base_t.priority,
        "type": consumer_type,
    }
    streams = [_parse_rtp_stream(stream) for stream in dump_t.rtpStreams or []]
    if consumer_type == "pipe":
        dump["rtpStreams"] = streams
        return dump
    dump["rtpStream"] = streams[0] if streams else None
    if consumer_type in ("simulcast", "svc"):
        for name in (
            "preferredSpatialLayer",
            "targetSpatialLayer",
            "currentSpatialLayer",
            "preferredTemporalLayer",
            "targetTemporalLayer",
            "currentTemporalLayer",
        ):
            dump[name] = getattr(dump_t, name)
    return dump


def parse_layers(layers: Any) -> dict[str, int] | None:
    if layers is None:
        return None
    result = {"spatialLayer": layers.SpatialLayer()}
    temporal = layers.TemporalLayer()
    if temporal is not None:
        result["temporalLayer"] = temporal
    return result

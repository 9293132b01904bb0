"""An RTP source in a router (mediasoup's ``Producer``).

Events: ``transportclose``, ``score``, ``videoorientationchange``, ``trace``.
Observer: ``close``, ``pause``, ``resume``, ``score``, ``videoorientationchange``,
``trace``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger

from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import MediasoupTypeError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_utils import (
    MEDIA_KIND,
    PRODUCER_TRACE_EVENT,
    RTP_TYPE,
    TRACE_DIRECTION,
    body_as,
    to_dict,
    unpack,
    vector,
)
from workers.rtp_parameters import parse_rtp_parameters
from workers.transport_child import TransportChild

import FBS.Notification.Body as FbsNotificationBody
import FBS.Notification.Event as FbsEvent
import FBS.Producer.DumpResponse as FbsDumpResponse
import FBS.Producer.EnableTraceEventRequest as FbsEnableTraceEvent
import FBS.Producer.GetStatsResponse as FbsGetStatsResponse
import FBS.Producer.ScoreNotification as FbsScoreNotification
import FBS.Producer.SendNotification as FbsSendNotification
import FBS.Producer.TraceNotification as FbsTraceNotification
import FBS.Producer.VideoOrientationChangeNotification as FbsVideoOrientation
import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod

if TYPE_CHECKING:
    from workers.transport import Transport

PRODUCER_TRACE_TYPES = {name: value for value, name in PRODUCER_TRACE_EVENT.items()}


class Producer(TransportChild):
    def __init__(
        self,
        producer_id: str,
        transport: Transport,
        *,
        kind: str,
        rtp_parameters: dict[str, Any],
        producer_type: int,
        consumable_rtp_parameters: dict[str, Any],
        paused: bool,
        app_data: dict[str, Any],
    ) -> None:
        super().__init__()
        self.id = producer_id
        self.transport = transport
        self.channel = transport.channel
        self.kind = kind
        self.rtp_parameters = rtp_parameters
        self.fbs_type = producer_type
        self.type = RTP_TYPE[producer_type]
        self.consumable_rtp_parameters = consumable_rtp_parameters
        self.paused = paused
        self.app_data = app_data
        self.score: list[dict[str, Any]] = []
        self.closed = False
        self.observer = EnhancedEventEmitter()
        self.channel.subscribe(self.id, self._on_notification)

    def _send_close_request(self) -> None:
        self.transport.close_producer_request(self.id)

    async def dump(self) -> dict[str, Any]:
        response = await self.channel.request(FbsMethod.Method.PRODUCER_DUMP, handler_id=self.id)
        table = body_as(response, FbsDumpResponse.DumpResponse)
        dump_t = FbsDumpResponse.DumpResponseT.InitFromObj(table)
        # mediasoup's parseProducerDump: RTP parameters in their JSON shape,
        # rtpMapping and rtpStreams as generic objects (rtpStreams absent if none).
        return {
            "id": to_dict(dump_t.id),
            "kind": MEDIA_KIND.get(dump_t.kind, dump_t.kind),
            "type": RTP_TYPE.get(dump_t.type, dump_t.type),
            "rtpParameters": parse_rtp_parameters(table.RtpParameters()),
            "rtpMapping": to_dict(dump_t.rtpMapping),
            "rtpStreams": to_dict(dump_t.rtpStreams) if dump_t.rtpStreams else None,
            "traceEventTypes": [PRODUCER_TRACE_EVENT.get(t, t) for t in vector(dump_t.traceEventTypes)],
            "paused": dump_t.paused,
        }

    async def get_stats(self) -> list[dict[str, Any]]:
        response = await self.channel.request(FbsMethod.Method.PRODUCER_GET_STATS, handler_id=self.id)
        stats = unpack(response, FbsGetStatsResponse.GetStatsResponse, FbsGetStatsResponse.GetStatsResponseT)
        return [_rtp_stream_stats(stat) for stat in stats.stats or []]

    async def pause(self) -> None:
        await self.channel.request(FbsMethod.Method.PRODUCER_PAUSE, handler_id=self.id)
        was_paused, self.paused = self.paused, True
        if not was_paused:
            self.observer.safe_emit("pause")

    async def resume(self) -> None:
        await self.channel.request(FbsMethod.Method.PRODUCER_RESUME, handler_id=self.id)
        was_paused, self.paused = self.paused, False
        if was_paused:
            self.observer.safe_emit("resume")

    async def enable_trace_event(self, types: list[str] | None = None) -> None:
        """Enable ``trace`` events: "rtp", "keyframe", "nack", "pli", "fir", "sr"."""
        types = types or []
        if not isinstance(types, list) or any(not isinstance(t, str) for t in types):
            raise MediasoupTypeError("types must be an array of strings")
        values = [PRODUCER_TRACE_TYPES[t] for t in types if t in PRODUCER_TRACE_TYPES]
        builder = self.channel.builder
        FbsEnableTraceEvent.StartEventsVector(builder, len(values))
        for value in reversed(values):
            builder.PrependUint8(value)
        events = builder.EndVector()
        FbsEnableTraceEvent.Start(builder)
        FbsEnableTraceEvent.AddEvents(builder, events)
        await self.channel.request(
            FbsMethod.Method.PRODUCER_ENABLE_TRACE_EVENT,
            FbsRequestBody.Body.Producer_EnableTraceEventRequest,
            FbsEnableTraceEvent.End(builder),
            self.id,
        )

    def send(self, rtp_packet: bytes) -> None:
        """Inject an RTP packet (DirectTransport producers)."""
        if not isinstance(rtp_packet, (bytes, bytearray, memoryview)):
            raise MediasoupTypeError("rtpPacket must be bytes")
        builder = self.channel.builder
        data = builder.CreateByteVector(bytes(rtp_packet))
        FbsSendNotification.Start(builder)
        FbsSendNotification.AddData(builder, data)
        self.channel.notify(
            FbsEvent.Event.PRODUCER_SEND,
            FbsNotificationBody.Body.Producer_SendNotification,
            FbsSendNotification.End(builder),
            self.id,
        )

    def _on_notification(self, event: int, notification: Any) -> None:
        if event == FbsEvent.Event.PRODUCER_SCORE:
            body = FbsScoreNotification.ScoreNotificationT.InitFromObj(
                body_as(notification, FbsScoreNotification.ScoreNotification)
            )
            self.score = to_dict(body.scores) or []
            self.safe_emit("score", self.score)
            self.observer.safe_emit("score", self.score)
        elif event == FbsEvent.Event.PRODUCER_VIDEO_ORIENTATION_CHANGE:
            body = body_as(notification, FbsVideoOrientation.VideoOrientationChangeNotification)
            orientation = {"camera": body.Camera(), "flip": body.Flip(), "rotation": body.Rotation()}
            self.safe_emit("videoorientationchange", orientation)
            self.observer.safe_emit("videoorientationchange", orientation)
        elif event == FbsEvent.Event.PRODUCER_TRACE:
            trace = parse_trace(body_as(notification, FbsTraceNotification.TraceNotification), PRODUCER_TRACE_EVENT)
            self.safe_emit("trace", trace)
            self.observer.safe_emit("trace", trace)
        else:
            logger.error("ignoring unknown producer event {}", event)

    def __repr__(self) -> str:
        return f"<Producer id={self.id} kind={self.kind} closed={self.closed}>"


def parse_trace(trace: Any, type_names: dict[int, str]) -> dict[str, Any]:
    """A producer or consumer trace notification as mediasoup's event dict."""
    obj = type(trace).__module__
    info = None
    if trace.Info() is not None:
        info_type = trace.InfoType()
        info = _union_info(obj, info_type, trace.Info())
    return {
        "type": type_names.get(trace.Type(), trace.Type()),
        "timestamp": trace.Timestamp(),
        "direction": TRACE_DIRECTION.get(trace.Direction()),
        "info": info or {},
    }


def _union_info(module_name: str, info_type: int, table: Any) -> dict[str, Any] | None:
    """Decode the ``info`` union of a trace notification via its generated ``...T`` class."""
    import importlib

    package = module_name.rsplit(".", 1)[0]
    union = importlib.import_module(f"{package}.TraceInfo")
    creator = getattr(union, "TraceInfoCreator", None)
    if creator is None:
        return None
    info: dict[str, Any] | None = to_dict(creator(info_type, table))
    return info


def _rtp_stream_stats(stat: Any) -> dict[str, Any]:
    """Flatten ``FBS.RtpStream.Stats`` (Recv/SendStats wrapping BaseStats) as mediasoup does.

    As mediasoup's ``parseRtpStreamStats``, the type follows the stats kind:
    receive stats are ``inbound-rtp``, send stats ``outbound-rtp``.
    """
    import FBS.RtpStream.RecvStats as FbsRecvStats

    is_recv = isinstance(stat.data, FbsRecvStats.RecvStatsT)
    flat = _flatten_stats(to_dict(stat.data))
    flat["type"] = "inbound-rtp" if is_recv else "outbound-rtp"
    if is_recv:
        flat["bitrateByLayer"] = {
            str(item.layer.decode() if isinstance(item.layer, bytes) else item.layer): item.bitrate
            for item in stat.data.bitrateByLayer or []
        }
    else:
        flat.pop("bitrateByLayer", None)
    if not flat.get("rid"):
        flat["rid"] = None
    if not flat.get("rtxPacketsDiscarded"):
        flat["rtxPacketsDiscarded"] = None
    return flat


def _flatten_stats(data: dict[str, Any]) -> dict[str, Any]:
    base = data.pop("base", None)
    flat: dict[str, Any] = {}
    if isinstance(base, dict):
        flat.update(_flatten_stats(base.get("data", base)))
    flat.update(data)
    return flat

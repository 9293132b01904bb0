"""Plain RTP/RTCP over UDP, optionally SRTP (mediasoup's ``PlainTransport``).

Used for FFmpeg/GStreamer endpoints (recording, broadcasters). Events:
``tuple``, ``rtcptuple``, ``sctpstatechange``, ``trace``.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from workers.errors import MediasoupTypeError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_utils import SRTP_CRYPTO_SUITE, body_as, to_dict, unpack
from workers.transport import Transport, parse_base_dump
from workers.wire import as_wire

import FBS.Notification.Event as FbsEvent
import FBS.PlainTransport.ConnectRequest as FbsConnectRequest
import FBS.PlainTransport.ConnectResponse as FbsConnectResponse
import FBS.PlainTransport.DumpResponse as FbsDumpResponse
import FBS.PlainTransport.GetStatsResponse as FbsGetStatsResponse
import FBS.PlainTransport.RtcpTupleNotification as FbsRtcpTupleNotification
import FBS.PlainTransport.TupleNotification as FbsTupleNotification
import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod
import FBS.SrtpParameters.SrtpParameters as FbsSrtpParameters

SRTP_CRYPTO_SUITES = {name: value for value, name in SRTP_CRYPTO_SUITE.items()}


def build_srtp_parameters(builder: Any, srtp_parameters: Any) -> int:
    params = as_wire(srtp_parameters)
    suite = params.get("cryptoSuite") if isinstance(params, dict) else None
    key = params.get("keyBase64") if isinstance(params, dict) else None
    if suite not in SRTP_CRYPTO_SUITES:
        raise MediasoupTypeError(f"invalid srtpParameters cryptoSuite {suite!r}")
    if not isinstance(key, str) or not key:
        raise MediasoupTypeError("missing srtpParameters keyBase64")
    key_offset = builder.CreateString(key)
    FbsSrtpParameters.Start(builder)
    FbsSrtpParameters.AddCryptoSuite(builder, SRTP_CRYPTO_SUITES[suite])
    FbsSrtpParameters.AddKeyBase64(builder, key_offset)
    offset: int = FbsSrtpParameters.End(builder)
    return offset


def parse_plain_transport_dump(dump_t: Any) -> dict[str, Any]:
    dump = to_dict(dump_t)
    dump.pop("base", None)
    return {**parse_base_dump(dump_t.base), **dump}


class PlainTransport(Transport):
    type = "plain"

    @property
    def tuple(self) -> dict[str, Any]:
        value: dict[str, Any] = self.data["tuple"]
        return value

    @property
    def rtcp_tuple(self) -> dict[str, Any] | None:
        return self.data.get("rtcpTuple")

    @property
    def srtp_parameters(self) -> dict[str, Any] | None:
        return self.data.get("srtpParameters")

    async def dump(self) -> dict[str, Any]:
        response = await self.request(FbsMethod.Method.TRANSPORT_DUMP)
        return parse_plain_transport_dump(unpack(response, FbsDumpResponse.DumpResponse, FbsDumpResponse.DumpResponseT))

    async def get_stats(self) -> list[dict[str, Any]]:
        response = await self.request(FbsMethod.Method.TRANSPORT_GET_STATS)
        stats = to_dict(unpack(response, FbsGetStatsResponse.GetStatsResponse, FbsGetStatsResponse.GetStatsResponseT))
        base = stats.pop("base", {}) or {}
        return [{"type": "plain-rtp-transport", **base, **stats}]

    async def connect(  # type: ignore[override]
        self,
        ip: str | None = None,
        port: int | None = None,
        rtcp_port: int | None = None,
        srtp_parameters: Any = None,
    ) -> None:
        """Set the remote address (unless ``comedia``) and, with SRTP, the remote key."""
        builder = self.channel.builder
        try:
            srtp_offset = build_srtp_parameters(builder, srtp_parameters) if srtp_parameters else 0
        except MediasoupTypeError:
            builder.Clear()
            raise
        ip_offset = builder.CreateString(ip) if ip else 0
        FbsConnectRequest.Start(builder)
        if ip_offset:
            FbsConnectRequest.AddIp(builder, ip_offset)
        if port is not None:
            FbsConnectRequest.AddPort(builder, int(port))
        if rtcp_port is not None:
            FbsConnectRequest.AddRtcpPort(builder, int(rtcp_port))
        if srtp_offset:
            FbsConnectRequest.AddSrtpParameters(builder, srtp_offset)
        response = await self.request(
            FbsMethod.Method.PLAINTRANSPORT_CONNECT,
            FbsRequestBody.Body.PlainTransport_ConnectRequest,
            FbsConnectRequest.End(builder),
        )
        body = to_dict(unpack(response, FbsConnectResponse.ConnectResponse, FbsConnectResponse.ConnectResponseT))
        if body.get("tuple"):
            self.data["tuple"] = body["tuple"]
        if body.get("rtcpTuple"):
            self.data["rtcpTuple"] = body["rtcpTuple"]
        if body.get("srtpParameters"):
            self.data["srtpParameters"] = body["srtpParameters"]

    def _on_specific_notification(self, event: int, notification: Any) -> None:
        Event = FbsEvent.Event
        if event == Event.PLAINTRANSPORT_TUPLE:
            body = FbsTupleNotification.TupleNotificationT.InitFromObj(
                body_as(notification, FbsTupleNotification.TupleNotification)
            )
            self.data["tuple"] = to_dict(body.tuple)
            self.safe_emit("tuple", self.data["tuple"])
            self.observer.safe_emit("tuple", self.data["tuple"])
        elif event == Event.PLAINTRANSPORT_RTCP_TUPLE:
            body = FbsRtcpTupleNotification.RtcpTupleNotificationT.InitFromObj(
                body_as(notification, FbsRtcpTupleNotification.RtcpTupleNotification)
            )
            self.data["rtcpTuple"] = to_dict(body.tuple)
            self.safe_emit("rtcptuple", self.data["rtcpTuple"])
            self.observer.safe_emit("rtcptuple", self.data["rtcpTuple"])
        elif event == Event.TRANSPORT_SCTP_NEGOTIATED_CAPABILITIES:
            self._on_sctp_negotiated_capabilities(notification)
        else:
            logger.error("ignoring unknown PlainTransport event {}", event)

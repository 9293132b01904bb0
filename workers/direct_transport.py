"""A transport whose far end is this Python process (mediasoup's ``DirectTransport``).

No network: RTP enters through ``producer.send(packet)`` on producers of this
transport and leaves as ``rtp`` events of its consumers; data messages go
through direct DataProducers/DataConsumers. RTCP the router sends towards
the endpoint arrives as ``rtcp`` events, and ``send_rtcp()`` injects RTCP
from it. Useful for server-side media (bots, injected audio) and tests.

Events: ``rtcp``, ``trace``, ``routerclose``, ``listenserverclose``.
Observer: the base transport's plus ``trace``.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from workers.errors import MediasoupTypeError, UnsupportedError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_utils import body_as, byte_vector, to_dict, unpack
from workers.transport import Transport, parse_base_dump

import FBS.DirectTransport.DumpResponse as FbsDumpResponse
import FBS.DirectTransport.GetStatsResponse as FbsGetStatsResponse
import FBS.DirectTransport.RtcpNotification as FbsRtcpNotification
import FBS.Notification.Body as FbsNotificationBody
import FBS.Notification.Event as FbsEvent
import FBS.Request.Method as FbsMethod
import FBS.Transport.SendRtcpNotification as FbsSendRtcpNotification


def parse_direct_transport_dump(dump_t: Any) -> dict[str, Any]:
    """mediasoup's ``parseDirectTransportDumpResponse``: just the base dump."""
    return parse_base_dump(dump_t.base)


class DirectTransport(Transport):
    type = "direct"

    async def dump(self) -> dict[str, Any]:
        response = await self.request(FbsMethod.Method.TRANSPORT_DUMP)
        return parse_direct_transport_dump(
            unpack(response, FbsDumpResponse.DumpResponse, FbsDumpResponse.DumpResponseT)
        )

    async def get_stats(self) -> list[dict[str, Any]]:
        response = await self.request(FbsMethod.Method.TRANSPORT_GET_STATS)
        stats = to_dict(unpack(response, FbsGetStatsResponse.GetStatsResponse, FbsGetStatsResponse.GetStatsResponseT))
        return [{**(stats.get("base") or {}), "type": "direct-transport"}]

    async def connect(self, **_params: Any) -> None:
        """Nothing to connect: the far end is this process."""

    # Bitrate limits belong to congestion control over a network path, which a
    # DirectTransport does not have; mediasoup refuses them.

    async def set_max_incoming_bitrate(self, bitrate: int) -> None:
        raise UnsupportedError("setMaxIncomingBitrate() not implemented in DirectTransport")

    async def set_max_outgoing_bitrate(self, bitrate: int) -> None:
        raise UnsupportedError("setMaxOutgoingBitrate() not implemented in DirectTransport")

    async def set_min_outgoing_bitrate(self, bitrate: int) -> None:
        raise UnsupportedError("setMinOutgoingBitrate() not implemented in DirectTransport")

    def send_rtcp(self, rtcp_packet: bytes) -> None:
        """Inject an RTCP (compound) packet as if the endpoint had sent it."""
        if not isinstance(rtcp_packet, (bytes, bytearray, memoryview)):
            raise MediasoupTypeError("rtcpPacket must be bytes")
        builder = self.channel.builder
        data = builder.CreateByteVector(bytes(rtcp_packet))
        FbsSendRtcpNotification.Start(builder)
        FbsSendRtcpNotification.AddData(builder, data)
        self.channel.notify(
            FbsEvent.Event.TRANSPORT_SEND_RTCP,
            FbsNotificationBody.Body.Transport_SendRtcpNotification,
            FbsSendRtcpNotification.End(builder),
            self.id,
        )

    def _on_specific_notification(self, event: int, notification: Any) -> None:
        if event == FbsEvent.Event.DIRECTTRANSPORT_RTCP:
            if not self.closed:
                body = body_as(notification, FbsRtcpNotification.RtcpNotification)
                self.safe_emit("rtcp", byte_vector(body, 0))
        else:
            logger.error("ignoring unknown DirectTransport event {}", event)

"""RTP (and SCTP) between two routers (mediasoup's ``PipeTransport``).

A pipe transport is a plain UDP transport whose far end is another pipe
transport, usually on a router of another worker: ``Router.pipe_to_router()``
creates and connects such a pair, consumes a producer on one side and produces
it again on the other. Pipe consumers keep every encoding of the producer (the
receiving router does the simulcast/SVC selection), so they have their own
``consume()``; producers on a pipe transport keep their CNAME.

Events: ``sctpstatechange``, ``trace``, ``routerclose``, ``listenserverclose``.
Observer: the base transport's plus ``sctpstatechange`` and ``trace``.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from workers import ortc
from workers.consumer import Consumer
from workers.errors import MediasoupTypeError, NotFoundError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_utils import body_as, to_dict, unpack
from workers.plain_transport import build_srtp_parameters
from workers.rtp_parameters import serialize_rtp_encoding_parameters, serialize_rtp_parameters
from workers.transport import Transport, _media_kind, check_app_data, parse_base_dump
from workers.wire import new_id

import FBS.Notification.Event as FbsEvent
import FBS.PipeTransport.ConnectRequest as FbsConnectRequest
import FBS.PipeTransport.ConnectResponse as FbsConnectResponse
import FBS.PipeTransport.DumpResponse as FbsDumpResponse
import FBS.PipeTransport.GetStatsResponse as FbsGetStatsResponse
import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod
import FBS.RtpParameters.Type as FbsRtpType
import FBS.Transport.ConsumeRequest as FbsConsumeRequest
import FBS.Transport.ConsumeResponse as FbsConsumeResponse


def parse_pipe_transport_dump(dump_t: Any) -> dict[str, Any]:
    """mediasoup's ``parsePipeTransportDumpResponse``: base dump + tuple, rtx, srtpParameters."""
    dump = to_dict(dump_t)
    dump.pop("base", None)
    if dump.get("srtpParameters") is None:
        dump.pop("srtpParameters", None)
    return {**parse_base_dump(dump_t.base), **dump}


class PipeTransport(Transport):
    type = "pipe"

    @property
    def tuple(self) -> dict[str, Any]:
        value: dict[str, Any] = self.data["tuple"]
        return value

    @property
    def srtp_parameters(self) -> dict[str, Any] | None:
        """Our SRTP key (with ``enable_srtp``): give it to the other end's ``connect()``."""
        return self.data.get("srtpParameters")

    @property
    def rtx(self) -> bool:
        """Whether pipe consumers on this transport carry RTX (``enable_rtx``)."""
        return bool(self.data.get("rtx"))

    @property
    def sctp_negotiated_capabilities(self) -> dict[str, int] | None:
        return self.data.get("sctpNegotiatedCapabilities")

    # -- requests --------------------------------------------------------------------

    async def dump(self) -> dict[str, Any]:
        response = await self.request(FbsMethod.Method.TRANSPORT_DUMP)
        return parse_pipe_transport_dump(unpack(response, FbsDumpResponse.DumpResponse, FbsDumpResponse.DumpResponseT))

    async def get_stats(self) -> list[dict[str, Any]]:
        response = await self.request(FbsMethod.Method.TRANSPORT_GET_STATS)
        stats = to_dict(unpack(response, FbsGetStatsResponse.GetStatsResponse, FbsGetStatsResponse.GetStatsResponseT))
        base = stats.pop("base", {}) or {}
        return [{**base, "type": "pipe-transport", "tuple": stats.get("tuple")}]

    async def connect(  # type: ignore[override]
        self, ip: str | None = None, port: int | None = None, srtp_parameters: Any = None
    ) -> None:
        """Point the transport at the other pipe transport (and give it its SRTP key).

        The worker refuses SRTP parameters when SRTP is off and requires them
        when it is on (``MediasoupTypeError`` either way).
        """
        builder = self.channel.builder
        try:
            srtp_offset = build_srtp_parameters(builder, srtp_parameters) if srtp_parameters is not None else 0
        except MediasoupTypeError:
            builder.Clear()
            raise
        ip_offset = builder.CreateString(ip) if ip else 0
        FbsConnectRequest.Start(builder)
        if ip_offset:
            FbsConnectRequest.AddIp(builder, ip_offset)
        if port is not None:
            FbsConnectRequest.AddPort(builder, int(port))
        if srtp_offset:
            FbsConnectRequest.AddSrtpParameters(builder, srtp_offset)
        response = await self.request(
            FbsMethod.Method.PIPETRANSPORT_CONNECT,
            FbsRequestBody.Body.PipeTransport_ConnectRequest,
            FbsConnectRequest.End(builder),
        )
        body = to_dict(unpack(response, FbsConnectResponse.ConnectResponse, FbsConnectResponse.ConnectResponseT))
        if body.get("tuple"):
            self.data["tuple"] = body["tuple"]

    # -- consuming -------------------------------------------------------------------

    async def consume(
        self,
        producer_id: str,
        rtp_capabilities: Any = None,
        *,
        app_data: dict[str, Any] | None = None,
        **_ignored: Any,
    ) -> Consumer:
        """Create a pipe Consumer of ``producer_id`` (mediasoup's ``PipeTransport.consume``).

        The far end is a router, not an endpoint: no capabilities to match
        (``rtp_capabilities`` and the other ``Transport.consume`` options are
        ignored, as mediasoup ignores them), every encoding is kept with new
        SSRCs, and RTX only if the transport was created with ``enable_rtx``.
        """
        if not producer_id or not isinstance(producer_id, str):
            raise MediasoupTypeError("missing producerId")
        app_data = check_app_data(app_data)
        producer = self.router.producers.get(producer_id)
        if producer is None:
            raise NotFoundError(f'Producer with id "{producer_id}" not found')
        rtp_parameters = ortc.get_pipe_consumer_rtp_parameters(
            consumable_rtp_parameters=producer.consumable_rtp_parameters, enable_rtx=self.rtx
        )
        consumer_id = new_id()
        offset = self._build_pipe_consume_request(consumer_id, producer, rtp_parameters)
        response = await self.request(
            FbsMethod.Method.TRANSPORT_CONSUME, FbsRequestBody.Body.Transport_ConsumeRequest, offset
        )
        status = body_as(response, FbsConsumeResponse.ConsumeResponse)
        consumer = Consumer(
            consumer_id,
            self,
            producer_id=producer_id,
            kind=producer.kind,
            rtp_parameters=rtp_parameters,
            consumer_type="pipe",
            paused=status.Paused(),
            producer_paused=status.ProducerPaused(),
            score=None,
            preferred_layers=None,
            app_data=app_data,
        )
        self.consumers[consumer_id] = consumer
        consumer.once("@close", lambda: self.consumers.pop(consumer_id, None))
        consumer.once("@producerclose", lambda: self.consumers.pop(consumer_id, None))
        self.observer.safe_emit("newconsumer", consumer)
        return consumer

    def _build_pipe_consume_request(self, consumer_id: str, producer: Any, rtp_parameters: dict[str, Any]) -> int:
        """mediasoup's pipe ``createConsumeRequest``: type PIPE, no paused/layers/DTX options."""
        builder = self.channel.builder
        producer_offset = builder.CreateString(producer.id)
        consumer_offset = builder.CreateString(consumer_id)
        params_offset = serialize_rtp_parameters(builder, rtp_parameters)
        encodings = producer.consumable_rtp_parameters.get("encodings")
        encodings_offset = serialize_rtp_encoding_parameters(builder, encodings) if encodings else 0
        FbsConsumeRequest.Start(builder)
        FbsConsumeRequest.AddConsumerId(builder, consumer_offset)
        FbsConsumeRequest.AddProducerId(builder, producer_offset)
        FbsConsumeRequest.AddKind(builder, _media_kind(producer.kind))
        FbsConsumeRequest.AddRtpParameters(builder, params_offset)
        FbsConsumeRequest.AddType(builder, FbsRtpType.Type.PIPE)
        if encodings_offset:
            FbsConsumeRequest.AddConsumableRtpEncodings(builder, encodings_offset)
        offset: int = FbsConsumeRequest.End(builder)
        return offset

    # -- notifications ---------------------------------------------------------------

    def _on_specific_notification(self, event: int, notification: Any) -> None:
        if event == FbsEvent.Event.TRANSPORT_SCTP_NEGOTIATED_CAPABILITIES:
            self._on_sctp_negotiated_capabilities(notification)
        else:
            logger.error("ignoring unknown PipeTransport event {}", event)

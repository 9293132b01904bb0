"""A sink of data messages, fed by one data producer (mediasoup's ``DataConsumer``).

On an SCTP transport the worker delivers the messages to the endpoint; on a
DirectTransport (type ``direct``) they come up to Python as ``message``
events instead. Subchannels let one data producer address a subset of its
consumers (see ``DataProducer.send``).

Events: ``transportclose``, ``dataproducerclose``, ``dataproducerpause``,
``dataproducerresume``, ``message`` (``bytes``, ``ppid``: like mediasoup's
Buffer, the payload is always bytes; PPID 51/56 mean it is UTF-8 text),
``sctpsendbufferfull``, ``bufferedamountlow`` (``buffered_amount``).
Observer: ``close``, ``pause``, ``resume``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger

from workers.data_producer import (
    DATA_TYPES,
    build_stream_parameters,
    build_uint16_vector,
    check_subchannels,
    message_payload,
)
from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import MediasoupTypeError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_utils import DATA_TYPE, body_as, byte_vector, str_or_none
from workers.sctp_parameters import parse_sctp_stream_parameters
from workers.transport_child import TransportChild

import FBS.DataConsumer.AddSubchannelRequest as FbsAddSubchannelRequest
import FBS.DataConsumer.AddSubchannelResponse as FbsAddSubchannelResponse
import FBS.DataConsumer.BufferedAmountLowNotification as FbsBufferedAmountLow
import FBS.DataConsumer.DumpResponse as FbsDumpResponse
import FBS.DataConsumer.GetBufferedAmountResponse as FbsGetBufferedAmountResponse
import FBS.DataConsumer.GetStatsResponse as FbsGetStatsResponse
import FBS.DataConsumer.MessageNotification as FbsMessageNotification
import FBS.DataConsumer.RemoveSubchannelRequest as FbsRemoveSubchannelRequest
import FBS.DataConsumer.RemoveSubchannelResponse as FbsRemoveSubchannelResponse
import FBS.DataConsumer.SendRequest as FbsSendRequest
import FBS.DataConsumer.SendResponse as FbsSendResponse
import FBS.DataConsumer.SetBufferedAmountLowThresholdRequest as FbsSetThresholdRequest
import FBS.DataConsumer.SetSubchannelsRequest as FbsSetSubchannelsRequest
import FBS.DataConsumer.SetSubchannelsResponse as FbsSetSubchannelsResponse
import FBS.Notification.Event as FbsEvent
import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod
import FBS.Transport.ConsumeDataRequest as FbsConsumeDataRequest

if TYPE_CHECKING:
    from workers.data_producer import DataProducer
    from workers.transport import Transport

_MESSAGE_DATA_FIELD = 1  # MessageNotification: ppid (0), data (1)


def _subchannels(table: Any) -> list[int]:
    """The ``subchannels`` vector of a response table."""
    return [table.Subchannels(index) for index in range(table.SubchannelsLength())]


def parse_data_consumer_dump(dump: Any) -> dict[str, Any]:
    """mediasoup's ``parseDataConsumerDumpResponse`` (from the table API)."""
    stream = dump.SctpStreamParameters()
    return {
        "id": str_or_none(dump.Id()),
        "dataProducerId": str_or_none(dump.DataProducerId()),
        "type": DATA_TYPE[dump.Type()],
        "sctpStreamParameters": parse_sctp_stream_parameters(stream) if stream is not None else None,
        "label": str_or_none(dump.Label()) or "",
        "protocol": str_or_none(dump.Protocol()) or "",
        "bufferedAmount": dump.BufferedAmount(),
        "bufferedAmountLowThreshold": dump.BufferedAmountLowThreshold(),
        "paused": dump.Paused(),
        "dataProducerPaused": dump.DataProducerPaused(),
        "subchannels": _subchannels(dump),
    }


def _check_uint(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MediasoupTypeError(f"{name} must be a non negative number")
    return value


class DataConsumer(TransportChild):
    def __init__(
        self,
        data_consumer_id: str,
        transport: Transport,
        *,
        dump: dict[str, Any],
        app_data: dict[str, Any],
    ) -> None:
        super().__init__()
        self.id = data_consumer_id
        self.transport = transport
        self.channel = transport.channel
        self.data_producer_id: str = dump["dataProducerId"]
        self.type: str = dump["type"]
        self._sctp_stream_parameters: dict[str, Any] | None = dump["sctpStreamParameters"]
        self.label: str = dump["label"]
        self.protocol: str = dump["protocol"]
        self.buffered_amount_low_threshold: int = dump["bufferedAmountLowThreshold"]
        self.paused: bool = dump["paused"]
        self.data_producer_paused: bool = dump["dataProducerPaused"]
        self._subchannels: list[int] = list(dump["subchannels"])
        self.app_data = app_data
        self.closed = False
        self.observer = EnhancedEventEmitter()
        self.channel.subscribe(self.id, self._on_notification)

    @classmethod
    async def create(
        cls,
        transport: Transport,
        data_consumer_id: str,
        data_producer: DataProducer,
        data_type: str,
        sctp_stream_parameters: dict[str, Any] | None,
        paused: bool,
        subchannels: list[int],
        app_data: dict[str, Any],
    ) -> DataConsumer:
        """Ask the worker for the data consumer (``TRANSPORT_CONSUME_DATA``); its
        label and protocol are the data producer's, as in mediasoup."""
        subchannels = check_subchannels(subchannels)
        builder = transport.channel.builder
        id_offset = builder.CreateString(data_consumer_id)
        producer_offset = builder.CreateString(data_producer.id)
        label_offset = builder.CreateString(data_producer.label)
        protocol_offset = builder.CreateString(data_producer.protocol)
        stream_offset = build_stream_parameters(builder, sctp_stream_parameters)
        subchannels_offset = build_uint16_vector(builder, FbsConsumeDataRequest.StartSubchannelsVector, subchannels)
        FbsConsumeDataRequest.Start(builder)
        FbsConsumeDataRequest.AddDataConsumerId(builder, id_offset)
        FbsConsumeDataRequest.AddDataProducerId(builder, producer_offset)
        FbsConsumeDataRequest.AddType(builder, DATA_TYPES[data_type])
        if stream_offset:
            FbsConsumeDataRequest.AddSctpStreamParameters(builder, stream_offset)
        FbsConsumeDataRequest.AddLabel(builder, label_offset)
        FbsConsumeDataRequest.AddProtocol(builder, protocol_offset)
        FbsConsumeDataRequest.AddPaused(builder, bool(paused))
        FbsConsumeDataRequest.AddSubchannels(builder, subchannels_offset)
        response = await transport.request(
            FbsMethod.Method.TRANSPORT_CONSUME_DATA,
            FbsRequestBody.Body.Transport_ConsumeDataRequest,
            FbsConsumeDataRequest.End(builder),
        )
        dump = parse_data_consumer_dump(body_as(response, FbsDumpResponse.DumpResponse))
        return cls(data_consumer_id, transport, dump=dump, app_data=app_data)

    @property
    def sctp_stream_parameters(self) -> dict[str, Any] | None:
        """A copy: callers may not change ours."""
        params = self._sctp_stream_parameters
        return dict(params) if params is not None else None

    @property
    def subchannels(self) -> list[int]:
        return list(self._subchannels)

    # -- lifecycle -------------------------------------------------------------------

    def _send_close_request(self) -> None:
        self.transport.close_data_consumer_request(self.id)

    # -- requests --------------------------------------------------------------------

    def _request(self, method: int, body_type: int = 0, offset: int = 0) -> Any:
        return self.channel.request(method, body_type, offset, self.id)

    async def dump(self) -> dict[str, Any]:
        response = await self._request(FbsMethod.Method.DATACONSUMER_DUMP)
        return parse_data_consumer_dump(body_as(response, FbsDumpResponse.DumpResponse))

    async def get_stats(self) -> list[dict[str, Any]]:
        response = await self._request(FbsMethod.Method.DATACONSUMER_GET_STATS)
        stats = body_as(response, FbsGetStatsResponse.GetStatsResponse)
        return [
            {
                "type": "data-consumer",
                "timestamp": stats.Timestamp(),
                "label": str_or_none(stats.Label()) or "",
                "protocol": str_or_none(stats.Protocol()) or "",
                "messagesSent": stats.MessagesSent(),
                "bytesSent": stats.BytesSent(),
                "bufferedAmount": stats.BufferedAmount(),
            }
        ]

    async def pause(self) -> None:
        await self._request(FbsMethod.Method.DATACONSUMER_PAUSE)
        was_paused, self.paused = self.paused, True
        if not was_paused and not self.data_producer_paused:
            self.observer.safe_emit("pause")

    async def resume(self) -> None:
        await self._request(FbsMethod.Method.DATACONSUMER_RESUME)
        was_paused, self.paused = self.paused, False
        if was_paused and not self.data_producer_paused:
            self.observer.safe_emit("resume")

    async def set_buffered_amount_low_threshold(self, threshold: int) -> None:
        """``bufferedamountlow`` fires when the SCTP send buffer drains below this."""
        threshold = _check_uint(threshold, "threshold")
        builder = self.channel.builder
        FbsSetThresholdRequest.Start(builder)
        FbsSetThresholdRequest.AddThreshold(builder, threshold)
        await self._request(
            FbsMethod.Method.DATACONSUMER_SET_BUFFERED_AMOUNT_LOW_THRESHOLD,
            FbsRequestBody.Body.DataConsumer_SetBufferedAmountLowThresholdRequest,
            FbsSetThresholdRequest.End(builder),
        )
        self.buffered_amount_low_threshold = threshold

    async def get_buffered_amount(self) -> int:
        response = await self._request(FbsMethod.Method.DATACONSUMER_GET_BUFFERED_AMOUNT)
        buffered_amount: int = body_as(
            response, FbsGetBufferedAmountResponse.GetBufferedAmountResponse
        ).BufferedAmount()
        return buffered_amount

    async def send(self, message: str | bytes, ppid: int | None = None) -> int:
        """Send a message to this consumer's endpoint only (not through a data
        producer); returns the SCTP buffered amount. PPIDs as in ``DataProducer.send``."""
        payload, ppid = message_payload(message, ppid)
        builder = self.channel.builder
        data_offset = builder.CreateByteVector(payload)
        FbsSendRequest.Start(builder)
        FbsSendRequest.AddPpid(builder, ppid)
        FbsSendRequest.AddData(builder, data_offset)
        response = await self._request(
            FbsMethod.Method.DATACONSUMER_SEND,
            FbsRequestBody.Body.DataConsumer_SendRequest,
            FbsSendRequest.End(builder),
        )
        if response.Body() is None:
            return 0
        buffered_amount: int = body_as(response, FbsSendResponse.SendResponse).BufferedAmount()
        return buffered_amount

    async def set_subchannels(self, subchannels: list[int]) -> None:
        """Replace the subchannels; ours become what the worker kept (deduplicated)."""
        subchannels = check_subchannels(subchannels)
        builder = self.channel.builder
        vector = build_uint16_vector(builder, FbsSetSubchannelsRequest.StartSubchannelsVector, subchannels)
        FbsSetSubchannelsRequest.Start(builder)
        FbsSetSubchannelsRequest.AddSubchannels(builder, vector)
        response = await self._request(
            FbsMethod.Method.DATACONSUMER_SET_SUBCHANNELS,
            FbsRequestBody.Body.DataConsumer_SetSubchannelsRequest,
            FbsSetSubchannelsRequest.End(builder),
        )
        self._subchannels = _subchannels(body_as(response, FbsSetSubchannelsResponse.SetSubchannelsResponse))

    async def add_subchannel(self, subchannel: int) -> None:
        subchannel = check_subchannels([subchannel])[0]
        builder = self.channel.builder
        FbsAddSubchannelRequest.Start(builder)
        FbsAddSubchannelRequest.AddSubchannel(builder, subchannel)
        response = await self._request(
            FbsMethod.Method.DATACONSUMER_ADD_SUBCHANNEL,
            FbsRequestBody.Body.DataConsumer_AddSubchannelRequest,
            FbsAddSubchannelRequest.End(builder),
        )
        self._subchannels = _subchannels(body_as(response, FbsAddSubchannelResponse.AddSubchannelResponse))

    async def remove_subchannel(self, subchannel: int) -> None:
        subchannel = check_subchannels([subchannel])[0]
        builder = self.channel.builder
        FbsRemoveSubchannelRequest.Start(builder)
        FbsRemoveSubchannelRequest.AddSubchannel(builder, subchannel)
        response = await self._request(
            FbsMethod.Method.DATACONSUMER_REMOVE_SUBCHANNEL,
            FbsRequestBody.Body.DataConsumer_RemoveSubchannelRequest,
            FbsRemoveSubchannelRequest.End(builder),
        )
        self._subchannels = _subchannels(body_as(response, FbsRemoveSubchannelResponse.RemoveSubchannelResponse))

    # -- notifications ---------------------------------------------------------------

    def _on_notification(self, event: int, notification: Any) -> None:
        Event = FbsEvent.Event
        if event == Event.DATACONSUMER_MESSAGE:
            if not self.closed:
                body = body_as(notification, FbsMessageNotification.MessageNotification)
                self.safe_emit("message", byte_vector(body, _MESSAGE_DATA_FIELD), body.Ppid())
        elif event == Event.DATACONSUMER_DATAPRODUCER_CLOSE:
            self._on_data_producer_closed()
        elif event == Event.DATACONSUMER_DATAPRODUCER_PAUSE:
            if self.data_producer_paused:
                return
            self.data_producer_paused = True
            self.safe_emit("dataproducerpause")
            if not self.paused:
                self.observer.safe_emit("pause")
        elif event == Event.DATACONSUMER_DATAPRODUCER_RESUME:
            if not self.data_producer_paused:
                return
            self.data_producer_paused = False
            self.safe_emit("dataproducerresume")
            if not self.paused:
                self.observer.safe_emit("resume")
        elif event == Event.DATACONSUMER_SCTP_SENDBUFFER_FULL:
            self.safe_emit("sctpsendbufferfull")
        elif event == Event.DATACONSUMER_BUFFERED_AMOUNT_LOW:
            body = body_as(notification, FbsBufferedAmountLow.BufferedAmountLowNotification)
            self.safe_emit("bufferedamountlow", body.BufferedAmount())
        else:
            logger.error("ignoring unknown data consumer event {}", event)

    def _on_data_producer_closed(self) -> None:
        """The worker closed us with our data producer: a close we did not ask for."""
        if self.closed:
            return
        self.closed = True
        self.channel.unsubscribe(self.id)
        self.emit("@dataproducerclose")
        self.safe_emit("dataproducerclose")
        self.observer.safe_emit("close")

    def __repr__(self) -> str:
        return f"<DataConsumer id={self.id} type={self.type} closed={self.closed}>"

"""A source of data messages in a router (mediasoup's ``DataProducer``).

A data producer is either ``sctp`` (its messages come from an endpoint over an
SCTP association: WebRtcTransport, PlainTransport, PipeTransport) or ``direct``
(on a DirectTransport: the application injects messages with ``send()``).
The worker sends no notifications for data producers, so there is nothing to
subscribe to; its data consumers learn about pause/resume/close themselves.

Events: ``transportclose``. Observer: ``close``, ``pause``, ``resume``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import MediasoupTypeError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_utils import DATA_TYPE, body_as, str_or_none
from workers.sctp_parameters import parse_sctp_stream_parameters, serialize_sctp_stream_parameters
from workers.transport_child import TransportChild

import FBS.DataProducer.DumpResponse as FbsDumpResponse
import FBS.DataProducer.GetStatsResponse as FbsGetStatsResponse
import FBS.DataProducer.SendNotification as FbsSendNotification
import FBS.Notification.Body as FbsNotificationBody
import FBS.Notification.Event as FbsEvent
import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod
import FBS.Transport.ProduceDataRequest as FbsProduceDataRequest

if TYPE_CHECKING:
    from workers.transport import Transport

DATA_TYPES = {name: value for value, name in DATA_TYPE.items()}

# SCTP payload protocol identifiers of WebRTC DataChannels (RFC 8831).
PPID_STRING = 51
PPID_BINARY = 53
PPID_STRING_EMPTY = 56
PPID_BINARY_EMPTY = 57


def message_payload(message: str | bytes, ppid: int | None) -> tuple[bytes, int]:
    """The bytes and PPID to send for ``message``, as mediasoup's ``send()`` picks them.

    An empty message cannot travel over SCTP, so WebRTC marks it with the
    "empty" PPIDs and sends one placeholder byte (a space, or a zero byte).
    """
    if isinstance(message, str):
        is_string = True
    elif isinstance(message, (bytes, bytearray, memoryview)):
        is_string = False
    else:
        raise MediasoupTypeError("message must be a string or bytes")
    if ppid is None:
        if is_string:
            ppid = PPID_STRING if message else PPID_STRING_EMPTY
        else:
            ppid = PPID_BINARY if len(message) else PPID_BINARY_EMPTY
    elif not isinstance(ppid, int) or isinstance(ppid, bool):
        raise MediasoupTypeError("if given, ppid must be a number")
    if ppid == PPID_STRING_EMPTY:
        return b" ", ppid
    if ppid == PPID_BINARY_EMPTY:
        return b"\x00", ppid
    return (message.encode() if isinstance(message, str) else bytes(message)), ppid


def check_subchannels(subchannels: Any) -> list[int]:
    """Subchannels as 16-bit values, checked before anything is built.

    Values wrap to 16 bits as in mediasoup's typed-array serialisation (65536
    is subchannel 0); the worker drops duplicates.
    """
    if subchannels is None:
        return []
    if not isinstance(subchannels, (list, tuple)) or any(
        not isinstance(value, int) or isinstance(value, bool) for value in subchannels
    ):
        raise MediasoupTypeError("subchannels must be an array of numbers")
    return [value & 0xFFFF for value in subchannels]


def check_subchannel(subchannel: Any, name: str) -> int | None:
    if subchannel is None:
        return None
    if not isinstance(subchannel, int) or isinstance(subchannel, bool):
        raise MediasoupTypeError(f"if given, {name} must be a number")
    return subchannel & 0xFFFF


def build_uint16_vector(builder: Any, start_vector: Any, values: list[int]) -> int:
    """A ``[uint16]`` vector of already checked values (see ``check_subchannels``)."""
    start_vector(builder, len(values))
    for value in reversed(values):
        builder.PrependUint16(value)
    offset: int = builder.EndVector()
    return offset


def build_stream_parameters(builder: Any, params: dict[str, Any] | None) -> int:
    """Serialise SCTP stream parameters (0 if none); a value that does not fit
    its field is the caller's error, and must not leave the shared builder dirty."""
    if not params:
        return 0
    try:
        return serialize_sctp_stream_parameters(builder, params)
    except (struct.error, TypeError, KeyError) as error:
        builder.Clear()
        raise MediasoupTypeError(f"invalid sctpStreamParameters: {error}") from error


def parse_data_producer_dump(dump: Any) -> dict[str, Any]:
    """mediasoup's ``parseDataProducerDumpResponse`` (from the table API)."""
    stream = dump.SctpStreamParameters()
    return {
        "id": str_or_none(dump.Id()),
        "type": DATA_TYPE[dump.Type()],
        "sctpStreamParameters": parse_sctp_stream_parameters(stream) if stream is not None else None,
        "label": str_or_none(dump.Label()) or "",
        "protocol": str_or_none(dump.Protocol()) or "",
        "paused": dump.Paused(),
    }


class DataProducer(TransportChild):
    def __init__(
        self,
        data_producer_id: str,
        transport: Transport,
        *,
        data_type: str,
        sctp_stream_parameters: dict[str, Any] | None,
        label: str,
        protocol: str,
        paused: bool,
        app_data: dict[str, Any],
    ) -> None:
        super().__init__()
        self.id = data_producer_id
        self.transport = transport
        self.channel = transport.channel
        self.type = data_type
        self._sctp_stream_parameters = sctp_stream_parameters
        self.label = label
        self.protocol = protocol
        self.paused = paused
        self.app_data = app_data
        self.closed = False
        self.observer = EnhancedEventEmitter()

    @classmethod
    async def create(
        cls,
        transport: Transport,
        data_producer_id: str,
        data_type: str,
        sctp_stream_parameters: dict[str, Any] | None,
        label: str,
        protocol: str,
        paused: bool,
        app_data: dict[str, Any],
    ) -> DataProducer:
        """Ask the worker for the data producer (``TRANSPORT_PRODUCE_DATA``);
        what it answers (its dump) is what the object holds."""
        if not isinstance(label, str) or not isinstance(protocol, str):
            raise MediasoupTypeError("label and protocol must be strings")
        builder = transport.channel.builder
        id_offset = builder.CreateString(data_producer_id)
        label_offset = builder.CreateString(label)
        protocol_offset = builder.CreateString(protocol)
        stream_offset = build_stream_parameters(builder, sctp_stream_parameters)
        FbsProduceDataRequest.Start(builder)
        FbsProduceDataRequest.AddDataProducerId(builder, id_offset)
        FbsProduceDataRequest.AddType(builder, DATA_TYPES[data_type])
        if stream_offset:
            FbsProduceDataRequest.AddSctpStreamParameters(builder, stream_offset)
        FbsProduceDataRequest.AddLabel(builder, label_offset)
        FbsProduceDataRequest.AddProtocol(builder, protocol_offset)
        FbsProduceDataRequest.AddPaused(builder, bool(paused))
        response = await transport.request(
            FbsMethod.Method.TRANSPORT_PRODUCE_DATA,
            FbsRequestBody.Body.Transport_ProduceDataRequest,
            FbsProduceDataRequest.End(builder),
        )
        dump = parse_data_producer_dump(body_as(response, FbsDumpResponse.DumpResponse))
        return cls(
            data_producer_id,
            transport,
            data_type=dump["type"],
            sctp_stream_parameters=dump["sctpStreamParameters"],
            label=dump["label"],
            protocol=dump["protocol"],
            paused=bool(paused),
            app_data=app_data,
        )

    @property
    def sctp_stream_parameters(self) -> dict[str, Any] | None:
        """A copy: callers may not change ours."""
        params = self._sctp_stream_parameters
        return dict(params) if params is not None else None

    # -- lifecycle -------------------------------------------------------------------

    def _send_close_request(self) -> None:
        self.transport.close_data_producer_request(self.id)

    # -- requests --------------------------------------------------------------------

    def _request(self, method: int) -> Any:
        return self.channel.request(method, handler_id=self.id)

    async def dump(self) -> dict[str, Any]:
        response = await self._request(FbsMethod.Method.DATAPRODUCER_DUMP)
        return parse_data_producer_dump(body_as(response, FbsDumpResponse.DumpResponse))

    async def get_stats(self) -> list[dict[str, Any]]:
        response = await self._request(FbsMethod.Method.DATAPRODUCER_GET_STATS)
        stats = body_as(response, FbsGetStatsResponse.GetStatsResponse)
        return [
            {
                "type": "data-producer",
                "timestamp": stats.Timestamp(),
                "label": str_or_none(stats.Label()) or "",
                "protocol": str_or_none(stats.Protocol()) or "",
                "messagesReceived": stats.MessagesReceived(),
                "bytesReceived": stats.BytesReceived(),
            }
        ]

    async def pause(self) -> None:
        """Stop forwarding messages to the data consumers (they get ``dataproducerpause``)."""
        await self._request(FbsMethod.Method.DATAPRODUCER_PAUSE)
        was_paused, self.paused = self.paused, True
        if not was_paused:
            self.observer.safe_emit("pause")

    async def resume(self) -> None:
        await self._request(FbsMethod.Method.DATAPRODUCER_RESUME)
        was_paused, self.paused = self.paused, False
        if was_paused:
            self.observer.safe_emit("resume")

    def send(
        self,
        message: str | bytes,
        ppid: int | None = None,
        subchannels: list[int] | None = None,
        required_subchannel: int | None = None,
        ignored_subchannel: int | None = None,
    ) -> None:
        """Inject a message (a notification: no answer, like mediasoup's ``send()``).

        ``subchannels`` limits delivery to data consumers subscribed to any of
        them; ``required_subchannel`` to those subscribed to it;
        ``ignored_subchannel`` excludes those subscribed to it.
        """
        payload, ppid = message_payload(message, ppid)
        subchannels = check_subchannels(subchannels)
        required_subchannel = check_subchannel(required_subchannel, "requiredSubchannel")
        ignored_subchannel = check_subchannel(ignored_subchannel, "ignoredSubchannel")
        builder = self.channel.builder
        subchannels_offset = build_uint16_vector(builder, FbsSendNotification.StartSubchannelsVector, subchannels)
        data_offset = builder.CreateByteVector(payload)
        FbsSendNotification.Start(builder)
        FbsSendNotification.AddPpid(builder, ppid)
        FbsSendNotification.AddData(builder, data_offset)
        FbsSendNotification.AddSubchannels(builder, subchannels_offset)
        if required_subchannel is not None:
            FbsSendNotification.AddRequiredSubchannel(builder, required_subchannel)
        if ignored_subchannel is not None:
            FbsSendNotification.AddIgnoredSubchannel(builder, ignored_subchannel)
        self.channel.notify(
            FbsEvent.Event.DATAPRODUCER_SEND,
            FbsNotificationBody.Body.DataProducer_SendNotification,
            FbsSendNotification.End(builder),
            self.id,
        )

    def __repr__(self) -> str:
        return f"<DataProducer id={self.id} type={self.type} closed={self.closed}>"

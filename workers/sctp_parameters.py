"""SCTP (DataChannel) wire models and their FlatBuffers form.

Models mirror mediasoup's ``sctpParametersTypes.d.ts`` (plus mediasoup-client's
``SctpCapabilities``/``NumSctpStreams``, which clients still send when creating
a WebRtcTransport); helpers port ``sctpParametersFbsUtils.ts`` and, like
``ortc``, work on mediasoup JSON dicts.
"""

from __future__ import annotations

from typing import Any

import flatbuffers
from pydantic import BaseModel, Field

from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.rtp_parameters import WireModel

import FBS.SctpParameters.SctpStreamParameters as _FbsStreamParameters

__all__ = [
    "NumSctpStreams",
    "SctpCapabilities",
    "SctpNegotiatedCapabilities",
    "SctpParameters",
    "SctpStreamParameters",
    "parse_sctp_parameters",
    "parse_sctp_stream_parameters",
    "serialize_sctp_stream_parameters",
]


class NumSctpStreams(WireModel):
    """Initially requested outgoing (``OS``) and max incoming (``MIS``) streams."""

    OS: int = Field(alias="OS")
    MIS: int = Field(alias="MIS")


class SctpCapabilities(WireModel):
    num_streams: NumSctpStreams


class SctpParameters(WireModel):
    """The SCTP association of a transport, as the worker reports it."""

    port: int
    max_send_message_size: int
    max_receive_message_size: int
    send_buffer_size: int
    per_stream_send_queue_limit: int
    max_receiver_window_buffer_size: int
    is_data_channel: bool
    # Kept for backwards compatibility with older mediasoup-client versions.
    OS: int = Field(default=65535, alias="OS")
    MIS: int = Field(default=65535, alias="MIS")
    max_message_size: int | None = None


class SctpNegotiatedCapabilities(WireModel):
    negotiated_max_outbound_streams: int
    negotiated_max_inbound_streams: int


class SctpStreamParameters(WireModel):
    """Reliability of one SCTP stream (a DataProducer's or DataConsumer's).

    ``ordered`` streams are reliable; unordered ones may set either
    ``max_packet_life_time`` (ms) or ``max_retransmits``, not both.
    """

    stream_id: int
    ordered: bool | None = None
    max_packet_life_time: int | None = None
    max_retransmits: int | None = None


def parse_sctp_parameters(fbs_params: Any) -> dict[str, Any]:
    """Mediasoup JSON ``SctpParameters`` from an ``FBS.SctpParameters.SctpParameters``."""
    max_receive_message_size = fbs_params.MaxReceiveMessageSize()
    return {
        "port": fbs_params.Port(),
        "maxSendMessageSize": fbs_params.MaxSendMessageSize(),
        "maxReceiveMessageSize": max_receive_message_size,
        "sendBufferSize": fbs_params.SendBufferSize(),
        "perStreamSendQueueLimit": fbs_params.PerStreamSendQueueLimit(),
        "maxReceiverWindowBufferSize": fbs_params.MaxReceiverWindowBufferSize(),
        "isDataChannel": fbs_params.IsDataChannel(),
        # Kept for backwards compatibility, as mediasoup does.
        "OS": 65535,
        "MIS": 65535,
        "maxMessageSize": max_receive_message_size,
    }


def serialize_sctp_stream_parameters(builder: flatbuffers.Builder, params: Any) -> int:
    """An ``FBS.SctpParameters.SctpStreamParameters`` table from mediasoup JSON
    (or a model); returns its offset."""
    if isinstance(params, BaseModel):
        params = params.model_dump(by_alias=True, exclude_none=True)
    ordered = params.get("ordered")
    max_packet_life_time = params.get("maxPacketLifeTime")
    max_retransmits = params.get("maxRetransmits")
    _FbsStreamParameters.SctpStreamParametersStart(builder)
    _FbsStreamParameters.SctpStreamParametersAddStreamId(builder, params["streamId"])
    if ordered is not None:
        _FbsStreamParameters.SctpStreamParametersAddOrdered(builder, ordered)
    if max_packet_life_time is not None:
        _FbsStreamParameters.SctpStreamParametersAddMaxPacketLifeTime(builder, max_packet_life_time)
    if max_retransmits is not None:
        _FbsStreamParameters.SctpStreamParametersAddMaxRetransmits(builder, max_retransmits)
    offset: int = _FbsStreamParameters.SctpStreamParametersEnd(builder)
    return offset


def parse_sctp_stream_parameters(fbs_params: Any) -> dict[str, Any]:
    """Mediasoup JSON ``SctpStreamParameters`` from its FBS table."""
    params: dict[str, Any] = {"streamId": fbs_params.StreamId(), "ordered": fbs_params.Ordered()}
    if (max_packet_life_time := fbs_params.MaxPacketLifeTime()) is not None:
        params["maxPacketLifeTime"] = max_packet_life_time
    if (max_retransmits := fbs_params.MaxRetransmits()) is not None:
        params["maxRetransmits"] = max_retransmits
    return params

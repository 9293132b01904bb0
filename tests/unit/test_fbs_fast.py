"""The fast FlatBuffers paths give what the generated code gives.

``FastBuilder`` must write the stock builder's bytes; the channel's frame
header must read back through the generated accessors; the direct readers of
``fbs_reader`` (WebRtcTransport dump and stats, consume response) must equal
the object API + ``to_dict`` on randomised tables in which every field is
sometimes absent, so a wrong slot or default cannot hide behind the zeros a
real worker leaves out. Also: the channel's single deadline timer, ``clone``,
and consume's cache of validated capabilities.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import flatbuffers
import pytest

from workers import ortc
from workers.channel import Channel, ChannelResponse, _frame, _notification_header, _request_header
from workers.errors import ChannelTimeoutError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_blob import builder_fragment
from workers.fbs_builder import FastBuilder
from workers.fbs_reader import decode
from workers.fbs_utils import to_dict
from workers.transport import _CONSUME_RESPONSE, validated_rtp_capabilities
from workers.webrtc_transport import (
    build_connect_request,
    parse_webrtc_transport_dump,
    read_webrtc_transport_dump,
    read_webrtc_transport_stats,
)
from workers.wire import clone

import FBS.Common.StringString as FbsStringString
import FBS.Common.Uint16String as FbsUint16String
import FBS.Common.Uint32String as FbsUint32String
import FBS.Consumer.ConsumerLayers as FbsConsumerLayers
import FBS.Consumer.ConsumerScore as FbsConsumerScore
import FBS.Message.Body as FbsMessageBody
import FBS.Message.Message as FbsMessage
import FBS.Notification.Notification as FbsNotification
import FBS.Request.Request as FbsRequest
import FBS.Response.Response as FbsResponse
import FBS.SctpAssociation.SctpNegotiatedCapabilities as FbsSctpNegotiated
import FBS.SctpParameters.SctpParameters as FbsSctpParameters
import FBS.Transport.ConsumeResponse as FbsConsumeResponse
import FBS.Transport.Dump as FbsDump
import FBS.Transport.RecvRtpHeaderExtensions as FbsRecvRtpHeaderExtensions
import FBS.Transport.RtpListener as FbsRtpListener
import FBS.Transport.SctpListener as FbsSctpListener
import FBS.Transport.Stats as FbsStats
import FBS.Transport.Tuple as FbsTuple
import FBS.WebRtcTransport.ConnectRequest as FbsConnectRequest
import FBS.WebRtcTransport.DtlsParameters as FbsDtlsParameters
import FBS.WebRtcTransport.DtlsRole as FbsDtlsRole
import FBS.WebRtcTransport.DumpResponse as FbsDumpResponse
import FBS.WebRtcTransport.Fingerprint as FbsFingerprint
import FBS.WebRtcTransport.FingerprintAlgorithm as FbsFingerprintAlgorithm
import FBS.WebRtcTransport.GetStatsResponse as FbsGetStatsResponse
import FBS.WebRtcTransport.IceCandidate as FbsIceCandidate
import FBS.WebRtcTransport.IceParameters as FbsIceParameters

SEEDS = range(200)


class _Random:
    """Values for randomised tables; ``maybe`` leaves optional things out half the time."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)

    def maybe(self, make: Any) -> Any:
        return make() if self.rnd.random() < 0.5 else None

    def u(self, bits: int) -> int:
        return self.rnd.choice([0, 1, (1 << bits) - 1, self.rnd.randrange(1 << bits)])

    def text(self) -> str:
        return self.rnd.choice(["", "a", "127.0.0.1", "ünïcode", "x" * self.rnd.randrange(40)])

    def items(self, make: Any, most: int = 3) -> list:
        return [make() for _ in range(self.rnd.randrange(most + 1))]

    def boolean(self) -> bool:
        return self.rnd.random() < 0.5


def _pair(cls: type, **fields: Any) -> Any:
    obj = cls()
    for name, value in fields.items():
        setattr(obj, name, value)
    return obj


def _tuple(r: _Random) -> Any:
    return _pair(
        FbsTuple.TupleT,
        localAddress=r.text(),
        localPort=r.u(16),
        remoteIp=r.maybe(r.text),
        remotePort=r.u(16),
        protocol=r.rnd.choice([1, 2]),
    )


def _base_dump(r: _Random) -> Any:
    uint32_string = lambda: _pair(FbsUint32String.Uint32StringT, key=r.u(32), value=r.text())  # noqa: E731
    string_string = lambda: _pair(FbsStringString.StringStringT, key=r.text(), value=r.text())  # noqa: E731
    return _pair(
        FbsDump.DumpT,
        id=r.text(),
        direct=r.boolean(),
        producerIds=r.items(r.text),
        consumerIds=r.items(r.text),
        mapSsrcConsumerId=r.items(uint32_string),
        mapRtxSsrcConsumerId=r.items(uint32_string),
        dataProducerIds=r.items(r.text),
        dataConsumerIds=r.items(r.text),
        recvRtpHeaderExtensions=_pair(
            FbsRecvRtpHeaderExtensions.RecvRtpHeaderExtensionsT,
            **{name: r.maybe(lambda: r.u(8)) for name in ("mid", "rid", "rrid", "absSendTime", "transportWideCc01")},
        ),
        rtpListener=_pair(
            FbsRtpListener.RtpListenerT,
            ssrcTable=r.items(uint32_string),
            midTable=r.items(string_string),
            ridTable=r.items(string_string),
        ),
        maxSendMessageSize=r.u(32),
        maxReceiveMessageSize=r.u(32),
        sctpParameters=r.maybe(
            lambda: _pair(
                FbsSctpParameters.SctpParametersT,
                port=r.u(16),
                maxSendMessageSize=r.u(32),
                maxReceiveMessageSize=r.u(32),
                sendBufferSize=r.u(32),
                perStreamSendQueueLimit=r.u(32),
                maxReceiverWindowBufferSize=r.u(32),
                isDataChannel=r.boolean(),
            )
        ),
        sctpState=r.maybe(lambda: r.rnd.randrange(5)),
        sctpNegotiatedCapabilities=r.maybe(
            lambda: _pair(
                FbsSctpNegotiated.SctpNegotiatedCapabilitiesT,
                negotiatedMaxOutboundStreams=r.u(16),
                negotiatedMaxInboundStreams=r.u(16),
            )
        ),
        sctpListener=r.maybe(
            lambda: _pair(
                FbsSctpListener.SctpListenerT,
                streamIdTable=r.items(lambda: _pair(FbsUint16String.Uint16StringT, key=r.u(16), value=r.text())),
            )
        ),
        traceEventTypes=r.items(lambda: r.rnd.randrange(2)),
    )


def _webrtc_dump(r: _Random) -> Any:
    candidate = lambda: _pair(  # noqa: E731
        FbsIceCandidate.IceCandidateT,
        foundation=r.text(),
        priority=r.u(32),
        address=r.text(),
        protocol=r.rnd.choice([1, 2]),
        port=r.u(16),
        type=0,
        tcpType=r.maybe(lambda: 0),
    )
    fingerprint = lambda: _pair(FbsFingerprint.FingerprintT, algorithm=r.rnd.randrange(5), value=r.text())  # noqa
    return _pair(
        FbsDumpResponse.DumpResponseT,
        base=_base_dump(r),
        iceRole=r.rnd.randrange(2),
        iceParameters=_pair(
            FbsIceParameters.IceParametersT, usernameFragment=r.text(), password=r.text(), iceLite=r.boolean()
        ),
        iceCandidates=r.items(candidate),
        iceState=r.rnd.randrange(4),
        iceSelectedTuple=r.maybe(lambda: _tuple(r)),
        dtlsParameters=_pair(
            FbsDtlsParameters.DtlsParametersT, fingerprints=r.items(fingerprint, 5), role=r.rnd.randrange(3)
        ),
        dtlsState=r.rnd.randrange(5),
    )


def _webrtc_stats(r: _Random) -> Any:
    stats = FbsStats.StatsT()
    for name, value in vars(FbsStats.StatsT()).items():
        if name == "transportId":
            setattr(stats, name, r.text())
        elif name == "sctpState":
            setattr(stats, name, r.maybe(lambda: r.rnd.randrange(5)))
        elif name.startswith("rtpPacketLoss"):
            setattr(stats, name, r.maybe(lambda: r.rnd.choice([0.0, 0.5, 1e-9])))
        elif value is None:  # the optional bitrates
            setattr(stats, name, r.maybe(lambda: r.u(64)))
        else:
            setattr(stats, name, r.u(64))
    return _pair(
        FbsGetStatsResponse.GetStatsResponseT,
        base=stats,
        iceRole=r.rnd.randrange(2),
        iceState=r.rnd.randrange(4),
        iceSelectedTuple=r.maybe(lambda: _tuple(r)),
        dtlsState=r.rnd.randrange(5),
    )


def _packed(obj: Any) -> tuple[bytes, int]:
    """``obj`` packed by the stock builder: the buffer and its root table's position."""
    builder = flatbuffers.Builder(0)
    builder.Finish(obj.Pack(builder))
    buf = bytes(builder.Output())
    return buf, int.from_bytes(buf[:4], "little")


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_builder_writes_the_stock_builders_bytes(seed: int) -> None:
    obj = _webrtc_dump(_Random(seed)) if seed % 2 else _webrtc_stats(_Random(seed))
    outputs = []
    for builder in (flatbuffers.Builder(seed % 64), FastBuilder(seed % 64)):
        builder.FinishSizePrefixed(obj.Pack(builder))
        outputs.append(bytes(builder.Output()))
    assert outputs[0] == outputs[1]


# Every scalar slot FastBuilder overrides, with a value and a default (equal values are
# skipped unless defaults are forced; the last entries of each pair are at their default).
_SLOTS: list[tuple[str, Any, Any]] = [
    ("PrependBoolSlot", True, False),
    ("PrependByteSlot", 7, 0),
    ("PrependUint8Slot", 255, 0),
    ("PrependUint16Slot", 65535, 1),
    ("PrependUint32Slot", 4_000_000_000, 0),
    ("PrependUint64Slot", 2**64 - 1, 0),
    ("PrependInt8Slot", -128, 0),
    ("PrependInt16Slot", -300, 0),
    ("PrependInt32Slot", -(2**31), 0),
    ("PrependInt64Slot", -(2**63), 0),
    ("PrependFloat32Slot", 1.5, 0.0),
    ("PrependFloat64Slot", -2.25e300, 0.0),
    ("PrependUint8Slot", 0, 0),
    ("PrependFloat64Slot", 0.0, 0.0),
]


def _every_slot_buffer(builder: Any, force_defaults: bool) -> bytes:
    """Tables of every slot type (three alike, so their vtables are shared), strings and
    byte vectors of odd sizes, a vector of the tables and a root; grown from one byte."""
    builder.ForceDefaults(force_defaults)
    tables = []
    for repeat in range(4):
        name = builder.CreateString("é" * repeat + "x")
        raw = builder.CreateByteVector(bytes(range(repeat * 3)))
        builder.StartObject(len(_SLOTS) + 2)
        for slot, (method, value, default) in enumerate(_SLOTS):
            getattr(builder, method)(slot, value if repeat < 3 else default, default)
        builder.PrependUOffsetTRelativeSlot(len(_SLOTS), name, 0)
        builder.PrependUOffsetTRelativeSlot(len(_SLOTS) + 1, raw, 0)
        tables.append(builder.EndObject())
    builder.StartVector(4, len(tables), 4)
    for table in reversed(tables):
        builder.PrependUOffsetTRelative(table)
    vector = builder.EndVector()
    builder.StartObject(2)
    builder.PrependUOffsetTRelativeSlot(0, vector, 0)
    builder.PrependInt16Slot(1, 3, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


@pytest.mark.parametrize("force_defaults", [False, True])
def test_fast_builder_writes_the_stock_builders_bytes_for_every_slot_type(force_defaults: bool) -> None:
    stock = _every_slot_buffer(flatbuffers.Builder(1), force_defaults)
    assert _every_slot_buffer(FastBuilder(1), force_defaults) == stock


@pytest.mark.parametrize("bad", [256, -1, "x", None])
def test_fast_builder_refuses_what_the_stock_builder_refuses(bad: Any) -> None:
    errors = []
    for builder in (flatbuffers.Builder(0), FastBuilder(0)):
        builder.StartObject(2)
        with pytest.raises(Exception) as raised:
            builder.PrependUint8Slot(0, bad, 0)
        errors.append(type(raised.value))
    assert errors[0] is errors[1] is TypeError


def test_fast_builder_refuses_a_non_bool_in_a_bool_slot() -> None:
    builder = FastBuilder(0)
    builder.StartObject(1)
    with pytest.raises(TypeError):
        builder.PrependBoolSlot(0, 2, False)


@pytest.mark.parametrize("seed", SEEDS)
def test_webrtc_dump_reader_matches_the_object_api(seed: int) -> None:
    buf, root = _packed(_webrtc_dump(_Random(seed)))
    table = FbsDumpResponse.DumpResponse()
    table.Init(buf, root)
    assert read_webrtc_transport_dump(buf, root) == parse_webrtc_transport_dump(
        FbsDumpResponse.DumpResponseT.InitFromObj(table)
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_webrtc_stats_reader_matches_the_object_api(seed: int) -> None:
    buf, root = _packed(_webrtc_stats(_Random(seed)))
    table = FbsGetStatsResponse.GetStatsResponse()
    table.Init(buf, root)
    expected = to_dict(FbsGetStatsResponse.GetStatsResponseT.InitFromObj(table))
    base = expected.pop("base")
    assert read_webrtc_transport_stats(buf, root) == {"type": "webrtc-transport", **base, **expected}


@pytest.mark.parametrize("seed", SEEDS)
def test_consume_response_reader_matches_the_generated_accessors(seed: int) -> None:
    r = _Random(seed)
    response = _pair(
        FbsConsumeResponse.ConsumeResponseT,
        paused=r.boolean(),
        producerPaused=r.boolean(),
        score=_pair(
            FbsConsumerScore.ConsumerScoreT, score=r.u(8), producerScore=r.u(8), producerScores=r.items(lambda: r.u(8))
        ),
        preferredLayers=r.maybe(
            lambda: _pair(FbsConsumerLayers.ConsumerLayersT, spatialLayer=r.u(8), temporalLayer=r.maybe(lambda: r.u(8)))
        ),
    )
    buf, root = _packed(response)
    table = FbsConsumeResponse.ConsumeResponse()
    table.Init(buf, root)
    layers = table.PreferredLayers()
    expected_layers = None
    if layers is not None:
        expected_layers = {"spatialLayer": layers.SpatialLayer()}
        if layers.TemporalLayer() is not None:
            expected_layers["temporalLayer"] = layers.TemporalLayer()
    assert decode(buf, root, _CONSUME_RESPONSE) == {
        "paused": table.Paused(),
        "producerPaused": table.ProducerPaused(),
        "score": to_dict(FbsConsumerScore.ConsumerScoreT.InitFromObj(table.Score())),
        "preferredLayers": expected_layers,
    }


@pytest.mark.parametrize("handler_id", ["", "7f3c", "0a1b2c3d-aaaa-4bbb-8ccc-0123456789ab"])
@pytest.mark.parametrize("with_body", [False, True])
def test_request_frame_reads_back_through_the_generated_accessors(handler_id: str, with_body: bool) -> None:
    handler = handler_id.encode()
    if with_body:
        builder = FastBuilder(0)
        body = builder_fragment(builder, _tuple(_Random(1)).Pack(builder))
        frame = _frame(_request_header(77, 9, len(handler)), 4_000_000_000, handler, body)
    else:
        frame = _frame(_request_header(0, 0, len(handler)), 12, handler, None)
    assert int.from_bytes(frame[:4], "little") == len(frame) - 4
    message = FbsMessage.Message.GetRootAs(bytes(frame[4:]), 0)
    assert message.DataType() == FbsMessageBody.Body.Request
    request = FbsRequest.Request()
    request.Init(message.Data().Bytes, message.Data().Pos)
    assert request.HandlerId().decode() == handler_id
    if with_body:
        assert (request.Id(), request.Method(), request.BodyType()) == (4_000_000_000, 77, 9)
        tuple_t = FbsTuple.Tuple()
        tuple_t.Init(request.Body().Bytes, request.Body().Pos)
        assert to_dict(FbsTuple.TupleT.InitFromObj(tuple_t)) == to_dict(_tuple(_Random(1)))
    else:
        assert (request.Id(), request.Method(), request.BodyType(), request.Body()) == (12, 0, 0, None)


@pytest.mark.parametrize("with_body", [False, True])
def test_notification_frame_reads_back_through_the_generated_accessors(with_body: bool) -> None:
    body = None
    if with_body:
        builder = FastBuilder(0)
        body = builder_fragment(builder, _tuple(_Random(3)).Pack(builder))
    frame = _frame(_notification_header(5, 2 if with_body else 0, 4), 0, b"1234", body)
    message = FbsMessage.Message.GetRootAs(bytes(frame[4:]), 0)
    assert message.DataType() == FbsMessageBody.Body.Notification
    notification = FbsNotification.Notification()
    notification.Init(message.Data().Bytes, message.Data().Pos)
    assert (notification.HandlerId(), notification.Event()) == (b"1234", 5)
    if with_body:
        assert notification.BodyType() == 2
        tuple_t = FbsTuple.Tuple()
        tuple_t.Init(notification.Body().Bytes, notification.Body().Pos)
        assert tuple_t.LocalPort() == _tuple(_Random(3)).localPort
    else:
        assert notification.Body() is None


def test_connect_request_reads_back_through_the_generated_accessors() -> None:
    fingerprints = [{"algorithm": "sha-256", "value": "AB:CD"}, {"algorithm": "sha-512", "value": "EF"}]
    data, root = build_connect_request({"role": "client", "fingerprints": fingerprints})
    request = FbsConnectRequest.ConnectRequest()
    request.Init(data, root)
    dtls = request.DtlsParameters()
    assert dtls.Role() == FbsDtlsRole.DtlsRole.CLIENT
    assert [(dtls.Fingerprints(i).Algorithm(), dtls.Fingerprints(i).Value()) for i in range(2)] == [
        (FbsFingerprintAlgorithm.FingerprintAlgorithm.SHA256, b"AB:CD"),
        (FbsFingerprintAlgorithm.FingerprintAlgorithm.SHA512, b"EF"),
    ]


async def test_channel_resolves_a_response_with_its_body_position() -> None:
    channel = Channel(pid=0)
    channel._loop = asyncio.get_running_loop()
    written: list[bytes] = []

    class _Writer:
        def write(self, data: bytes) -> None:
            written.append(bytes(data))

        def close(self) -> None:
            pass

    channel._writer = _Writer()  # type: ignore[assignment]
    future = channel.request(3, handler_id="h")
    sent = FbsMessage.Message.GetRootAs(written[0][4:], 0).Data()
    request = FbsRequest.Request()
    request.Init(sent.Bytes, sent.Pos)

    response = _pair(FbsResponse.ResponseT, id=request.Id(), accepted=True, bodyType=1, body=_tuple(_Random(2)))
    message = _pair(FbsMessage.MessageT, dataType=FbsMessageBody.Body.Response, data=response)
    builder = flatbuffers.Builder(0)
    builder.FinishSizePrefixed(message.Pack(builder))
    channel._on_data(bytes(builder.Output()))
    result = await future
    assert isinstance(result, ChannelResponse)
    body = FbsTuple.Tuple()
    body.Init(result.buffer, result.body_position)
    assert body.LocalPort() == _tuple(_Random(2)).localPort
    assert result.Body().Pos == result.body_position
    channel.close()


def test_clone_copies_every_dict_and_list() -> None:
    shared = {"type": "nack"}
    value: dict[str, Any] = {"a": [shared, shared], "b": (1, 2.0, True, None, "x"), "c": {"d": [1, [2]]}}
    copy = clone(value)
    assert copy == value
    assert copy["a"][0] is not shared and copy["a"][0] is not copy["a"][1]
    assert type(copy["b"][2]) is bool and type(copy["b"][1]) is float


def test_clone_keeps_what_marshal_cannot_copy() -> None:
    marker = object()
    original: dict[str, Any] = {"x": [marker], "y": {"z": 1}}
    copy = clone(original)
    assert copy["x"][0] is marker and copy["y"] == {"z": 1}


async def test_channel_times_out_each_request_at_its_own_deadline() -> None:
    channel = Channel(pid=0)
    loop = asyncio.get_running_loop()
    channel._loop = loop

    class _Sink:
        def write(self, data: bytes) -> None:
            pass

        def close(self) -> None:
            pass

    channel._writer = _Sink()  # type: ignore[assignment]
    slow = channel.request(1, timeout=0.3)
    answered = channel.request(2, timeout=0.05)
    fast = channel.request(3, timeout=0.1)
    channel._pending.pop(2).future.set_result(None)  # as if answered
    started = loop.time()
    with pytest.raises(ChannelTimeoutError, match="id:3"):
        await fast
    assert 0.09 <= loop.time() - started < 0.25
    assert not slow.done() and answered.done()
    with pytest.raises(ChannelTimeoutError, match="id:1"):
        await slow
    assert loop.time() - started >= 0.29
    assert channel._timer is None and not channel._pending
    channel.close()


def test_validated_capabilities_are_cached_by_exact_value() -> None:
    caps: dict[str, Any] = {
        "codecs": [
            {
                "kind": "video",
                "mimeType": "video/VP8",
                "clockRate": 90000,
                "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}],
            }
        ],
        "headerExtensions": [{"kind": "video", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1}],
    }
    validated = validated_rtp_capabilities(caps)
    assert validated == ortc.validate_rtp_capabilities(clone(caps))
    assert validated_rtp_capabilities(clone(caps)) is validated
    assert "parameter" not in caps["codecs"][0]["rtcpFeedback"][0]  # the caller's dict is not normalised
    as_float = clone(caps)
    as_float["codecs"][0]["clockRate"] = 90000.0
    assert validated_rtp_capabilities(as_float) is not validated


def test_consumer_parameters_do_not_share_the_cached_capabilities() -> None:
    router_caps = ortc.generate_router_rtp_capabilities(
        [{"kind": "video", "mimeType": "video/VP8", "clockRate": 90000}]
    )
    params = {
        "codecs": [
            {
                "mimeType": "video/VP8",
                "payloadType": 96,
                "clockRate": 90000,
                "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}],
            }
        ],
        "encodings": [{"ssrc": 1111}],
        "rtcp": {"cname": "x"},
    }
    ortc.validate_rtp_parameters(params)
    mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps)
    consumable = ortc.get_consumable_rtp_parameters("video", params, router_caps, mapping)
    caps = validated_rtp_capabilities(clone(router_caps))
    consumer_params = ortc.get_consumer_rtp_parameters(
        consumable_rtp_parameters=consumable, remote_rtp_capabilities=caps, enable_rtx=True
    )
    consumer_params["codecs"][0]["rtcpFeedback"][0]["parameter"] = "changed"
    assert all(fb["parameter"] != "changed" for codec in caps["codecs"] for fb in codec["rtcpFeedback"])

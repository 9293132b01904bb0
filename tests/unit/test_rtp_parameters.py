"""Unit tests of the wire models (camelCase JSON exactly as mediasoup-client
sends it) and of their FlatBuffers serialisation (serialise -> parse round
trips through the generated readers, embedded in real request tables)."""

from __future__ import annotations

import copy
from typing import Any

import flatbuffers
import pytest
from pydantic import ValidationError

from workers import ortc
from workers.errors import MediasoupTypeError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.rtp_parameters import (
    RtpCapabilities,
    RtpCodecParameters,
    RtpEncodingParameters,
    RtpMapping,
    RtpParameters,
    parse_rtp_encoding_parameters,
    parse_rtp_parameters,
    serialize_rtp_encoding_parameters,
    serialize_rtp_mapping,
    serialize_rtp_parameters,
)
from workers.scalability_modes import ScalabilityMode, parse_scalability_mode
from workers.sctp_parameters import (
    SctpCapabilities,
    SctpParameters,
    SctpStreamParameters,
    parse_sctp_parameters,
    parse_sctp_stream_parameters,
    serialize_sctp_stream_parameters,
)
from workers.srtp_parameters import SrtpParameters, parse_srtp_parameters, serialize_srtp_parameters

import FBS.RtpParameters.RtpMapping as FbsRtpMapping
import FBS.RtpParameters.RtpParameters as FbsRtpParameters
import FBS.RtpParameters.Value as FbsValue
import FBS.SctpParameters.SctpParameters as FbsSctpParameters
import FBS.SctpParameters.SctpStreamParameters as FbsSctpStreamParameters
import FBS.SrtpParameters.SrtpParameters as FbsSrtpParameters
import FBS.Transport.ConsumeRequest as FbsConsumeRequest
import FBS.Transport.ProduceRequest as FbsProduceRequest

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"

# What mediasoup-client's Device.rtpCapabilities looks like (Chrome).
CLIENT_RTP_CAPABILITIES = {
    "codecs": [
        {
            "mimeType": "audio/opus",
            "kind": "audio",
            "preferredPayloadType": 100,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"minptime": 10, "useinbandfec": 1},
            "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}],
        },
        {
            "mimeType": "video/VP8",
            "kind": "video",
            "preferredPayloadType": 101,
            "clockRate": 90000,
            "parameters": {},
            "rtcpFeedback": [
                {"type": "goog-remb", "parameter": ""},
                {"type": "transport-cc", "parameter": ""},
                {"type": "ccm", "parameter": "fir"},
                {"type": "nack", "parameter": ""},
                {"type": "nack", "parameter": "pli"},
            ],
        },
        {
            "mimeType": "video/rtx",
            "kind": "video",
            "preferredPayloadType": 102,
            "clockRate": 90000,
            "parameters": {"apt": 101},
            "rtcpFeedback": [],
        },
    ],
    "headerExtensions": [
        {"kind": "audio", "uri": MID, "preferredId": 1, "preferredEncrypt": False, "direction": "sendrecv"},
        {
            "kind": "video",
            "uri": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "preferredId": 2,
            "preferredEncrypt": False,
            "direction": "recvonly",
        },
    ],
}

# What mediasoup-client sends in a "produce" request (VP8 simulcast).
CLIENT_RTP_PARAMETERS = {
    "mid": "0",
    "codecs": [
        {
            "mimeType": "video/VP8",
            "payloadType": 96,
            "clockRate": 90000,
            "parameters": {},
            "rtcpFeedback": [
                {"type": "goog-remb", "parameter": ""},
                {"type": "nack", "parameter": "pli"},
            ],
        },
        {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": 96}, "rtcpFeedback": []},
    ],
    "headerExtensions": [
        {"uri": MID, "id": 4, "encrypt": False, "parameters": {}},
        {"uri": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", "id": 10, "encrypt": False, "parameters": {}},
    ],
    "encodings": [
        {
            "active": True,
            "scalabilityMode": "L1T3",
            "scaleResolutionDownBy": 4,
            "maxBitrate": 500000,
            "rid": "r0",
            "dtx": False,
        },
        {
            "active": True,
            "scalabilityMode": "L1T3",
            "scaleResolutionDownBy": 2,
            "maxBitrate": 1000000,
            "rid": "r1",
            "dtx": False,
        },
        {
            "active": True,
            "scalabilityMode": "L1T3",
            "maxBitrate": 5000000,
            "maxFramerate": 30.5,
            "rid": "r2",
            "dtx": False,
        },
    ],
    "rtcp": {"cname": "x1Dz4bS4Tm3LeS3v", "reducedSize": True},
    "msid": "stream-id track-id",
}


# ---------------------------------------------------------------------------
# Models <-> mediasoup JSON
# ---------------------------------------------------------------------------


def test_client_rtp_capabilities_round_trip_unchanged():
    caps = RtpCapabilities.model_validate(CLIENT_RTP_CAPABILITIES)
    assert caps.codecs is not None and caps.header_extensions is not None
    assert caps.codecs[0].mime_type == "audio/opus"
    assert caps.codecs[0].preferred_payload_type == 100
    assert caps.header_extensions[1].direction == "recvonly"
    assert caps.to_dict() == CLIENT_RTP_CAPABILITIES


def test_client_rtp_parameters_round_trip_unchanged_with_unknown_fields():
    params = RtpParameters.model_validate(CLIENT_RTP_PARAMETERS)
    assert params.encodings is not None
    assert params.encodings[0].rid == "r0"
    assert params.encodings[0].max_bitrate == 500000
    assert params.encodings[2].model_extra == {"active": True, "maxFramerate": 30.5}
    assert params.to_dict() == CLIENT_RTP_PARAMETERS
    assert RtpParameters.model_validate_json(params.model_dump_json(by_alias=True, exclude_none=True)) == params


def test_models_build_from_python_names_and_dump_camel_case():
    codec = RtpCodecParameters(mime_type="audio/opus", payload_type=100, clock_rate=48000, channels=2)
    assert codec.to_dict() == {"mimeType": "audio/opus", "payloadType": 100, "clockRate": 48000, "channels": 2}
    encoding = RtpEncodingParameters(ssrc=1, codec_payload_type=100, scalability_mode="L1T3")
    assert encoding.to_dict() == {"ssrc": 1, "codecPayloadType": 100, "scalabilityMode": "L1T3"}


@pytest.mark.parametrize(
    "bad_codec",
    [
        {"mimeType": "audio/opus", "payloadType": 100, "clockRate": "48000"},
        {"mimeType": "audio/opus", "payloadType": True, "clockRate": 48000},
        {"payloadType": 100, "clockRate": 48000},
    ],
)
def test_models_are_strict(bad_codec):
    with pytest.raises(ValidationError):
        RtpCodecParameters.model_validate(bad_codec)


def test_model_header_extension_kind_and_direction_are_checked():
    with pytest.raises(ValidationError):
        RtpCapabilities.model_validate({"headerExtensions": [{"kind": "data", "uri": MID, "preferredId": 1}]})
    with pytest.raises(ValidationError):
        RtpCapabilities.model_validate(
            {"headerExtensions": [{"kind": "audio", "uri": MID, "preferredId": 1, "direction": "up"}]}
        )


def test_ortc_results_are_valid_models():
    caps = ortc.generate_router_rtp_capabilities(
        [
            {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
            {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
        ]
    )
    assert RtpCapabilities.model_validate(caps).to_dict() == caps
    params = ortc.validate_rtp_parameters(copy.deepcopy(CLIENT_RTP_PARAMETERS))
    rtp_mapping = ortc.get_producer_rtp_parameters_mapping(params, caps)
    assert RtpMapping.model_validate(rtp_mapping).to_dict() == rtp_mapping
    consumable = ortc.get_consumable_rtp_parameters("video", params, caps, rtp_mapping)
    assert RtpParameters.model_validate(consumable).to_dict() == consumable
    consumer = ortc.get_consumer_rtp_parameters(
        consumable_rtp_parameters=consumable,
        remote_rtp_capabilities=ortc.validate_rtp_capabilities(copy.deepcopy(CLIENT_RTP_CAPABILITIES)),
        enable_rtx=True,
    )
    assert RtpParameters.model_validate(consumer).to_dict() == consumer


def test_model_clone_is_deep():
    params = RtpParameters.model_validate(CLIENT_RTP_PARAMETERS)
    cloned = params.clone()
    assert cloned == params and cloned is not params
    assert cloned.codecs[1].parameters is not None and params.codecs[1].parameters is not None
    cloned.codecs[1].parameters["apt"] = 1
    assert params.codecs[1].parameters["apt"] == 96


# ---------------------------------------------------------------------------
# FlatBuffers round trips
# ---------------------------------------------------------------------------


def _round_trip(params) -> dict:
    builder = flatbuffers.Builder(0)
    builder.Finish(serialize_rtp_parameters(builder, params))
    return parse_rtp_parameters(FbsRtpParameters.RtpParameters.GetRootAs(builder.Output(), 0))


def test_fbs_round_trip_of_validated_client_parameters():
    params = ortc.validate_rtp_parameters(copy.deepcopy(CLIENT_RTP_PARAMETERS))
    expected = copy.deepcopy(params)
    for encoding in expected["encodings"]:  # not part of the worker's schema
        del encoding["active"]
        encoding.pop("scaleResolutionDownBy", None)
        encoding.pop("maxFramerate", None)
    assert _round_trip(params) == expected


def test_fbs_round_trip_of_every_field_and_parameter_type():
    params: dict[str, Any] = {
        "mid": "video-1",
        "codecs": [
            {
                "mimeType": "video/H264",
                "payloadType": 125,
                "clockRate": 90000,
                "parameters": {
                    "packetization-mode": 1,
                    "profile-level-id": "42e01f",
                    "negative": -3,
                    "ratio": 1.5,
                    "integral-float": 2.0,
                    "flag": True,
                    "list": [1, -2, 3],
                },
                "rtcpFeedback": [
                    {"type": "nack"},
                    {"type": "nack", "parameter": "pli"},
                    {"type": "transport-cc", "parameter": ""},
                ],
            },
            {"mimeType": "audio/opus", "payloadType": 100, "clockRate": 48000, "channels": 2},
        ],
        "headerExtensions": [
            {"uri": MID, "id": 1},
            {"uri": "urn:3gpp:video-orientation", "id": 13, "encrypt": True, "parameters": {"a": "b", "n": 7}},
        ],
        "encodings": [
            {
                "ssrc": 4294967295,
                "rid": "hi",
                "codecPayloadType": 125,
                "rtx": {"ssrc": 7},
                "dtx": True,
                "scalabilityMode": "L3T3_KEY",
                "maxBitrate": 5_000_000_000,
            },
            {"rid": "lo"},
            {},
        ],
        "rtcp": {"cname": "cname", "reducedSize": False},
        "msid": "a b",
    }
    parsed = _round_trip(params)
    assert parsed["mid"] == "video-1" and parsed["msid"] == "a b"
    assert parsed["codecs"][0]["parameters"] == {
        "packetization-mode": 1,
        "profile-level-id": "42e01f",
        "negative": -3,
        "ratio": 1.5,
        "integral-float": 2,
        "flag": 1,  # FBS Boolean is a uint8, as in mediasoup
        "list": [1, -2, 3],
    }
    assert parsed["codecs"][0]["rtcpFeedback"] == params["codecs"][0]["rtcpFeedback"]
    assert "channels" not in parsed["codecs"][0]
    assert parsed["codecs"][1] == {**params["codecs"][1], "parameters": {}, "rtcpFeedback": []}
    assert parsed["headerExtensions"] == [
        {"uri": MID, "id": 1, "encrypt": False, "parameters": {}},
        params["headerExtensions"][1],
    ]
    assert parsed["encodings"] == [params["encodings"][0], {"rid": "lo", "dtx": False}, {"dtx": False}]
    assert parsed["rtcp"] == {"cname": "cname", "reducedSize": False}


def test_fbs_round_trip_of_minimal_parameters_and_a_model():
    assert _round_trip({"codecs": []}) == {
        "codecs": [],
        "headerExtensions": [],
        "encodings": [],
        "rtcp": {"reducedSize": True},
    }
    model = RtpParameters.model_validate({"codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}]})
    assert _round_trip(model)["codecs"] == [
        {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {}, "rtcpFeedback": []}
    ]


def test_fbs_repeated_codecs_keep_true_and_1_apart():
    with_flag = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {"x": True}}
    with_one = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {"x": 1}}
    for codec, value_type in ((with_flag, FbsValue.Value.Boolean), (with_one, FbsValue.Value.Integer32)) * 2:
        builder = flatbuffers.Builder(0)
        builder.Finish(serialize_rtp_parameters(builder, {"codecs": [codec]}))
        fbs_params = FbsRtpParameters.RtpParameters.GetRootAs(builder.Output(), 0)
        assert fbs_params.Codecs(0).Parameters(0).ValueType() == value_type


def test_fbs_64_bit_fields_are_aligned_in_the_final_buffer():
    builder = flatbuffers.Builder(0)
    builder.CreateString("x")  # unalign the builder first
    params: dict[str, Any] = {
        "codecs": [],
        "encodings": [{"maxBitrate": 1}, {"ssrc": 1, "maxBitrate": 2}, {"rid": "r", "maxBitrate": 3}],
    }
    builder.Finish(serialize_rtp_parameters(builder, params))
    data = builder.Output()
    fbs_params = FbsRtpParameters.RtpParameters.GetRootAs(data, 0)
    for index in range(fbs_params.EncodingsLength()):
        table = fbs_params.Encodings(index)._tab
        assert (table.Pos + table.Offset(16)) % 8 == 0  # max_bitrate (vtable slot 6)
        assert table.Pos % 4 == 0


def test_fbs_rtp_parameters_inside_a_produce_request():
    params = ortc.validate_rtp_parameters(copy.deepcopy(CLIENT_RTP_PARAMETERS))
    rtp_mapping = {
        "codecs": [{"payloadType": 96, "mappedPayloadType": 101}, {"payloadType": 97, "mappedPayloadType": 102}],
        "encodings": [
            {"rid": "r0", "mappedSsrc": 11},
            {"ssrc": 5, "mappedSsrc": 12},
            {"rid": "r2", "ssrc": 6, "mappedSsrc": 13},
        ],
    }
    builder = flatbuffers.Builder(0)
    producer_id = builder.CreateString("producer-1")
    params_offset = serialize_rtp_parameters(builder, params)
    mapping_offset = serialize_rtp_mapping(builder, rtp_mapping)
    FbsProduceRequest.ProduceRequestStart(builder)
    FbsProduceRequest.ProduceRequestAddProducerId(builder, producer_id)
    FbsProduceRequest.ProduceRequestAddKind(builder, 1)
    FbsProduceRequest.ProduceRequestAddRtpParameters(builder, params_offset)
    FbsProduceRequest.ProduceRequestAddRtpMapping(builder, mapping_offset)
    FbsProduceRequest.ProduceRequestAddKeyFrameRequestDelay(builder, 1000)
    builder.FinishSizePrefixed(FbsProduceRequest.ProduceRequestEnd(builder))

    data = builder.Output()
    request = FbsProduceRequest.ProduceRequest.GetRootAs(data, 4)
    assert request.ProducerId() == b"producer-1"
    assert request.Kind() == 1 and request.KeyFrameRequestDelay() == 1000
    assert parse_rtp_parameters(request.RtpParameters())["codecs"] == params["codecs"]
    mapping = request.RtpMapping()
    assert [(mapping.Codecs(i).PayloadType(), mapping.Codecs(i).MappedPayloadType()) for i in range(2)] == [
        (96, 101),
        (97, 102),
    ]
    assert [
        (mapping.Encodings(i).Rid(), mapping.Encodings(i).Ssrc(), mapping.Encodings(i).MappedSsrc()) for i in range(3)
    ] == [(b"r0", None, 11), (None, 5, 12), (b"r2", 6, 13)]


def test_fbs_consumable_encodings_inside_a_consume_request():
    encodings = [{"ssrc": 11, "dtx": False, "scalabilityMode": "L1T3", "maxBitrate": 100}, {"ssrc": 12, "dtx": True}]
    builder = flatbuffers.Builder(0)
    consumer_id = builder.CreateString("consumer-1")
    params_offset = serialize_rtp_parameters(builder, {"codecs": [], "encodings": [{"ssrc": 1}]})
    encodings_offset = serialize_rtp_encoding_parameters(builder, encodings)
    FbsConsumeRequest.ConsumeRequestStart(builder)
    FbsConsumeRequest.ConsumeRequestAddConsumerId(builder, consumer_id)
    FbsConsumeRequest.ConsumeRequestAddRtpParameters(builder, params_offset)
    FbsConsumeRequest.ConsumeRequestAddConsumableRtpEncodings(builder, encodings_offset)
    FbsConsumeRequest.ConsumeRequestAddPaused(builder, True)
    builder.Finish(FbsConsumeRequest.ConsumeRequestEnd(builder))

    request = FbsConsumeRequest.ConsumeRequest.GetRootAs(builder.Output(), 0)
    assert request.ConsumerId() == b"consumer-1" and request.Paused()
    assert [
        parse_rtp_encoding_parameters(request.ConsumableRtpEncodings(i))
        for i in range(request.ConsumableRtpEncodingsLength())
    ] == encodings
    assert parse_rtp_parameters(request.RtpParameters())["encodings"] == [{"ssrc": 1, "dtx": False}]


def test_fbs_rtp_mapping_accepts_a_model():
    builder = flatbuffers.Builder(0)
    mapping = RtpMapping.model_validate({"codecs": [], "encodings": [{"mappedSsrc": 1}]})
    builder.Finish(serialize_rtp_mapping(builder, mapping))
    fbs_mapping = FbsRtpMapping.RtpMapping.GetRootAs(builder.Output(), 0)
    assert fbs_mapping.CodecsLength() == 0 and fbs_mapping.Encodings(0).MappedSsrc() == 1


def test_fbs_unknown_header_extension_uri_raises():
    with pytest.raises(MediasoupTypeError, match="invalid RtpHeaderExtensionUri: urn:foo"):
        _round_trip({"codecs": [], "headerExtensions": [{"uri": "urn:foo", "id": 1}]})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"codecs": [{"mimeType": "video/VP8", "payloadType": 300, "clockRate": 90000}]}, "invalid value"),
        ({"codecs": [{"mimeType": "video/VP8", "clockRate": 90000}]}, "missing payloadType"),
        ({"headerExtensions": []}, "missing codecs"),
    ],
)
def test_fbs_unserialisable_parameters_raise(params, message):
    with pytest.raises(MediasoupTypeError, match=message):
        _round_trip(params)


def test_fbs_invalid_parameter_value_raises():
    codec = {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {"x": {"y": 1}}}
    with pytest.raises(MediasoupTypeError, match="invalid parameter type"):
        _round_trip({"codecs": [codec]})


# ---------------------------------------------------------------------------
# SCTP and SRTP
# ---------------------------------------------------------------------------


def test_sctp_models_json():
    caps = {"numStreams": {"OS": 1024, "MIS": 1024}}
    assert SctpCapabilities.model_validate(caps).to_dict() == caps
    stream = {"streamId": 3, "ordered": False, "maxRetransmits": 2}
    assert SctpStreamParameters.model_validate(stream).to_dict() == stream
    assert SctpStreamParameters(stream_id=1).to_dict() == {"streamId": 1}


def test_sctp_parameters_parse_from_fbs():
    builder = flatbuffers.Builder(0)
    FbsSctpParameters.SctpParametersStart(builder)
    FbsSctpParameters.SctpParametersAddPort(builder, 5000)
    FbsSctpParameters.SctpParametersAddMaxSendMessageSize(builder, 262144)
    FbsSctpParameters.SctpParametersAddMaxReceiveMessageSize(builder, 262145)
    FbsSctpParameters.SctpParametersAddSendBufferSize(builder, 1)
    FbsSctpParameters.SctpParametersAddPerStreamSendQueueLimit(builder, 2)
    FbsSctpParameters.SctpParametersAddMaxReceiverWindowBufferSize(builder, 3)
    FbsSctpParameters.SctpParametersAddIsDataChannel(builder, True)
    builder.Finish(FbsSctpParameters.SctpParametersEnd(builder))
    parsed = parse_sctp_parameters(FbsSctpParameters.SctpParameters.GetRootAs(builder.Output(), 0))
    assert parsed == {
        "port": 5000,
        "maxSendMessageSize": 262144,
        "maxReceiveMessageSize": 262145,
        "sendBufferSize": 1,
        "perStreamSendQueueLimit": 2,
        "maxReceiverWindowBufferSize": 3,
        "isDataChannel": True,
        "OS": 65535,
        "MIS": 65535,
        "maxMessageSize": 262145,
    }
    assert SctpParameters.model_validate(parsed).to_dict() == parsed


@pytest.mark.parametrize(
    "params",
    [
        {"streamId": 0, "ordered": True},
        {"streamId": 1023, "ordered": False, "maxPacketLifeTime": 500},
        {"streamId": 7, "ordered": False, "maxRetransmits": 0},
    ],
)
def test_sctp_stream_parameters_fbs_round_trip(params):
    builder = flatbuffers.Builder(0)
    builder.Finish(serialize_sctp_stream_parameters(builder, params))
    fbs_params = FbsSctpStreamParameters.SctpStreamParameters.GetRootAs(builder.Output(), 0)
    assert parse_sctp_stream_parameters(fbs_params) == params


def test_srtp_parameters_fbs_round_trip():
    params = {"cryptoSuite": "AES_CM_128_HMAC_SHA1_80", "keyBase64": "ZnQ3eWJraDg0d3ZoYzM5cXN1Y2pnaHU5NWxrZTVv"}
    assert SrtpParameters.model_validate(params).to_dict() == params
    for value in (params, SrtpParameters.model_validate(params)):
        builder = flatbuffers.Builder(0)
        builder.Finish(serialize_srtp_parameters(builder, value))
        assert parse_srtp_parameters(FbsSrtpParameters.SrtpParameters.GetRootAs(builder.Output(), 0)) == params


def test_srtp_invalid_crypto_suite():
    with pytest.raises(ValidationError):
        SrtpParameters.model_validate({"cryptoSuite": "NULL", "keyBase64": "x"})
    with pytest.raises(MediasoupTypeError, match="invalid SrtpCryptoSuite"):
        serialize_srtp_parameters(flatbuffers.Builder(0), {"cryptoSuite": "NULL", "keyBase64": "x"})


# ---------------------------------------------------------------------------
# Scalability modes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("L1T3", (1, 3, False)),
        ("L3T3_KEY", (3, 3, True)),
        ("S3T3", (3, 3, False)),
        ("L2T2h", (2, 2, False)),  # only the start must match
        ("L10T12", (10, 12, False)),
        ("L0T1", (1, 1, False)),
        ("foo", (1, 1, False)),
        ("", (1, 1, False)),
        (None, (1, 1, False)),
    ],
)
def test_parse_scalability_mode(mode, expected):
    assert parse_scalability_mode(mode) == ScalabilityMode(*expected)

"""Unit tests of ``workers.ortc``: mediasoup's ``test-ortc.ts`` ported, plus the
negotiation rules around it (codec matching, RTX pairing, header extensions,
bandwidth-estimation feedback, pipe consumers) and input validation.

Expected values marked "mediasoup 3.27.1" were produced by running the same
inputs through mediasoup's own ``ortc.js``.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from workers import ortc
from workers.errors import MediasoupError, MediasoupTypeError, UnsupportedError
from workers.rtp_parameters import RtpCapabilities, RtpParameters

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
TRANSPORT_WIDE_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
ABS_CAPTURE_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"
DEPENDENCY_DESCRIPTOR = "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"
VIDEO_ORIENTATION = "urn:3gpp:video-orientation"
TOFFSET = "urn:ietf:params:rtp-hdrext:toffset"

VIDEO_FEEDBACK = [
    {"type": "nack", "parameter": ""},
    {"type": "nack", "parameter": "pli"},
    {"type": "ccm", "parameter": "fir"},
    {"type": "goog-remb", "parameter": ""},
    {"type": "transport-cc", "parameter": ""},
]


@pytest.fixture
def ssrcs(monkeypatch):
    """Deterministic SSRC bases: 100000000, 200000000... in call order."""
    counter = itertools.count(1)
    monkeypatch.setattr(ortc, "_random_ssrc", lambda: next(counter) * 100_000_000)


# ---------------------------------------------------------------------------
# test-ortc.ts
# ---------------------------------------------------------------------------


def test_generate_router_rtp_capabilities_succeeds():
    media_codecs = [
        {
            "kind": "audio",
            "mimeType": "audio/opus",
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"useinbandfec": 1, "foo": "bar"},
        },
        {"kind": "video", "mimeType": "video/VP8", "preferredPayloadType": 125, "clockRate": 90000},
        {
            "kind": "video",
            "mimeType": "video/H264",
            "clockRate": 90000,
            "parameters": {"level-asymmetry-allowed": 1, "profile-level-id": "42e01f", "foo": "bar"},
            "rtcpFeedback": [],  # Ignored.
        },
    ]

    caps = ortc.generate_router_rtp_capabilities(media_codecs)

    assert len(caps["codecs"]) == 5
    assert caps["codecs"][0] == {
        "kind": "audio",
        "mimeType": "audio/opus",
        "preferredPayloadType": 100,  # The first available dynamic PT.
        "clockRate": 48000,
        "channels": 2,
        "parameters": {"useinbandfec": 1, "foo": "bar"},
        "rtcpFeedback": [{"type": "nack", "parameter": ""}, {"type": "transport-cc", "parameter": ""}],
    }
    assert caps["codecs"][1] == {
        "kind": "video",
        "mimeType": "video/VP8",
        "preferredPayloadType": 125,
        "clockRate": 90000,
        "parameters": {},
        "rtcpFeedback": VIDEO_FEEDBACK,
    }
    assert caps["codecs"][2] == {
        "kind": "video",
        "mimeType": "video/rtx",
        "preferredPayloadType": 101,  # The second available dynamic PT.
        "clockRate": 90000,
        "parameters": {"apt": 125},
        "rtcpFeedback": [],
    }
    assert caps["codecs"][3] == {
        "kind": "video",
        "mimeType": "video/H264",
        "preferredPayloadType": 102,
        "clockRate": 90000,
        # packetization-mode was not given and defaults to 0: not added.
        "parameters": {"level-asymmetry-allowed": 1, "profile-level-id": "42e01f", "foo": "bar"},
        "rtcpFeedback": VIDEO_FEEDBACK,
    }
    assert caps["codecs"][4] == {
        "kind": "video",
        "mimeType": "video/rtx",
        "preferredPayloadType": 103,
        "clockRate": 90000,
        "parameters": {"apt": 102},
        "rtcpFeedback": [],
    }


@pytest.mark.parametrize(
    "media_codec",
    [
        {"kind": "audio", "mimeType": "audio/chicken", "clockRate": 8000, "channels": 4},
        {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 1},
    ],
)
def test_generate_router_rtp_capabilities_with_unsupported_codecs_raises(media_codec):
    with pytest.raises(UnsupportedError, match="media codec not supported"):
        ortc.generate_router_rtp_capabilities([media_codec])


def test_generate_router_rtp_capabilities_with_too_many_codecs_raises():
    media_codecs = [{"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2}] * 100
    with pytest.raises(MediasoupError, match="cannot allocate"):
        ortc.generate_router_rtp_capabilities(media_codecs)


def _h264_router_caps():
    return ortc.generate_router_rtp_capabilities(
        [
            {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
            {
                "kind": "video",
                "mimeType": "video/H264",
                "clockRate": 90000,
                "parameters": {
                    "level-asymmetry-allowed": 1,
                    "packetization-mode": 1,
                    "profile-level-id": "4d0032",
                    "bar": "lalala",
                },
            },
        ]
    )


def _h264_producer_params():
    return {
        "codecs": [
            {
                "mimeType": "video/H264",
                "payloadType": 111,
                "clockRate": 90000,
                "parameters": {"foo": 1234, "packetization-mode": 1, "profile-level-id": "4d0032"},
                "rtcpFeedback": [
                    {"type": "nack", "parameter": ""},
                    {"type": "nack", "parameter": "pli"},
                    {"type": "goog-remb", "parameter": ""},
                ],
            },
            {
                "mimeType": "video/rtx",
                "payloadType": 112,
                "clockRate": 90000,
                "parameters": {"apt": 111},
                "rtcpFeedback": [],
            },
        ],
        "headerExtensions": [{"uri": MID, "id": 1}, {"uri": VIDEO_ORIENTATION, "id": 2}],
        "encodings": [
            {"ssrc": 11111111, "rtx": {"ssrc": 11111112}, "maxBitrate": 111111, "scalabilityMode": "L1T3"},
            {"ssrc": 21111111, "rtx": {"ssrc": 21111112}, "maxBitrate": 222222, "scalabilityMode": "L1T3"},
            {"rid": "high", "maxBitrate": 333333, "scalabilityMode": "L1T3"},
        ],
        "rtcp": {"cname": "qwerty1234"},
    }


def _remote_caps():
    # test-ortc.ts, with the header extension ids of mediasoup 3.27's
    # supported capabilities (video-orientation 8, toffset 9).
    return {
        "codecs": [
            {
                "kind": "audio",
                "mimeType": "audio/opus",
                "preferredPayloadType": 100,
                "clockRate": 48000,
                "channels": 2,
                "parameters": {},
                "rtcpFeedback": [],
            },
            {
                "kind": "video",
                "mimeType": "video/H264",
                "preferredPayloadType": 101,
                "clockRate": 90000,
                "parameters": {"packetization-mode": 1, "profile-level-id": "4d0032", "baz": "LOLOLO"},
                "rtcpFeedback": [
                    {"type": "nack", "parameter": ""},
                    {"type": "nack", "parameter": "pli"},
                    {"type": "foo", "parameter": "FOO"},
                ],
            },
            {
                "kind": "video",
                "mimeType": "video/rtx",
                "preferredPayloadType": 102,
                "clockRate": 90000,
                "parameters": {"apt": 101},
                "rtcpFeedback": [],
            },
        ],
        "headerExtensions": [
            {"kind": "audio", "uri": MID, "preferredId": 1, "preferredEncrypt": False, "direction": "sendrecv"},
            {"kind": "video", "uri": MID, "preferredId": 1, "preferredEncrypt": False, "direction": "sendrecv"},
            {
                "kind": "video",
                "uri": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
                "preferredId": 2,
                "preferredEncrypt": False,
                "direction": "sendrecv",
            },
            {
                "kind": "audio",
                "uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
                "preferredId": 8,
                "preferredEncrypt": False,
                "direction": "sendrecv",
            },
            {
                "kind": "video",
                "uri": VIDEO_ORIENTATION,
                "preferredId": 8,
                "preferredEncrypt": False,
                "direction": "sendrecv",
            },
            {"kind": "video", "uri": TOFFSET, "preferredId": 9, "preferredEncrypt": False, "direction": "sendrecv"},
        ],
    }


def test_producer_mapping_consumable_consumer_and_pipe_consumer_parameters_succeed():
    router_caps = _h264_router_caps()
    params = ortc.validate_rtp_parameters(_h264_producer_params())

    rtp_mapping = ortc.get_producer_rtp_parameters_mapping(params, router_caps)

    assert rtp_mapping["codecs"] == [
        {"payloadType": 111, "mappedPayloadType": 101},
        {"payloadType": 112, "mappedPayloadType": 102},
    ]
    encodings = rtp_mapping["encodings"]
    assert encodings[0]["ssrc"] == 11111111 and "rid" not in encodings[0]
    assert encodings[1]["ssrc"] == 21111111 and "rid" not in encodings[1]
    assert "ssrc" not in encodings[2] and encodings[2]["rid"] == "high"
    assert all(isinstance(encoding["mappedSsrc"], int) for encoding in encodings)

    consumable = ortc.get_consumable_rtp_parameters("video", params, router_caps, rtp_mapping)

    assert consumable["codecs"][0]["mimeType"] == "video/H264"
    assert consumable["codecs"][0]["payloadType"] == 101
    assert consumable["codecs"][0]["clockRate"] == 90000
    assert consumable["codecs"][0]["parameters"] == {
        "foo": 1234,
        "packetization-mode": 1,
        "profile-level-id": "4d0032",
    }
    assert consumable["codecs"][1]["mimeType"] == "video/rtx"
    assert consumable["codecs"][1]["payloadType"] == 102
    assert consumable["codecs"][1]["clockRate"] == 90000
    assert consumable["codecs"][1]["parameters"] == {"apt": 101}
    for index, max_bitrate in enumerate((111111, 222222, 333333)):
        assert consumable["encodings"][index] == {
            "ssrc": encodings[index]["mappedSsrc"],
            "dtx": False,  # Filled by validation.
            "maxBitrate": max_bitrate,
            "scalabilityMode": "L1T3",
        }
    assert consumable["rtcp"] == {"cname": "qwerty1234", "reducedSize": True}

    consumer = ortc.get_consumer_rtp_parameters(
        consumable_rtp_parameters=consumable,
        remote_rtp_capabilities=ortc.validate_rtp_capabilities(_remote_caps()),
        pipe=False,
        enable_rtx=True,
    )

    assert len(consumer["codecs"]) == 2
    assert consumer["codecs"][0] == {
        "mimeType": "video/H264",
        "payloadType": 101,
        "clockRate": 90000,
        "parameters": {"foo": 1234, "packetization-mode": 1, "profile-level-id": "4d0032"},
        "rtcpFeedback": [
            {"type": "nack", "parameter": ""},
            {"type": "nack", "parameter": "pli"},
            {"type": "foo", "parameter": "FOO"},
        ],
    }
    assert consumer["codecs"][1] == {
        "mimeType": "video/rtx",
        "payloadType": 102,
        "clockRate": 90000,
        "parameters": {"apt": 101},
        "rtcpFeedback": [],
    }
    assert len(consumer["encodings"]) == 1
    encoding = consumer["encodings"][0]
    assert isinstance(encoding["ssrc"], int)
    assert encoding["rtx"] == {"ssrc": encoding["ssrc"] + 1}
    assert encoding["scalabilityMode"] == "L3T3"
    assert encoding["maxBitrate"] == 333333
    assert consumer["headerExtensions"] == [
        {"uri": MID, "id": 1, "encrypt": False, "parameters": {}},
        {"uri": VIDEO_ORIENTATION, "id": 8, "encrypt": False, "parameters": {}},
        {"uri": TOFFSET, "id": 9, "encrypt": False, "parameters": {}},
    ]
    assert consumer["rtcp"] == {"cname": "qwerty1234", "reducedSize": True}

    pipe_consumer = ortc.get_pipe_consumer_rtp_parameters(consumable_rtp_parameters=consumable, enable_rtx=False)

    assert pipe_consumer["codecs"] == [
        {
            "mimeType": "video/H264",
            "payloadType": 101,
            "clockRate": 90000,
            "parameters": {"foo": 1234, "packetization-mode": 1, "profile-level-id": "4d0032"},
            "rtcpFeedback": [{"type": "nack", "parameter": "pli"}, {"type": "ccm", "parameter": "fir"}],
        }
    ]
    assert len(pipe_consumer["encodings"]) == 3
    for encoding in pipe_consumer["encodings"]:
        assert isinstance(encoding["ssrc"], int)
        assert "rtx" not in encoding
        assert isinstance(encoding["maxBitrate"], int)
        assert encoding["scalabilityMode"] == "L1T3"
    assert pipe_consumer["rtcp"] == {"cname": "qwerty1234", "reducedSize": True}


def test_get_producer_rtp_parameters_mapping_with_incompatible_params_raises():
    router_caps = ortc.generate_router_rtp_capabilities(
        [
            {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
            {
                "kind": "video",
                "mimeType": "video/H264",
                "clockRate": 90000,
                "parameters": {"packetization-mode": 1, "profile-level-id": "640032"},
            },
        ]
    )
    params = ortc.validate_rtp_parameters(
        {
            "codecs": [
                {
                    "mimeType": "video/VP8",
                    "payloadType": 120,
                    "clockRate": 90000,
                    "rtcpFeedback": [{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "fir"}],
                }
            ],
            "headerExtensions": [],
            "encodings": [{"ssrc": 11111111}],
            "rtcp": {"cname": "qwerty1234"},
        }
    )
    with pytest.raises(UnsupportedError, match=r"unsupported codec \[mimeType:video/VP8, payloadType:120\]"):
        ortc.get_producer_rtp_parameters_mapping(params, router_caps)


# ---------------------------------------------------------------------------
# Router capabilities
# ---------------------------------------------------------------------------


def test_router_capabilities_have_all_supported_header_extensions_and_fresh_copies():
    caps_a = ortc.generate_router_rtp_capabilities([])
    caps_b = ortc.generate_router_rtp_capabilities([])
    assert caps_a["codecs"] == []
    assert len(caps_a["headerExtensions"]) == 18
    assert {ext["uri"] for ext in caps_a["headerExtensions"]} >= {MID, TRANSPORT_WIDE_CC, DEPENDENCY_DESCRIPTOR}
    caps_a["headerExtensions"][0]["preferredId"] = 99
    assert caps_b["headerExtensions"][0]["preferredId"] == 1
    assert ortc.generate_router_rtp_capabilities([])["headerExtensions"][0]["preferredId"] == 1


def test_router_codecs_keep_static_payload_types_and_skip_taken_dynamic_ones():
    caps = ortc.generate_router_rtp_capabilities(
        [
            {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2, "preferredPayloadType": 101},
            {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
            {"mimeType": "audio/G722", "clockRate": 8000},  # kind comes from the mimeType
            {"kind": "audio", "mimeType": "audio/telephone-event", "clockRate": 8000},
        ]
    )
    assert [(c["mimeType"], c["preferredPayloadType"]) for c in caps["codecs"]] == [
        ("audio/opus", 101),
        ("video/VP8", 100),
        ("video/rtx", 102),
        ("audio/G722", 9),
        ("audio/telephone-event", 103),
    ]
    assert caps["codecs"][3]["kind"] == "audio"
    assert caps["codecs"][3]["channels"] == 1


def test_router_codec_matching_ignores_mime_type_case_and_merges_parameters():
    caps = ortc.generate_router_rtp_capabilities(
        [{"kind": "video", "mimeType": "video/h264", "clockRate": 90000, "parameters": {"packetization-mode": 1}}]
    )
    assert caps["codecs"][0]["mimeType"] == "video/H264"  # the supported codec's spelling
    assert caps["codecs"][0]["parameters"] == {"level-asymmetry-allowed": 1, "packetization-mode": 1}


def test_router_duplicated_preferred_payload_type_raises():
    with pytest.raises(MediasoupTypeError, match=r"duplicated codec\.preferredPayloadType"):
        ortc.generate_router_rtp_capabilities(
            [
                {
                    "kind": "audio",
                    "mimeType": "audio/opus",
                    "clockRate": 48000,
                    "channels": 2,
                    "preferredPayloadType": 100,
                },
                {"kind": "audio", "mimeType": "audio/PCMA", "clockRate": 8000, "preferredPayloadType": 100},
            ]
        )


def test_router_multiopus_matches_on_stream_layout():
    surround: dict[str, Any] = {
        "kind": "audio",
        "mimeType": "audio/multiopus",
        "clockRate": 48000,
        "channels": 6,
        "parameters": {"channel_mapping": "0,4,1,2,3,5", "num_streams": 4, "coupled_streams": 2},
    }
    caps = ortc.generate_router_rtp_capabilities([surround])
    assert caps["codecs"][0]["parameters"]["num_streams"] == 4

    bad_layout = copy.deepcopy(surround)
    bad_layout["parameters"]["num_streams"] = 3
    with pytest.raises(UnsupportedError):
        ortc.generate_router_rtp_capabilities([bad_layout])


def test_router_rejects_non_list_media_codecs():
    with pytest.raises(MediasoupTypeError, match="mediaCodecs must be an Array"):
        ortc.generate_router_rtp_capabilities({"mimeType": "audio/opus"})


# ---------------------------------------------------------------------------
# Codec matching
# ---------------------------------------------------------------------------


def _codec(mime_type, clock_rate=90000, **parameters):
    return {"mimeType": mime_type, "clockRate": clock_rate, "parameters": parameters}


def test_is_rtx_codec():
    assert ortc.is_rtx_codec({"mimeType": "video/rtx"})
    assert ortc.is_rtx_codec({"mimeType": "Audio/RTX"})
    assert not ortc.is_rtx_codec({"mimeType": "/rtx"})
    assert not ortc.is_rtx_codec({"mimeType": "video/VP8"})


def test_match_codecs_compares_mime_type_clock_rate_and_channels():
    assert ortc.match_codecs(_codec("video/VP8"), _codec("VIDEO/vp8"))
    assert not ortc.match_codecs(_codec("video/VP8"), _codec("video/VP9"))
    assert not ortc.match_codecs(_codec("video/VP8"), _codec("video/VP8", 45000))
    assert not ortc.match_codecs(
        {**_codec("audio/opus", 48000), "channels": 2}, {**_codec("audio/opus", 48000), "channels": 1}
    )


def test_match_codecs_vp9_profile_only_when_strict():
    profile_0, profile_2 = _codec("video/VP9"), _codec("video/VP9", **{"profile-id": 2})
    assert ortc.match_codecs(profile_0, profile_2)
    assert not ortc.match_codecs(profile_0, profile_2, strict=True)
    assert ortc.match_codecs(profile_0, _codec("video/VP9", **{"profile-id": 0}), strict=True)


def test_match_codecs_h264_packetization_mode_and_profile_when_strict():
    baseline_mode_1 = _codec("video/H264", **{"packetization-mode": 1, "profile-level-id": "42e01f"})
    baseline_mode_0 = _codec("video/H264", **{"profile-level-id": "42e01f"})
    high = _codec("video/H264", **{"packetization-mode": 1, "profile-level-id": "640032"})
    assert ortc.match_codecs(baseline_mode_1, baseline_mode_0)
    assert not ortc.match_codecs(baseline_mode_1, baseline_mode_0, strict=True)
    assert not ortc.match_codecs(baseline_mode_1, high, strict=True)
    assert not ortc.match_codecs(baseline_mode_1, _codec("video/H264", **{"profile-level-id": "zzzzzz"}), strict=True)


def test_match_codecs_h264_modify_writes_the_answer_level():
    offer = _codec("video/H264", **{"packetization-mode": 1, "profile-level-id": "42e033"})
    answer = _codec("video/H264", **{"packetization-mode": 1, "profile-level-id": "42e01f"})
    assert ortc.match_codecs(offer, answer, strict=True)
    assert offer["parameters"]["profile-level-id"] == "42e033"  # untouched without modify
    assert ortc.match_codecs(offer, answer, strict=True, modify=True)
    assert offer["parameters"]["profile-level-id"] == "42e01f"  # min level, no asymmetry allowed


def test_match_codecs_h264_modify_drops_absent_profile_level_id():
    a, b = _codec("video/H264", **{"profile-level-id": ""}), _codec("video/H264")
    assert ortc.match_codecs(a, b, strict=True, modify=True)
    assert "profile-level-id" not in a["parameters"]


# ---------------------------------------------------------------------------
# Producer mapping
# ---------------------------------------------------------------------------


def _vp8_router_caps():
    return ortc.generate_router_rtp_capabilities(
        [
            {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
            {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
        ]
    )


def _vp8_params(*, rtx_apt=96, encodings=None, header_extensions=None):
    codecs = [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "rtcpFeedback": VIDEO_FEEDBACK}]
    if rtx_apt is not None:
        codecs.append({"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": rtx_apt}})
    return ortc.validate_rtp_parameters(
        {
            "mid": "1",
            "codecs": codecs,
            "headerExtensions": header_extensions if header_extensions is not None else [{"uri": MID, "id": 4}],
            "encodings": encodings if encodings is not None else [{"ssrc": 1, "rtx": {"ssrc": 2}}],
            "rtcp": {"cname": "cname"},
        }
    )


def test_mapping_gives_consecutive_mapped_ssrcs(ssrcs):
    params = _vp8_params(encodings=[{"rid": "r0"}, {"rid": "r1"}, {"rid": "r2"}])
    rtp_mapping = ortc.get_producer_rtp_parameters_mapping(params, _vp8_router_caps())
    assert rtp_mapping == {
        "codecs": [{"payloadType": 96, "mappedPayloadType": 101}, {"payloadType": 97, "mappedPayloadType": 102}],
        "encodings": [
            {"rid": "r0", "mappedSsrc": 100000000},
            {"rid": "r1", "mappedSsrc": 100000001},
            {"rid": "r2", "mappedSsrc": 100000002},
        ],
    }


def test_mapping_rtx_without_its_media_codec_raises():
    with pytest.raises(MediasoupTypeError, match="missing media codec found for RTX PT 97"):
        ortc.get_producer_rtp_parameters_mapping(_vp8_params(rtx_apt=95), _vp8_router_caps())


def test_mapping_rtx_when_router_has_no_rtx_raises():
    caps = _vp8_router_caps()
    caps["codecs"] = [c for c in caps["codecs"] if not ortc.is_rtx_codec(c)]
    with pytest.raises(UnsupportedError, match="no RTX codec for capability codec PT 101"):
        ortc.get_producer_rtp_parameters_mapping(_vp8_params(), caps)


def test_mapping_rewrites_h264_profile_level_id_of_the_producer():
    caps = ortc.generate_router_rtp_capabilities(
        [
            {
                "kind": "video",
                "mimeType": "video/H264",
                "clockRate": 90000,
                "parameters": {"packetization-mode": 1, "profile-level-id": "42e01f"},
            }
        ]
    )
    params = ortc.validate_rtp_parameters(
        {
            "codecs": [
                {
                    "mimeType": "video/H264",
                    "payloadType": 125,
                    "clockRate": 90000,
                    "parameters": {"packetization-mode": 1, "profile-level-id": "42e033", "level-asymmetry-allowed": 1},
                }
            ],
            "encodings": [{"ssrc": 7}],
        }
    )
    ortc.get_producer_rtp_parameters_mapping(params, caps)
    # mediasoup 3.27.1: both allow asymmetry, so the Producer keeps its own level.
    assert params["codecs"][0]["parameters"]["profile-level-id"] == "42e033"


# ---------------------------------------------------------------------------
# Consumable parameters
# ---------------------------------------------------------------------------


def _consumable(params=None, caps=None, kind="video"):
    caps = caps or _vp8_router_caps()
    params = params or _vp8_params()
    rtp_mapping = ortc.get_producer_rtp_parameters_mapping(params, caps)
    return ortc.get_consumable_rtp_parameters(kind, params, caps, rtp_mapping)


def test_consumable_header_extensions_are_the_routers_sendable_ones_for_the_kind():
    consumable = _consumable()
    assert [(ext["uri"], ext["id"]) for ext in consumable["headerExtensions"]] == [
        (MID, 1),
        (ABS_SEND_TIME, 4),
        (TRANSPORT_WIDE_CC, 5),
        (VIDEO_ORIENTATION, 8),
        (TOFFSET, 9),
        ("http://www.webrtc.org/experiments/rtp-hdrext/playout-delay", 11),
        ("urn:mediasoup:params:rtp-hdrext:packet-id", 12),
    ]


def test_consumable_offers_abs_capture_time_only_if_the_producer_sends_it():
    consumable = _consumable(_vp8_params(header_extensions=[{"uri": MID, "id": 1}, {"uri": ABS_CAPTURE_TIME, "id": 3}]))
    assert {"uri": ABS_CAPTURE_TIME, "id": 10, "encrypt": False, "parameters": {}} in consumable["headerExtensions"]


def test_consumable_audio_extensions(ssrcs):
    params = ortc.validate_rtp_parameters(
        {
            "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
            "encodings": [{"ssrc": 1111, "dtx": True}],
            "rtcp": {"cname": "xyz"},
            "msid": "stream track",
        }
    )
    consumable = _consumable(params, kind="audio")
    assert [ext["uri"] for ext in consumable["headerExtensions"]] == [
        MID,
        ABS_SEND_TIME,
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
        "urn:mediasoup:params:rtp-hdrext:packet-id",
    ]
    assert consumable["codecs"] == [
        {
            "mimeType": "audio/opus",
            "payloadType": 100,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {},
            "rtcpFeedback": [{"type": "nack", "parameter": ""}, {"type": "transport-cc", "parameter": ""}],
        }
    ]
    assert consumable["encodings"] == [{"ssrc": 100000000, "dtx": True}]
    assert consumable["msid"] == "stream track"


def test_consumable_encodings_drop_rid_rtx_and_codec_payload_type_but_keep_the_rest():
    params = _vp8_params(
        encodings=[
            {"rid": "r0", "codecPayloadType": 96, "maxBitrate": 100000, "scaleResolutionDownBy": 4, "active": True},
            {"rid": "r1", "rtx": {"ssrc": 5}, "maxBitrate": 300000},
        ]
    )
    consumable = _consumable(params)
    assert [set(encoding) for encoding in consumable["encodings"]] == [
        {"ssrc", "dtx", "maxBitrate", "scaleResolutionDownBy", "active"},
        {"ssrc", "dtx", "maxBitrate"},
    ]
    assert params["encodings"][0]["rid"] == "r0"  # the Producer's own are untouched


# ---------------------------------------------------------------------------
# can_consume / consumer parameters
# ---------------------------------------------------------------------------


def _chrome_caps(with_rtx=True, header_extensions=None):
    codecs = [
        {
            "kind": "audio",
            "mimeType": "audio/opus",
            "preferredPayloadType": 100,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"minptime": 10, "useinbandfec": 1},
            "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}],
        },
        {
            "kind": "video",
            "mimeType": "video/VP8",
            "preferredPayloadType": 101,
            "clockRate": 90000,
            "rtcpFeedback": copy.deepcopy(VIDEO_FEEDBACK),
        },
    ]
    if with_rtx:
        codecs.append(
            {
                "kind": "video",
                "mimeType": "video/rtx",
                "preferredPayloadType": 102,
                "clockRate": 90000,
                "parameters": {"apt": 101},
            }
        )
    if header_extensions is None:
        header_extensions = [
            {"kind": "video", "uri": MID, "preferredId": 1},
            {"kind": "video", "uri": ABS_SEND_TIME, "preferredId": 4},
            {"kind": "video", "uri": TRANSPORT_WIDE_CC, "preferredId": 5},
            {"kind": "video", "uri": VIDEO_ORIENTATION, "preferredId": 13},  # different id: not used
        ]
    return {"codecs": codecs, "headerExtensions": header_extensions}


def test_can_consume():
    consumable = _consumable()
    assert ortc.can_consume(consumable, _chrome_caps())
    assert not ortc.can_consume(consumable, {"codecs": [], "headerExtensions": []})
    only_rtx = {
        "codecs": [
            {
                "kind": "video",
                "mimeType": "video/rtx",
                "preferredPayloadType": 102,
                "clockRate": 90000,
                "parameters": {"apt": 101},
            }
        ]
    }
    assert not ortc.can_consume(consumable, only_rtx)


def test_can_consume_accepts_a_model_and_validates_caps():
    assert ortc.can_consume(_consumable(), RtpCapabilities.model_validate(_chrome_caps()))
    with pytest.raises(MediasoupTypeError, match=r"invalid ext\.kind"):
        ortc.can_consume(_consumable(), {"headerExtensions": [{"uri": MID, "preferredId": 1}]})


def _consumer(consumable, caps, *, pipe=False, enable_rtx=True):
    return ortc.get_consumer_rtp_parameters(
        consumable_rtp_parameters=consumable,
        remote_rtp_capabilities=ortc.validate_rtp_capabilities(caps),
        pipe=pipe,
        enable_rtx=enable_rtx,
    )


def test_consumer_parameters_simulcast_vp8_with_rtx(ssrcs):
    """mediasoup 3.27.1 gives exactly this for the same input."""
    params = _vp8_params(
        encodings=[
            {"rid": "r0", "scalabilityMode": "L1T3", "maxBitrate": 100000},
            {"rid": "r1", "scalabilityMode": "L1T3", "maxBitrate": 300000},
            {"rid": "r2", "scalabilityMode": "L1T3", "maxBitrate": 900000},
        ]
    )
    consumer = _consumer(_consumable(params), _chrome_caps())
    assert consumer == {
        "codecs": [
            {
                "mimeType": "video/VP8",
                "payloadType": 101,
                "clockRate": 90000,
                "parameters": {},
                # transport-wide-cc is in use: REMB goes.
                "rtcpFeedback": [
                    {"type": "nack", "parameter": ""},
                    {"type": "nack", "parameter": "pli"},
                    {"type": "ccm", "parameter": "fir"},
                    {"type": "transport-cc", "parameter": ""},
                ],
            },
            {
                "mimeType": "video/rtx",
                "payloadType": 102,
                "clockRate": 90000,
                "parameters": {"apt": 101},
                "rtcpFeedback": [],
            },
        ],
        "headerExtensions": [
            {"uri": MID, "id": 1, "encrypt": False, "parameters": {}},
            {"uri": ABS_SEND_TIME, "id": 4, "encrypt": False, "parameters": {}},
            {"uri": TRANSPORT_WIDE_CC, "id": 5, "encrypt": False, "parameters": {}},
        ],
        "encodings": [{"ssrc": 200000000, "rtx": {"ssrc": 200000001}, "scalabilityMode": "L3T3", "maxBitrate": 900000}],
        "rtcp": {"cname": "cname", "reducedSize": True},
    }


def test_consumer_without_rtx_has_no_rtx_codec_nor_plain_nack(ssrcs):
    consumer = _consumer(_consumable(), _chrome_caps(), enable_rtx=False)
    assert [codec["mimeType"] for codec in consumer["codecs"]] == ["video/VP8"]
    assert {"type": "nack", "parameter": ""} not in consumer["codecs"][0]["rtcpFeedback"]
    assert {"type": "nack", "parameter": "pli"} in consumer["codecs"][0]["rtcpFeedback"]
    assert consumer["encodings"] == [{"ssrc": 200000000}]


def test_consumer_drops_rtx_when_the_remote_has_none(ssrcs):
    consumer = _consumer(_consumable(), _chrome_caps(with_rtx=False))
    assert [codec["mimeType"] for codec in consumer["codecs"]] == ["video/VP8"]
    assert "rtx" not in consumer["encodings"][0]


@pytest.mark.parametrize(
    ("uris", "kept", "dropped"),
    [
        ([TRANSPORT_WIDE_CC, ABS_SEND_TIME], "transport-cc", "goog-remb"),
        ([ABS_SEND_TIME], "goog-remb", "transport-cc"),
        ([], None, "transport-cc"),
        ([], None, "goog-remb"),
    ],
)
def test_consumer_bandwidth_estimation_feedback_follows_extensions(uris, kept, dropped):
    ids = {ABS_SEND_TIME: 4, TRANSPORT_WIDE_CC: 5}
    caps = _chrome_caps(header_extensions=[{"kind": "video", "uri": uri, "preferredId": ids[uri]} for uri in uris])
    feedback_types = {fb["type"] for fb in _consumer(_consumable(), caps)["codecs"][0]["rtcpFeedback"]}
    assert dropped not in feedback_types
    if kept:
        assert kept in feedback_types


def test_consumer_with_no_compatible_codec_raises():
    with pytest.raises(UnsupportedError, match="no compatible media codecs"):
        _consumer(_consumable(), {"codecs": [_chrome_caps()["codecs"][0]]})


def test_consumer_pipe_keeps_all_encodings_with_new_ssrcs(ssrcs):
    params = _vp8_params(encodings=[{"rid": "r0", "scaleResolutionDownBy": 2}, {"rid": "r1"}])
    consumer = _consumer(_consumable(params), _chrome_caps(), pipe=True)
    assert consumer["encodings"] == [
        {"dtx": False, "scaleResolutionDownBy": 2, "ssrc": 200000000, "rtx": {"ssrc": 300000000}},
        {"dtx": False, "ssrc": 200000001, "rtx": {"ssrc": 300000001}},
    ]


def test_consumer_does_not_modify_the_consumable_parameters():
    consumable = _consumable()
    before = copy.deepcopy(consumable)
    _consumer(consumable, _chrome_caps())
    _consumer(consumable, _chrome_caps(), pipe=True)
    ortc.get_pipe_consumer_rtp_parameters(consumable_rtp_parameters=consumable, enable_rtx=True)
    assert consumable == before


def test_pipe_consumer_adds_dependency_descriptor_and_drops_mid_and_bwe(ssrcs):
    """mediasoup 3.27.1 gives exactly this for the same input."""
    params = _vp8_params(header_extensions=[{"uri": MID, "id": 1}, {"uri": ABS_CAPTURE_TIME, "id": 10}])
    pipe_consumer = ortc.get_pipe_consumer_rtp_parameters(
        consumable_rtp_parameters=_consumable(params), enable_rtx=True
    )
    assert pipe_consumer == {
        "codecs": [
            {
                "mimeType": "video/VP8",
                "payloadType": 101,
                "clockRate": 90000,
                "parameters": {},
                "rtcpFeedback": [
                    {"type": "nack", "parameter": ""},
                    {"type": "nack", "parameter": "pli"},
                    {"type": "ccm", "parameter": "fir"},
                ],
            },
            {
                "mimeType": "video/rtx",
                "payloadType": 102,
                "clockRate": 90000,
                "parameters": {"apt": 101},
                "rtcpFeedback": [],
            },
        ],
        "headerExtensions": [
            {"uri": DEPENDENCY_DESCRIPTOR, "id": 7, "encrypt": False, "parameters": {}},
            {"uri": VIDEO_ORIENTATION, "id": 8, "encrypt": False, "parameters": {}},
            {"uri": TOFFSET, "id": 9, "encrypt": False, "parameters": {}},
            {"uri": ABS_CAPTURE_TIME, "id": 10, "encrypt": False, "parameters": {}},
            {
                "uri": "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
                "id": 11,
                "encrypt": False,
                "parameters": {},
            },
            {"uri": "urn:mediasoup:params:rtp-hdrext:packet-id", "id": 12, "encrypt": False, "parameters": {}},
        ],
        "encodings": [{"ssrc": 200000000, "dtx": False, "rtx": {"ssrc": 300000000}}],
        "rtcp": {"cname": "cname", "reducedSize": True},
    }


def test_pipe_consumers_do_not_share_the_dependency_descriptor_object():
    consumable = _consumable()
    first = ortc.get_pipe_consumer_rtp_parameters(consumable_rtp_parameters=consumable)
    second = ortc.get_pipe_consumer_rtp_parameters(consumable_rtp_parameters=consumable)
    first["headerExtensions"][0]["parameters"]["x"] = 1
    assert second["headerExtensions"][0]["parameters"] == {}


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def test_validate_rtp_parameters_fills_mediasoup_defaults_in_place():
    params = {
        "codecs": [
            {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000},
            {
                "mimeType": "video/VP8",
                "payloadType": 96,
                "clockRate": 90000,
                "channels": 1,
                "rtcpFeedback": [{"type": "nack"}],
            },
        ],
        "encodings": [{"ssrc": 1, "dtx": "yes"}],
        "rtcp": {"reducedSize": False},
    }
    assert ortc.validate_rtp_parameters(params) is params
    assert params == {
        "codecs": [
            {
                "mimeType": "audio/opus",
                "payloadType": 111,
                "clockRate": 48000,
                "channels": 1,
                "parameters": {},
                "rtcpFeedback": [],
            },
            {
                "mimeType": "video/VP8",
                "payloadType": 96,
                "clockRate": 90000,
                "parameters": {},
                "rtcpFeedback": [{"type": "nack", "parameter": ""}],
            },
        ],
        "headerExtensions": [],
        "encodings": [{"ssrc": 1, "dtx": False}],
        "rtcp": {"reducedSize": True},  # mediasoup forces it
    }


def test_validate_rtp_parameters_is_idempotent():
    params = ortc.validate_rtp_parameters(_h264_producer_params())
    again = ortc.validate_rtp_parameters(copy.deepcopy(params))
    assert again == params


def test_validate_accepts_a_pydantic_model_and_returns_its_json():
    model = RtpParameters.model_validate(_h264_producer_params())
    params = ortc.validate_rtp_parameters(model)
    assert isinstance(params, dict)
    assert params == ortc.validate_rtp_parameters(_h264_producer_params())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("nope", "params is not an object"),
        ({}, "missing params.codecs"),
        ({"codecs": {}}, "missing params.codecs"),
        ({"codecs": [], "mid": 1}, "params.mid is not a string"),
        ({"codecs": [], "msid": 1}, "params.msid is not a string"),
        ({"codecs": [], "headerExtensions": {"a": 1}}, "params.headerExtensions is not an array"),
        ({"codecs": [], "encodings": "x"}, "params.encodings is not an array"),
        ({"codecs": [], "rtcp": "x"}, "params.rtcp is not an object"),
        ({"codecs": [], "rtcp": {"cname": 5}}, "invalid rtcp.cname"),
        ({"codecs": ["x"]}, "codec is not an object"),
        ({"codecs": [{"payloadType": 1, "clockRate": 1}]}, "missing codec.mimeType"),
        ({"codecs": [{"mimeType": "opus", "payloadType": 1, "clockRate": 1}]}, "invalid codec.mimeType"),
        ({"codecs": [{"mimeType": "audio/opus", "clockRate": 1}]}, "missing codec.payloadType"),
        ({"codecs": [{"mimeType": "audio/opus", "payloadType": "1", "clockRate": 1}]}, "missing codec.payloadType"),
        ({"codecs": [{"mimeType": "audio/opus", "payloadType": True, "clockRate": 1}]}, "missing codec.payloadType"),
        ({"codecs": [{"mimeType": "audio/opus", "payloadType": 1}]}, "missing codec.clockRate"),
        (
            {"codecs": [{"mimeType": "video/rtx", "payloadType": 1, "clockRate": 1, "parameters": {"apt": "96"}}]},
            "invalid codec apt parameter",
        ),
        (
            {"codecs": [{"mimeType": "audio/opus", "payloadType": 1, "clockRate": 1, "parameters": {"x": None}}]},
            r"invalid codec parameter \[key:x",
        ),
        (
            {"codecs": [{"mimeType": "audio/opus", "payloadType": 1, "clockRate": 1, "parameters": {"x": [1]}}]},
            r"invalid codec parameter \[key:x",
        ),
        (
            {"codecs": [{"mimeType": "audio/opus", "payloadType": 1, "clockRate": 1, "rtcpFeedback": [{}]}]},
            "missing fb.type",
        ),
        ({"codecs": [], "headerExtensions": [{"id": 1}]}, "missing ext.uri"),
        ({"codecs": [], "headerExtensions": [{"uri": MID}]}, "missing ext.id"),
        ({"codecs": [], "headerExtensions": [{"uri": MID, "id": 1, "encrypt": "yes"}]}, "invalid ext.encrypt"),
        (
            {"codecs": [], "headerExtensions": [{"uri": MID, "id": 1, "parameters": {"a": {}}}]},
            "invalid header extension parameter",
        ),
        ({"codecs": [], "encodings": [{"ssrc": "1"}]}, "invalid encoding.ssrc"),
        ({"codecs": [], "encodings": [{"rid": 1}]}, "invalid encoding.rid"),
        ({"codecs": [], "encodings": [{"rtx": 5}]}, "invalid encoding.rtx"),
        ({"codecs": [], "encodings": [{"rtx": {}}]}, "missing encoding.rtx.ssrc"),
        ({"codecs": [], "encodings": [{"scalabilityMode": 3}]}, "invalid encoding.scalabilityMode"),
    ],
)
def test_validate_rtp_parameters_rejects_invalid_input(params, message):
    with pytest.raises(MediasoupTypeError, match=message):
        ortc.validate_rtp_parameters(params)


def test_validate_rtp_capabilities_fills_defaults_and_overrides_kind():
    caps = ortc.validate_rtp_capabilities(
        {
            "codecs": [{"kind": "video", "mimeType": "AUDIO/opus", "preferredPayloadType": 100, "clockRate": 48000}],
            "headerExtensions": [{"kind": "audio", "uri": MID, "preferredId": 1}],
        }
    )
    assert caps == {
        "codecs": [
            {
                "kind": "audio",
                "mimeType": "AUDIO/opus",
                "preferredPayloadType": 100,
                "clockRate": 48000,
                "channels": 1,
                "parameters": {},
                "rtcpFeedback": [],
            }
        ],
        "headerExtensions": [
            {"kind": "audio", "uri": MID, "preferredId": 1, "preferredEncrypt": False, "direction": "sendrecv"}
        ],
    }
    assert ortc.validate_rtp_capabilities({}) == {"codecs": [], "headerExtensions": []}


@pytest.mark.parametrize(
    ("caps", "message"),
    [
        (None, "caps is not an object"),
        ({"codecs": "x"}, "caps.codecs is not an array"),
        ({"headerExtensions": 3}, "caps.headerExtensions is not an array"),
        (
            {"codecs": [{"mimeType": "audio/opus", "clockRate": 1, "preferredPayloadType": "1"}]},
            "invalid codec.preferredPayloadType",
        ),
        ({"codecs": [{"mimeType": "audio/opus"}]}, "missing codec.clockRate"),
        ({"headerExtensions": [{"kind": "data", "uri": MID, "preferredId": 1}]}, "invalid ext.kind"),
        ({"headerExtensions": [{"kind": "audio", "preferredId": 1}]}, "missing ext.uri"),
        ({"headerExtensions": [{"kind": "audio", "uri": MID}]}, "missing ext.preferredId"),
        (
            {"headerExtensions": [{"kind": "audio", "uri": MID, "preferredId": 1, "preferredEncrypt": 1}]},
            "invalid ext.preferredEncrypt",
        ),
        (
            {"headerExtensions": [{"kind": "audio", "uri": MID, "preferredId": 1, "direction": 1}]},
            "invalid ext.direction",
        ),
    ],
)
def test_validate_rtp_capabilities_rejects_invalid_input(caps, message):
    with pytest.raises(MediasoupTypeError, match=message):
        ortc.validate_rtp_capabilities(caps)


def test_validate_single_items():
    assert ortc.validate_rtcp_feedback({"type": "nack"}) == {"type": "nack", "parameter": ""}
    assert ortc.validate_rtp_codec_capability({"mimeType": "video/VP8", "clockRate": 90000, "channels": 2}) == {
        "kind": "video",
        "mimeType": "video/VP8",
        "clockRate": 90000,
        "parameters": {},
        "rtcpFeedback": [],
    }
    assert ortc.validate_rtp_header_extension_parameters({"uri": MID, "id": 1}) == {
        "uri": MID,
        "id": 1,
        "encrypt": False,
        "parameters": {},
    }
    assert ortc.validate_rtp_encoding_parameters({"dtx": True}) == {"dtx": True}
    assert ortc.validate_rtcp_parameters({"cname": "x"}) == {"cname": "x", "reducedSize": True}


def test_validate_sctp_capabilities():
    caps = {"numStreams": {"OS": 1024, "MIS": 1024}}
    assert ortc.validate_sctp_capabilities(caps) is caps
    with pytest.raises(MediasoupTypeError, match=r"missing caps\.numStreams"):
        ortc.validate_sctp_capabilities({})
    with pytest.raises(MediasoupTypeError, match=r"missing numStreams\.MIS"):
        ortc.validate_sctp_capabilities({"numStreams": {"OS": 1}})


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"streamId": 1}, {"streamId": 1, "ordered": True}),
        ({"streamId": 1, "ordered": False}, {"streamId": 1, "ordered": False}),
        ({"streamId": 1, "maxRetransmits": 3}, {"streamId": 1, "ordered": False, "maxRetransmits": 3}),
        ({"streamId": 1, "maxPacketLifeTime": 500}, {"streamId": 1, "ordered": False, "maxPacketLifeTime": 500}),
        (
            {"streamId": 1, "ordered": False, "maxRetransmits": 0},
            {"streamId": 1, "ordered": False, "maxRetransmits": 0},
        ),
    ],
)
def test_validate_sctp_stream_parameters(params, expected):
    assert ortc.validate_sctp_stream_parameters(params) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "missing params.streamId"),
        ({"streamId": 1, "maxPacketLifeTime": "1"}, "invalid params.maxPacketLifeTime"),
        ({"streamId": 1, "maxRetransmits": "1"}, "invalid params.maxRetransmits"),
        ({"streamId": 1, "maxRetransmits": 1, "maxPacketLifeTime": 1}, "cannot provide both"),
        ({"streamId": 1, "ordered": True, "maxRetransmits": 1}, "cannot be ordered"),
    ],
)
def test_validate_sctp_stream_parameters_rejects_invalid_input(params, message):
    with pytest.raises(MediasoupTypeError, match=message):
        ortc.validate_sctp_stream_parameters(params)


def test_clone_is_deep():
    params = _h264_producer_params()
    cloned = ortc.clone(params)
    assert cloned == params
    cloned["codecs"][0]["parameters"]["foo"] = 0
    assert params["codecs"][0]["parameters"]["foo"] == 1234

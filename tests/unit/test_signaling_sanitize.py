"""Sanitisers of client input (issue 15): what reaches another parser is refused with a 400."""

from __future__ import annotations

import asyncio
import copy
import math
from typing import Any

import pytest

from control.errors import BadRequest, NotFound
from control.http import loads
from control.ids import InvalidId, is_valid_display_name, validate_display_name
from control.logging import redact_text
from control.rooms import limits
from control.signaling import messages as m
from control.signaling.protoo import RateLimit, json_too_deep
from control.signaling.sanitize import check_json
from tests.unit.room_fakes import FakeConnection, FakeHost, FakeSettings, make_room

OPUS: dict[str, Any] = {
    "mid": "0",
    "codecs": [
        {
            "mimeType": "audio/opus",
            "payloadType": 111,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"minptime": 10, "useinbandfec": 1, "sprop-stereo": 1},
            "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}],
        }
    ],
    "headerExtensions": [
        {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4},
        {"uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": 2},
    ],
    "encodings": [{"ssrc": 4294967295, "dtx": False}],
    "rtcp": {"cname": "{a3c9b1de-5f0e-4c2a-9d61-0e3c8b7f2a11}", "reducedSize": True},
    "msid": "- {0d7c6c8e-8b49-4b9a-8a1e-2f7d6f0c3b1e}",
}
H264_SIMULCAST: dict[str, Any] = {
    "mid": "1",
    "codecs": [
        {
            "mimeType": "video/H264",
            "payloadType": 102,
            "clockRate": 90000,
            "parameters": {
                "level-asymmetry-allowed": 1,
                "packetization-mode": 1,
                "profile-level-id": "42e01f",
                "sprop-parameter-sets": "Z0LgKdoBQBbpUgAAAwACAAADAGQeMGVA,aM4yyA==",
            },
            "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}, {"type": "goog-remb"}],
        },
        {"mimeType": "video/rtx", "payloadType": 103, "clockRate": 90000, "parameters": {"apt": 102}},
    ],
    "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", "id": 10}],
    "encodings": [
        {"rid": "r0", "active": True, "scalabilityMode": "L1T3", "maxBitrate": 100000, "scaleResolutionDownBy": 4},
        {"rid": "r1", "active": True, "scalabilityMode": "L1T3", "maxBitrate": 300000.5, "scaleResolutionDownBy": 2},
        {"rid": "r2", "active": True, "scalabilityMode": "S3T3_KEY", "maxBitrate": 900000, "maxFramerate": 30},
    ],
    "rtcp": {"cname": "gmsR4Wvn6BqtXcbG"},
}


def produce(rtp: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"transportId": "t", "kind": "audio", "rtpParameters": rtp, **extra}


def refused(method: str, data: dict[str, Any], field: str) -> str:
    with pytest.raises(BadRequest) as info:
        m.parse(method, data)
    assert field in info.value.message, info.value.message
    return info.value.message


def with_(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with ``value`` at the dotted ``path`` (``codecs.0.mimeType``)."""
    copied = copy.deepcopy(base)
    *parents, last = path.split(".")
    node: Any = copied
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return copied


def test_real_clients_parameters_pass() -> None:
    assert m.parse("produce", produce(OPUS))
    assert m.parse("produce", produce(H264_SIMULCAST, kind="video"))


@pytest.mark.parametrize(
    "cname",
    [
        "Jq3/lW+x9aK0pZ/e",  # Chrome: 16 characters of the base64 alphabet (with + and /)
        "u8Fz0Qk+/9cN2=Ab",
        "{a3c9b1de-5f0e-4c2a-9d61-0e3c8b7f2a11}",  # Firefox
        "user@host.example",  # RFC 3550's suggestion (GStreamer, FFmpeg)
    ],
)
def test_real_clients_cnames_pass(cname: str) -> None:
    """RFC 5576 makes a cname a byte-string; libwebrtc's random one holds ``+`` and ``/``
    (about one Chrome PeerConnection in five), so token characters alone refused its produce."""
    assert m.parse("produce", produce(with_(OPUS, "rtcp.cname", cname)))
    assert m.parse("produce", produce(with_(H264_SIMULCAST, "rtcp.cname", cname), kind="video"))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("encodings.0.maxBitrate", math.nan),
        ("encodings.0.maxBitrate", math.inf),
        ("encodings.0.maxBitrate", -math.inf),
        ("encodings.0.maxBitrate", "100000"),
        ("encodings.0.maxBitrate", [1]),
        ("encodings.0.maxBitrate", True),
        ("encodings.0.maxBitrate", 10**30),
        ("encodings.0.maxFramerate", math.nan),
        ("encodings.0.scaleResolutionDownBy", "2"),
        ("encodings.0.rid", {}),
        ("encodings.0.rid", {"a": 1}),
        ("encodings.0.rid", "r\r\n0"),
        ("encodings.0.rid", "x" * 33),
        ("encodings.0.ssrc", 2**32),
        ("encodings.0.ssrc", -1),
        ("encodings.0.ssrc", 1.5),
        ("encodings.0.scalabilityMode", "L1T3\r\na=x"),
        ("encodings.0.scalabilityMode", "L1T3\x00"),
        ("encodings.0.scalabilityMode", "L1 T3"),
        ("mid", "\ud800"),
        ("mid", "0\r\n"),
        ("mid", "a b"),
        ("mid", "m" * 33),
        ("msid", "a\nb"),
        ("rtcp.cname", "c\r\na=inject"),
        ("rtcp.cname", "c name"),
        ("rtcp.cname", "c\tname"),
        ("rtcp.cname", "caf\u00e9"),
        ("rtcp.cname", "c" * 256),
        ("codecs.0.mimeType", "audio/op us"),
        ("codecs.0.mimeType", "audio/opus\r\n"),
        ("codecs.0.payloadType", 128),
        ("codecs.0.payloadType", 111.5),
        ("codecs.0.clockRate", math.nan),
        ("codecs.0.clockRate", 0),
        ("codecs.0.channels", 1000),
        ("codecs.0.parameters", {"use\r\ninbandfec": 1}),
        ("codecs.0.parameters", {"useinbandfec": "1\r\na=inject"}),
        ("codecs.0.parameters", {"useinbandfec": "1;x=2"}),
        ("codecs.0.parameters", {"useinbandfec": "1 2"}),
        ("codecs.0.parameters", {"useinbandfec": math.inf}),
        ("codecs.0.parameters", {"k": "v" * 257}),
        ("codecs.0.parameters", {f"k{i}": 1 for i in range(33)}),
        ("codecs.0.rtcpFeedback", [{"type": "nack\r\n"}]),
        ("codecs.0.rtcpFeedback", [{"type": "nack", "parameter": "p li"}]),
        ("headerExtensions.0.uri", "urn:x y"),
        ("headerExtensions.0.id", 256),
        ("headerExtensions.0.id", 0),
    ],
)
def test_bad_rtp_parameters_are_400(path: str, value: Any) -> None:
    refused("produce", produce(with_(OPUS, path, value)), "produce")


def test_too_many_encodings_or_codecs() -> None:
    refused("produce", produce(with_(OPUS, "encodings", [{"ssrc": i + 1} for i in range(17)])), "encodings")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("codecs.0.preferredPayloadType", 300),
        ("codecs.0.mimeType", "audio/opus\n"),
        ("codecs.0.parameters", {"a": "b\x1b[31m"}),
        ("headerExtensions.0.preferredId", math.nan),
        ("headerExtensions.0.direction", "both"),
    ],
)
def test_bad_rtp_capabilities_are_400(path: str, value: Any) -> None:
    caps = {
        "codecs": [{"kind": "audio", "mimeType": "audio/opus", "preferredPayloadType": 100, "clockRate": 48000}],
        "headerExtensions": [
            {"kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1, "direction": "sendrecv"}
        ],
    }
    assert m.parse("join", {"rtpCapabilities": caps})
    refused("join", {"rtpCapabilities": with_(caps, path, value)}, "rtpCapabilities")


def test_sctp_numbers() -> None:
    assert m.parse("produceData", {"transportId": "t", "sctpStreamParameters": {"streamId": 1, "ordered": True}})
    for bad in [{"streamId": 70000}, {"streamId": math.nan}, {"streamId": 1, "maxRetransmits": -1}]:
        refused("produceData", {"transportId": "t", "sctpStreamParameters": bad}, "produceData")
    refused("join", {"sctpCapabilities": {"numStreams": {"OS": 0, "MIS": 1024}}}, "numStreams")


@pytest.mark.parametrize(
    "name",
    [
        "Ada\x00",
        "Ada\r\nAdmin",
        "\x1b[31mred",
        "Ada\u202eevil",
        "Ada\u2066x",
        "Ada\u2028x",
        "Ada\ud800",
        "Ada\x85",
        "A" * 257,
    ],
)
def test_display_names_one_rule(name: str) -> None:
    assert not is_valid_display_name(name)
    with pytest.raises(InvalidId) as info:
        validate_display_name(name)
    assert info.value.code == "invalid_display_name"
    refused("join", {"displayName": name}, "displayName")
    refused("changeDisplayName", {"displayName": name}, "displayName")


def test_good_display_names() -> None:
    for name in ["", "Ada Lovelace", "Zoë 佐藤 😀", "A" * 256, "O'Brien (guest)"]:
        assert validate_display_name(name) == name
        assert m.parse("join", {"displayName": name})


@pytest.mark.parametrize(
    "data",
    [
        {"appData": {"note": "a\r\nb"}},
        {"appData": {"k\x00": 1}},
        {"appData": {"n": math.nan}},
        {"appData": {"n": 2**60}},
        {"appData": {"s": "\udfff"}},
    ],
)
def test_any_string_or_number_anywhere(data: dict[str, Any]) -> None:
    refused("produce", produce(OPUS, **data), "produce")


def test_check_json_paths_and_clean_values() -> None:
    check_json({"a": [1, 2.5, "ok", None, True, {"b": "é"}]})
    with pytest.raises(ValueError, match=r"data\.a\[1\]"):
        check_json({"a": [1, math.inf]})


def test_unknown_method_is_not_echoed_with_control_characters() -> None:
    with pytest.raises(NotFound) as info:
        m.parse("evil\r\nmethod", {})
    assert "\r" not in info.value.message and info.value.code == "unknown_method"


def test_json_depth_is_checked_before_parsing() -> None:
    assert json_too_deep("[" * 33 + "]" * 33, 32)
    assert not json_too_deep("[" * 32 + "]" * 32, 32)
    assert not json_too_deep('{"a": "' + "[" * 100 + '"}', 32)  # brackets in strings do not count
    assert not json_too_deep('{"a": "\\"' + "{" * 100 + '"}', 32)
    assert json_too_deep('{"a": "x", "b": ' + "{" * 40 + "}" * 40 + "}", 32)
    with pytest.raises(BadRequest) as info:
        loads(b"[" * 100_000)
    assert info.value.code == "json_too_deep"
    with pytest.raises(BadRequest) as info:
        loads(b"{nope")
    assert info.value.code == "invalid_json"
    assert loads(b'{"a": [1]}') == {"a": [1]}


def test_token_bucket() -> None:
    bucket = RateLimit(rate=1000.0, burst=3)
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]


def test_presigned_urls_are_redacted_in_the_access_log() -> None:
    line = (
        '127.0.0.1 "GET /api/storage/recordings/r/a.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256'
        "&X-Amz-Credential=AKIAEXAMPLE%2F20240101&X-Amz-Signature=0123abcd&X-Amz-Security-Token=tok"
        '&expires=1&signature=deadbeef HTTP/1.1" 200'
    )
    text = redact_text(line)
    for secret in ("AKIAEXAMPLE", "0123abcd", "deadbeef", "=tok"):
        assert secret not in text, text
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in text


def test_limit_errors_are_429_with_a_stable_code() -> None:
    settings = FakeSettings(max_peers_per_room=1)
    limits.check_peers({}, settings)
    with pytest.raises(limits.LimitReached) as info:
        limits.check_peers({"a": 1}, settings)
    assert (info.value.status, info.value.code) == (429, "peers_limit")
    assert "MAX_PEERS_PER_ROOM" in info.value.message
    with pytest.raises(limits.LimitReached):
        limits.check_recordings(0, 0)


async def test_rooms_being_built_count_against_max_rooms() -> None:
    host = FakeHost(settings=FakeSettings(max_rooms=1))
    with limits.creating_room(host):
        with pytest.raises(limits.LimitReached):
            limits.check_rooms(host, host.rooms, host.settings)
    limits.check_rooms(host, host.rooms, host.settings)


async def test_a_room_nobody_entered_closes_and_an_unjoined_peer_leaves() -> None:
    host = FakeHost(settings=FakeSettings(signaling_join_timeout_seconds=0.05))
    empty, _ = await make_room(host, "empty")
    room, _ = await make_room(host, "r")
    connection = FakeConnection()
    room.attach("p", connection.as_protoo())
    await asyncio.sleep(0.15)
    assert empty.closed and room.closed
    assert connection.closed and connection.close_code == 4000
    assert "join" in (connection.close_reason or "")


def test_malformed_http_is_a_warning_without_traceback() -> None:
    import logging

    from aiohttp.http_exceptions import LineTooLong

    from control.logging import quiet_malformed_http

    quiet_malformed_http()
    quiet_malformed_http()  # idempotent
    server_logger = logging.getLogger("aiohttp.server")
    assert len([f for f in server_logger.filters if type(f).__name__ == "_MalformedHttpFilter"]) == 1
    error = LineTooLong("line", "8190", "9000")
    record = server_logger.makeRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("1.2.3.4",),
        (LineTooLong, error, None),
    )
    assert server_logger.filter(record)
    assert (record.levelno, record.exc_info) == (logging.WARNING, None)
    assert record.getMessage().startswith("Error handling request from 1.2.3.4: 400")
    other = server_logger.makeRecord("aiohttp.server", logging.ERROR, __file__, 1, "boom", (), None)
    assert server_logger.filter(other) and other.levelno == logging.ERROR


def test_the_broadcaster_api_gets_the_same_checks() -> None:
    from pydantic import ValidationError

    from control.rooms.broadcasters import CreateBroadcaster, CreateProducer

    good = {"id": "b", "displayName": "B", "device": {"name": "x"}}
    assert CreateBroadcaster.model_validate(good)
    for bad in ("B\r\nx", "B\u202e", "", "B" * 257):
        with pytest.raises(ValidationError):
            CreateBroadcaster.model_validate({**good, "displayName": bad})
    assert CreateProducer.model_validate({"kind": "audio", "rtpParameters": OPUS})
    for path, value in [("encodings.0.maxBitrate", math.nan), ("rtcp.cname", "a\r\nb"), ("mid", "\ud800")]:
        with pytest.raises(ValidationError):
            CreateProducer.model_validate({"kind": "audio", "rtpParameters": with_(OPUS, path, value)})
    with pytest.raises(ValidationError):
        CreateProducer.model_validate({"kind": "audio", "rtpParameters": OPUS, "appData": {"n": math.inf}})


def test_participant_metadata_may_hold_multi_line_secrets() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIB\r\n\tAAA\n-----END PRIVATE KEY-----\n"
    joined = m.parse("join", {"integrations": {"gcp": {"private_key": pem}}, "aiSettings": {"prompt": "a\nb"}})
    assert isinstance(joined, m.Join) and joined.integrations == {"gcp": {"private_key": pem}}
    for bad in ({"k": "a\x00b"}, {"k": "\ud800"}, {"k": math.nan}, {"k\n": "v"}):
        refused("join", {"integrations": bad}, "integrations")
    refused("join", {"device": {"name": "a\nb"}}, "device")

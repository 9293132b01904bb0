"""Negotiation of RTP capabilities and parameters: a port of mediasoup's ``ortc.ts``.

What it decides:

* which codecs a Router offers, with which payload types (plus an RTX codec
  per video codec): ``generate_router_rtp_capabilities``;
* how a Producer's payload types and SSRCs map into the Router's:
  ``get_producer_rtp_parameters_mapping``, and what the Router then offers to
  consumers of it: ``get_consumable_rtp_parameters``;
* whether an endpoint can consume a Producer and with which parameters:
  ``can_consume``, ``get_consumer_rtp_parameters``,
  ``get_pipe_consumer_rtp_parameters``.

Data model: like mediasoup's ortc, everything here works on **plain dicts in
mediasoup's camelCase JSON shape** (the shape the pydantic models of
``workers.rtp_parameters`` dump to and parse from). That is what clients send
and receive, so nothing is converted on the hot produce/consume paths, and it
keeps this module a line-by-line port. A pydantic model may be passed to any
``validate_*`` function; it is dumped to such a dict first.

The ``validate_*`` functions check types as mediasoup's
``validateAndNormalize*`` do and normalise the dict **in place** (filling
``channels`` 1 for audio, ``parameters`` ``{}``, ``rtcpFeedback[].parameter``
``""``, ``dtx`` false, ``rtcp.reducedSize`` true...), returning it. Callers
that must keep their input untouched pass ``clone(data)``, as mediasoup's
Transport and Router clone before validating. Invalid input raises
``MediasoupTypeError`` (mediasoup's ``TypeError``); unsupported codecs raise
``UnsupportedError``.

The other functions take validated dicts and, like mediasoup, return results
that may share unchanged sub-objects (feedback entries, header extensions,
the ``rtcp`` dict) with their inputs: treat results as read-only, or
``clone()`` them before mutating.
"""

from __future__ import annotations

import pickle
import random
import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from workers import h264_profile_level_id as h264
from workers.errors import MediasoupError, MediasoupTypeError, UnsupportedError
from workers.rtp_parameters import serialize_rtp_mapping
from workers.scalability_modes import parse_scalability_mode
from workers.supported_rtp_capabilities import SUPPORTED_RTP_CAPABILITIES

__all__ = [
    "DYNAMIC_PAYLOAD_TYPES",
    "can_consume",
    "clone",
    "generate_router_rtp_capabilities",
    "get_consumable_rtp_parameters",
    "get_consumer_rtp_parameters",
    "get_pipe_consumer_rtp_parameters",
    "get_producer_rtp_parameters_mapping",
    "is_rtx_codec",
    "match_codecs",
    "serialize_rtp_mapping",
    "validate_num_sctp_streams",
    "validate_rtcp_feedback",
    "validate_rtcp_parameters",
    "validate_rtp_capabilities",
    "validate_rtp_codec_capability",
    "validate_rtp_codec_parameters",
    "validate_rtp_encoding_parameters",
    "validate_rtp_header_extension",
    "validate_rtp_header_extension_parameters",
    "validate_rtp_parameters",
    "validate_sctp_capabilities",
    "validate_sctp_stream_parameters",
]

#: Payload types handed out to codecs without a preferred one, in this order.
DYNAMIC_PAYLOAD_TYPES: tuple[int, ...] = (*range(100, 128), *range(96, 100))

_URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
_URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_URI_TRANSPORT_WIDE_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
_URI_ABS_CAPTURE_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"
_URI_DEPENDENCY_DESCRIPTOR = "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"

_MIME_TYPE = re.compile(r"(audio|video)/(.+)", re.IGNORECASE)

Json = dict[str, Any]


def clone(data: Any) -> Any:
    """A deep copy of JSON-like data (mediasoup's ``utils.clone()``).

    A pickle round trip runs in C: several times faster than ``copy.deepcopy``.
    """
    return pickle.loads(pickle.dumps(data, pickle.HIGHEST_PROTOCOL))


# ---------------------------------------------------------------------------
# JavaScript type checks
# ---------------------------------------------------------------------------

# ``typeof value === 'number'``: exact types, so a Python bool is no number.
_NUMBER_TYPES = frozenset((int, float))
_SCALAR_TYPES = frozenset((int, float, str))


def _is_falsy(value: Any) -> bool:
    """JavaScript falsiness (``[]`` and ``{}`` are truthy there)."""
    return value is None or value is False or value == "" or (type(value) in _NUMBER_TYPES and not value)


def _as_json(value: Any, what: str) -> Json:
    """The dict to validate: ``value`` itself, or a pydantic model's JSON form."""
    if type(value) is dict:
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_none=True)
    if isinstance(value, dict):
        return value
    raise MediasoupTypeError(f"{what} is not an object")


def _object(value: Any, what: str) -> Json:
    """A nested object (always a dict inside a validated dict)."""
    if not isinstance(value, dict):
        raise MediasoupTypeError(f"{what} is not an object")
    return value


def _list_field(owner: Json, key: str, what: str) -> list[Any]:
    """An optional array field, set to ``[]`` when absent."""
    value = owner.get(key)
    if type(value) is list:
        return value
    if not _is_falsy(value):
        raise MediasoupTypeError(f"{what} is not an array")
    value = owner[key] = []
    return value


def _require_number(owner: Json, key: str, message: str) -> None:
    if type(owner.get(key)) not in _NUMBER_TYPES:
        raise MediasoupTypeError(message)


def _require_string(owner: Json, key: str, message: str) -> None:
    value = owner.get(key)
    if not value or type(value) is not str:
        raise MediasoupTypeError(message)


def _optional_string(owner: Json, key: str, message: str) -> None:
    value = owner.get(key)
    if value and type(value) is not str:
        raise MediasoupTypeError(message)


# ---------------------------------------------------------------------------
# Validation and normalisation (in place)
# ---------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _media_kind_of(mime_type: str) -> str | None:
    match = _MIME_TYPE.match(mime_type)
    return match.group(1).lower() if match else None


def _codec_kind(codec: Json) -> str:
    """The kind a codec's mimeType names ("audio/opus" -> "audio"); raises if invalid."""
    _require_string(codec, "mimeType", "missing codec.mimeType")
    kind = _media_kind_of(codec["mimeType"])
    if kind is None:
        raise MediasoupTypeError("invalid codec.mimeType")
    return kind


def _normalize_codec_tail(codec: Json, kind: str) -> None:
    """What codec capabilities and codec parameters normalise alike: channels
    (1 by default for audio, none for video), parameters and RTCP feedback."""
    if kind == "audio":
        if type(codec.get("channels")) not in _NUMBER_TYPES:
            codec["channels"] = 1
    elif "channels" in codec:
        del codec["channels"]

    parameters = codec.get("parameters")
    if not isinstance(parameters, dict):
        codec["parameters"] = {}
    else:
        # Strings or numbers; JSON null is refused as mediasoup does (only
        # JavaScript's undefined, which JSON cannot carry, becomes "" there).
        for key, value in parameters.items():
            if type(value) not in _SCALAR_TYPES:
                raise MediasoupTypeError(f"invalid codec parameter [key:{key}, value:{value!r}]")
            if key == "apt" and type(value) is str:
                raise MediasoupTypeError("invalid codec apt parameter")

    feedback = codec.get("rtcpFeedback")
    if type(feedback) is not list:
        codec["rtcpFeedback"] = []
        return
    for fb in feedback:  # _normalize_rtcp_feedback(), inlined: this runs per consume
        if not isinstance(fb, dict):
            raise MediasoupTypeError("fb is not an object")
        fb_type = fb.get("type")
        if not fb_type or type(fb_type) is not str:
            raise MediasoupTypeError("missing fb.type")
        if type(fb.get("parameter")) is not str:
            fb["parameter"] = ""


def _normalize_rtcp_feedback(fb: Json) -> None:
    _require_string(fb, "type", "missing fb.type")
    parameter = fb.get("parameter")
    if not parameter or type(parameter) is not str:
        fb["parameter"] = ""


def _normalize_codec_capability(codec: Json) -> None:
    kind = _codec_kind(codec)
    codec["kind"] = kind  # the mimeType decides
    preferred_payload_type = codec.get("preferredPayloadType")
    if preferred_payload_type and type(preferred_payload_type) not in _NUMBER_TYPES:
        raise MediasoupTypeError("invalid codec.preferredPayloadType")
    _require_number(codec, "clockRate", "missing codec.clockRate")
    _normalize_codec_tail(codec, kind)


def _normalize_header_extension(ext: Json) -> None:
    if ext.get("kind") not in ("audio", "video"):
        raise MediasoupTypeError("invalid ext.kind")
    _require_string(ext, "uri", "missing ext.uri")
    _require_number(ext, "preferredId", "missing ext.preferredId")
    preferred_encrypt = ext.get("preferredEncrypt")
    if preferred_encrypt and type(preferred_encrypt) is not bool:
        raise MediasoupTypeError("invalid ext.preferredEncrypt")
    if not preferred_encrypt:
        ext["preferredEncrypt"] = False
    _optional_string(ext, "direction", "invalid ext.direction")
    if not ext.get("direction"):
        ext["direction"] = "sendrecv"


def _normalize_codec_parameters(codec: Json) -> None:
    kind = _codec_kind(codec)
    _require_number(codec, "payloadType", "missing codec.payloadType")
    _require_number(codec, "clockRate", "missing codec.clockRate")
    _normalize_codec_tail(codec, kind)


def _normalize_header_extension_parameters(ext: Json) -> None:
    _require_string(ext, "uri", "missing ext.uri")
    _require_number(ext, "id", "missing ext.id")
    encrypt = ext.get("encrypt")
    if encrypt and type(encrypt) is not bool:
        raise MediasoupTypeError("invalid ext.encrypt")
    if not encrypt:
        ext["encrypt"] = False
    parameters = ext.get("parameters")
    if not isinstance(parameters, dict):
        ext["parameters"] = {}
        return
    for value in parameters.values():
        if type(value) not in _SCALAR_TYPES:
            raise MediasoupTypeError("invalid header extension parameter")


def _normalize_encoding(encoding: Json) -> None:
    ssrc = encoding.get("ssrc")
    if ssrc and type(ssrc) not in _NUMBER_TYPES:
        raise MediasoupTypeError("invalid encoding.ssrc")
    _optional_string(encoding, "rid", "invalid encoding.rid")
    rtx = encoding.get("rtx")
    if not _is_falsy(rtx):
        if not isinstance(rtx, dict):
            raise MediasoupTypeError("invalid encoding.rtx")
        _require_number(rtx, "ssrc", "missing encoding.rtx.ssrc")
    if encoding.get("dtx") is not True:
        encoding["dtx"] = False
    _optional_string(encoding, "scalabilityMode", "invalid encoding.scalabilityMode")


def _normalize_rtcp(rtcp: Json) -> None:
    _optional_string(rtcp, "cname", "invalid rtcp.cname")
    rtcp["reducedSize"] = True  # mediasoup forces it, even when given false


def _normalize_rtp_capabilities(caps: Json) -> None:
    for codec in _list_field(caps, "codecs", "caps.codecs"):
        _normalize_codec_capability(_object(codec, "codec"))
    for ext in _list_field(caps, "headerExtensions", "caps.headerExtensions"):
        _normalize_header_extension(_object(ext, "ext"))


def _normalize_rtp_parameters(params: Json) -> None:
    _optional_string(params, "mid", "params.mid is not a string")
    codecs = params.get("codecs")
    if type(codecs) is not list:
        raise MediasoupTypeError("missing params.codecs")
    for codec in codecs:
        _normalize_codec_parameters(_object(codec, "codec"))
    for ext in _list_field(params, "headerExtensions", "params.headerExtensions"):
        _normalize_header_extension_parameters(_object(ext, "ext"))
    for encoding in _list_field(params, "encodings", "params.encodings"):
        _normalize_encoding(_object(encoding, "encoding"))
    rtcp = params.get("rtcp")
    if not isinstance(rtcp, dict):
        if not _is_falsy(rtcp):
            raise MediasoupTypeError("params.rtcp is not an object")
        rtcp = params["rtcp"] = {}
    _optional_string(params, "msid", "params.msid is not a string")
    _normalize_rtcp(rtcp)


def validate_rtp_capabilities(caps: object) -> Json:
    """Validate and normalise RTP capabilities (e.g. a client's device caps)."""
    caps = _as_json(caps, "caps")
    _normalize_rtp_capabilities(caps)
    return caps


def validate_rtp_codec_capability(codec: object) -> Json:
    """Validate and normalise a codec capability; ``kind`` is set from the mimeType."""
    codec = _as_json(codec, "codec")
    _normalize_codec_capability(codec)
    return codec


def validate_rtcp_feedback(fb: object) -> Json:
    """``type`` is mandatory; ``parameter`` defaults to ""."""
    fb = _as_json(fb, "fb")
    _normalize_rtcp_feedback(fb)
    return fb


def validate_rtp_header_extension(ext: object) -> Json:
    """A header extension capability: kind, uri and preferredId are mandatory."""
    ext = _as_json(ext, "ext")
    _normalize_header_extension(ext)
    return ext


def validate_rtp_parameters(params: object) -> Json:
    """Validate and normalise RTP parameters (e.g. a client's ``produce`` request)."""
    params = _as_json(params, "params")
    _normalize_rtp_parameters(params)
    return params


def validate_rtp_codec_parameters(codec: object) -> Json:
    """A negotiated codec: mimeType, payloadType and clockRate are mandatory."""
    codec = _as_json(codec, "codec")
    _normalize_codec_parameters(codec)
    return codec


def validate_rtp_header_extension_parameters(ext: object) -> Json:
    """A negotiated header extension: uri and id are mandatory."""
    ext = _as_json(ext, "ext")
    _normalize_header_extension_parameters(ext)
    return ext


def validate_rtp_encoding_parameters(encoding: object) -> Json:
    """An encoding: every field is optional; ``dtx`` defaults to false."""
    encoding = _as_json(encoding, "encoding")
    _normalize_encoding(encoding)
    return encoding


def validate_rtcp_parameters(rtcp: object) -> Json:
    """``cname`` is optional; ``reducedSize`` is always set to true, as mediasoup does."""
    rtcp = _as_json(rtcp, "rtcp")
    _normalize_rtcp(rtcp)
    return rtcp


def validate_sctp_capabilities(caps: object) -> Json:
    """SCTP capabilities as clients send them: ``{numStreams: {OS, MIS}}``."""
    caps = _as_json(caps, "caps")
    if not isinstance(caps.get("numStreams"), dict):
        raise MediasoupTypeError("missing caps.numStreams")
    validate_num_sctp_streams(caps["numStreams"])
    return caps


def validate_num_sctp_streams(num_streams: object) -> Json:
    """``OS`` (outgoing streams) and ``MIS`` (max incoming streams) are mandatory."""
    num_streams = _as_json(num_streams, "numStreams")
    _require_number(num_streams, "OS", "missing numStreams.OS")
    _require_number(num_streams, "MIS", "missing numStreams.MIS")
    return num_streams


def validate_sctp_stream_parameters(params: object) -> Json:
    """Validate and normalise SCTP stream parameters (a ``produceData`` request).

    ``ordered`` defaults to true, or to false when a partial-reliability
    limit is given; an ordered stream cannot have one, nor can a stream have both.
    """
    params = _as_json(params, "params")
    _require_number(params, "streamId", "missing params.streamId")
    ordered_given = type(params.get("ordered")) is bool
    if not ordered_given:
        params["ordered"] = True
    max_packet_life_time = params.get("maxPacketLifeTime")
    if max_packet_life_time and type(max_packet_life_time) not in _NUMBER_TYPES:
        raise MediasoupTypeError("invalid params.maxPacketLifeTime")
    max_retransmits = params.get("maxRetransmits")
    if max_retransmits and type(max_retransmits) not in _NUMBER_TYPES:
        raise MediasoupTypeError("invalid params.maxRetransmits")
    if max_packet_life_time and max_retransmits:
        raise MediasoupTypeError("cannot provide both maxPacketLifeTime and maxRetransmits")
    partially_reliable = bool(max_packet_life_time or max_retransmits)
    if ordered_given and params["ordered"] and partially_reliable:
        raise MediasoupTypeError("cannot be ordered with maxPacketLifeTime or maxRetransmits")
    if not ordered_given and partially_reliable:
        params["ordered"] = False
    return params


# ---------------------------------------------------------------------------
# Codec matching
# ---------------------------------------------------------------------------


def is_rtx_codec(codec: Json) -> bool:
    """Whether a codec is RTX (``audio/rtx``, ``video/rtx``)."""
    mime_type = codec["mimeType"]
    return len(mime_type) > 4 and mime_type[-4:].lower() == "/rtx"


def _h264_matches(a_params: Json, b_params: Json, modify: bool) -> bool:
    """Strict H264 match: packetization mode and profile; may rewrite a's level."""
    if (a_params.get("packetization-mode") or 0) != (b_params.get("packetization-mode") or 0):
        return False
    if not h264.is_same_profile(a_params, b_params):
        return False
    try:
        selected_profile_level_id = h264.generate_profile_level_id_string_for_answer(a_params, b_params)
    except MediasoupTypeError:
        return False
    if modify:
        if selected_profile_level_id:
            a_params["profile-level-id"] = selected_profile_level_id
        else:
            a_params.pop("profile-level-id", None)
    return True


def match_codecs(a_codec: Json, b_codec: Json, *, strict: bool = False, modify: bool = False) -> bool:
    """Whether two codecs are the same codec (mimeType, clock rate, channels).

    ``strict`` also compares codec specific parameters (H264 packetization mode
    and profile, VP9 profile); multiopus stream layout is always compared.
    With ``modify``, an H264 ``a_codec`` gets the negotiated profile-level-id.
    """
    a_mime_type = a_codec["mimeType"].lower()
    if a_mime_type != b_codec["mimeType"].lower():
        return False
    if a_codec["clockRate"] != b_codec["clockRate"] or a_codec.get("channels") != b_codec.get("channels"):
        return False

    if a_mime_type == "audio/multiopus":
        a_params, b_params = a_codec["parameters"], b_codec["parameters"]
        same_layout: bool = a_params.get("num_streams") == b_params.get("num_streams") and a_params.get(
            "coupled_streams"
        ) == b_params.get("coupled_streams")
        return same_layout
    if strict and a_mime_type == "video/h264":
        return _h264_matches(a_codec["parameters"], b_codec["parameters"], modify)
    if strict and a_mime_type == "video/vp9":
        a_profile_id = a_codec["parameters"].get("profile-id") or 0
        b_profile_id = b_codec["parameters"].get("profile-id") or 0
        return a_profile_id == b_profile_id
    return True


def _copy_codec(codec: Json) -> Json:
    """A copy of a codec that can be modified without touching the original
    (what mediasoup gets from ``utils.clone()``, minus deep-copying scalars)."""
    copy = dict(codec)
    copy["parameters"] = dict(codec["parameters"])
    copy["rtcpFeedback"] = [dict(fb) for fb in codec["rtcpFeedback"]]
    return copy


def _copy_encoding(encoding: Json) -> Json:
    """A copy of an encoding that can be modified without touching the original."""
    copy = dict(encoding)
    if type(copy.get("rtx")) is dict:
        copy["rtx"] = dict(copy["rtx"])
    return copy


# ---------------------------------------------------------------------------
# Router capabilities
# ---------------------------------------------------------------------------

_SUPPORTED_RTP_CAPABILITIES: Json = validate_rtp_capabilities(clone(SUPPORTED_RTP_CAPABILITIES))


def _dependency_descriptor_for_pipe_consumer() -> Json | None:
    """The Dependency-Descriptor extension pipe consumers must carry.

    It is 'recvonly' in the supported capabilities, so consumable parameters
    lack it; pipe consumers add it back (mediasoup's TODO: drop this once it is
    'sendrecv').
    """
    for ext in _SUPPORTED_RTP_CAPABILITIES["headerExtensions"]:
        if ext["uri"] == _URI_DEPENDENCY_DESCRIPTOR and ext["direction"] != "sendrecv":
            return {"uri": ext["uri"], "id": ext["preferredId"], "encrypt": ext["preferredEncrypt"], "parameters": {}}
    return None


_PIPE_DEPENDENCY_DESCRIPTOR = _dependency_descriptor_for_pipe_consumer()


def _take_dynamic_payload_type(available: list[int]) -> int:
    if not available:
        raise MediasoupError("cannot allocate more dynamic codec payload types")
    return available.pop(0)


def _assign_payload_type(codec: Json, media_codec: Json, available: list[int]) -> None:
    """The media codec's preferred PT, else the supported codec's static one,
    else the next free dynamic one."""
    preferred_payload_type = media_codec.get("preferredPayloadType")
    if type(preferred_payload_type) in _NUMBER_TYPES:
        codec["preferredPayloadType"] = preferred_payload_type
        if preferred_payload_type in available:
            available.remove(preferred_payload_type)
    elif type(codec.get("preferredPayloadType")) not in _NUMBER_TYPES:
        codec["preferredPayloadType"] = _take_dynamic_payload_type(available)


def _rtx_capability_for(codec: Json, payload_type: int) -> Json:
    return {
        "kind": codec["kind"],
        "mimeType": f"{codec['kind']}/rtx",
        "preferredPayloadType": payload_type,
        "clockRate": codec["clockRate"],
        "parameters": {"apt": codec["preferredPayloadType"]},
        "rtcpFeedback": [],
    }


def generate_router_rtp_capabilities(media_codecs: Any = ()) -> Json:
    """A Router's RTP capabilities for its configured ``mediaCodecs``.

    Each media codec must match a supported codec; it keeps its
    ``preferredPayloadType`` if it has one, else gets the supported codec's
    static one, else the next free dynamic one. Its parameters are merged over
    the supported codec's (its RTCP feedback is ignored), and every video
    codec is followed by an RTX codec. All supported header extensions are
    included. Media codec dicts are normalised in place.
    """
    if not isinstance(media_codecs, (list, tuple)):
        raise MediasoupTypeError("mediaCodecs must be an Array")

    available_payload_types = list(DYNAMIC_PAYLOAD_TYPES)
    supported_codecs = _SUPPORTED_RTP_CAPABILITIES["codecs"]
    codecs: list[Json] = []
    for media_codec in media_codecs:
        media_codec = validate_rtp_codec_capability(media_codec)
        supported_codec = next((c for c in supported_codecs if match_codecs(media_codec, c)), None)
        if supported_codec is None:
            raise UnsupportedError(f"media codec not supported [mimeType:{media_codec['mimeType']}]")

        codec = clone(supported_codec)
        _assign_payload_type(codec, media_codec, available_payload_types)
        if any(c["preferredPayloadType"] == codec["preferredPayloadType"] for c in codecs):
            raise MediasoupTypeError("duplicated codec.preferredPayloadType")
        codec["parameters"] = {**codec["parameters"], **media_codec["parameters"]}
        codecs.append(codec)

        if codec["kind"] == "video":
            codecs.append(_rtx_capability_for(codec, _take_dynamic_payload_type(available_payload_types)))

    return {"codecs": codecs, "headerExtensions": clone(_SUPPORTED_RTP_CAPABILITIES["headerExtensions"])}


# ---------------------------------------------------------------------------
# Producer side
# ---------------------------------------------------------------------------


def _random_ssrc() -> int:
    """A random SSRC (base), in mediasoup's range."""
    return random.randrange(100_000_000, 999_999_999)


def _match_rtx_codec(codec: Json, params: Json, caps: Json, cap_codec_of: dict[int, Json]) -> Json:
    """The Router RTX codec for a Producer RTX codec (via its media codec)."""
    apt = codec["parameters"].get("apt")
    media_codec = next((c for c in params["codecs"] if c["payloadType"] == apt), None)
    cap_media_codec = cap_codec_of.get(id(media_codec)) if media_codec is not None else None
    if cap_media_codec is None:
        raise MediasoupTypeError(f"missing media codec found for RTX PT {codec['payloadType']}")
    cap_media_pt = cap_media_codec["preferredPayloadType"]
    cap_rtx_codec: Json | None = next(
        (c for c in caps["codecs"] if is_rtx_codec(c) and c["parameters"].get("apt") == cap_media_pt), None
    )
    if cap_rtx_codec is None:
        raise UnsupportedError(f"no RTX codec for capability codec PT {cap_media_pt}")
    return cap_rtx_codec


def get_producer_rtp_parameters_mapping(params: Json, caps: Json) -> Json:
    """Map a Producer's payload types and SSRCs to the Router's (``RtpMapping``).

    Each media codec must match (strictly) a Router codec, which may rewrite
    its H264 profile-level-id; each RTX codec needs a Router RTX codec for its
    media codec. Encodings get consecutive mapped SSRCs from a random base.
    Raises ``UnsupportedError`` / ``MediasoupTypeError`` otherwise.
    """
    # id(Producer codec) -> (Producer codec, Router codec); media codecs first.
    matches: dict[int, tuple[Json, Json]] = {}
    for codec in params["codecs"]:
        if is_rtx_codec(codec):
            continue
        cap_codec = next((c for c in caps["codecs"] if match_codecs(codec, c, strict=True, modify=True)), None)
        if cap_codec is None:
            raise UnsupportedError(
                f"unsupported codec [mimeType:{codec['mimeType']}, payloadType:{codec['payloadType']}]"
            )
        matches[id(codec)] = (codec, cap_codec)

    cap_codec_of = {key: cap_codec for key, (_, cap_codec) in matches.items()}
    for codec in params["codecs"]:
        if is_rtx_codec(codec):
            matches[id(codec)] = (codec, _match_rtx_codec(codec, params, caps, cap_codec_of))

    base_ssrc = _random_ssrc()
    return {
        "codecs": [
            {"payloadType": codec["payloadType"], "mappedPayloadType": cap_codec["preferredPayloadType"]}
            for codec, cap_codec in matches.values()
        ],
        "encodings": [
            _encoding_mapping(encoding, base_ssrc + index) for index, encoding in enumerate(params["encodings"])
        ],
    }


def _encoding_mapping(encoding: Json, mapped_ssrc: int) -> Json:
    mapping: Json = {}
    if encoding.get("ssrc") is not None:
        mapping["ssrc"] = encoding["ssrc"]
    if encoding.get("rid") is not None:
        mapping["rid"] = encoding["rid"]
    mapping["mappedSsrc"] = mapped_ssrc
    return mapping


def _consumable_codecs(params: Json, caps: Json, rtp_mapping: Json) -> list[Json]:
    """The Router codecs a Producer's media codecs map to, each followed by its RTX."""
    cap_codecs = caps["codecs"]
    # First entry wins, as with Array.find().
    mapped_pts = {entry["payloadType"]: entry["mappedPayloadType"] for entry in reversed(rtp_mapping["codecs"])}
    consumable_codecs = []
    for codec in params["codecs"]:
        if is_rtx_codec(codec):
            continue
        mapped_pt = mapped_pts[codec["payloadType"]]
        cap_codec = next(c for c in cap_codecs if c["preferredPayloadType"] == mapped_pt)
        consumable_codec = {
            "mimeType": cap_codec["mimeType"],
            "payloadType": mapped_pt,
            "clockRate": cap_codec["clockRate"],
            "parameters": codec["parameters"],  # keep the Producer codec parameters
            "rtcpFeedback": cap_codec["rtcpFeedback"],
        }
        if cap_codec.get("channels") is not None:
            consumable_codec["channels"] = cap_codec["channels"]
        consumable_codecs.append(consumable_codec)

        cap_rtx_codec = next(
            (c for c in cap_codecs if is_rtx_codec(c) and c["parameters"].get("apt") == mapped_pt), None
        )
        if cap_rtx_codec is not None:
            consumable_codecs.append(
                {
                    "mimeType": cap_rtx_codec["mimeType"],
                    "payloadType": cap_rtx_codec["preferredPayloadType"],
                    "clockRate": cap_rtx_codec["clockRate"],
                    "parameters": cap_rtx_codec["parameters"],
                    "rtcpFeedback": cap_rtx_codec["rtcpFeedback"],
                }
            )
    return consumable_codecs


def _consumable_header_extensions(kind: str, params: Json, caps: Json) -> list[Json]:
    """The Router's header extensions consumers of this kind may receive."""
    extensions = []
    for cap_ext in caps["headerExtensions"]:
        if cap_ext["kind"] != kind or cap_ext["direction"] not in ("sendrecv", "sendonly"):
            continue
        # abs-capture-time is only proxied from the Producer's packets: offering
        # it when the Producer does not send it would make the worker wait for
        # an extension that never arrives (e.g. a Producer of a pipe consumer).
        if cap_ext["uri"] == _URI_ABS_CAPTURE_TIME and not any(
            ext["uri"] == cap_ext["uri"] for ext in params["headerExtensions"]
        ):
            continue
        extensions.append(
            {
                "uri": cap_ext["uri"],
                "id": cap_ext["preferredId"],
                "encrypt": cap_ext["preferredEncrypt"],
                "parameters": {},
            }
        )
    return extensions


def _consumable_encoding(encoding: Json, mapped_ssrc: int) -> Json:
    """A Producer encoding as consumers see it: mapped SSRC, no rid/rtx/codecPayloadType."""
    consumable_encoding = _copy_encoding(encoding)
    for key in ("rid", "rtx", "codecPayloadType"):
        consumable_encoding.pop(key, None)
    consumable_encoding["ssrc"] = mapped_ssrc
    return consumable_encoding


def get_consumable_rtp_parameters(kind: str, params: Json, caps: Json, rtp_mapping: Json) -> Json:
    """The RTP parameters a Producer offers to its consumers, in Router terms.

    Router codecs (with the Producer's codec parameters) and their RTX, the
    Router's header extensions for this kind, and the Producer's encodings
    with the mapped SSRCs.
    """
    consumable_params: Json = {
        "codecs": _consumable_codecs(params, caps, rtp_mapping),
        "headerExtensions": _consumable_header_extensions(kind, params, caps),
        "encodings": [
            _consumable_encoding(encoding, mapping["mappedSsrc"])
            for encoding, mapping in zip(params["encodings"], rtp_mapping["encodings"], strict=True)
        ],
        "rtcp": {"reducedSize": True},
    }
    cname = params["rtcp"].get("cname")
    if cname is not None:
        consumable_params["rtcp"] = {"cname": cname, "reducedSize": True}
    if params.get("msid") is not None:
        consumable_params["msid"] = params["msid"]
    return consumable_params


# ---------------------------------------------------------------------------
# Consumer side
# ---------------------------------------------------------------------------


def can_consume(consumable_params: Json, caps: Any) -> bool:
    """Whether an endpoint with these capabilities can consume the Producer.

    True if the first consumable codec the endpoint supports is a media codec.
    ``caps`` is validated (normalised in place).
    """
    caps = validate_rtp_capabilities(caps)
    cap_codecs = caps["codecs"]
    for codec in consumable_params["codecs"]:
        if any(match_codecs(cap_codec, codec, strict=True) for cap_codec in cap_codecs):
            return not is_rtx_codec(codec)
    return False


def _drop_orphan_rtx_codecs(codecs: list[Json]) -> bool:
    """Remove RTX codecs whose media codec is gone; whether any RTX remains."""
    payload_types = {codec["payloadType"] for codec in codecs}
    rtx_supported = False
    for index in range(len(codecs) - 1, -1, -1):
        codec = codecs[index]
        if not is_rtx_codec(codec):
            continue
        if codec["parameters"].get("apt") in payload_types:
            rtx_supported = True
        else:
            del codecs[index]
    return rtx_supported


def _reduce_bwe_feedback(codecs: list[Json], header_extensions: list[Json]) -> None:
    """Keep the congestion control feedback matching the extensions in use:
    transport-cc with transport-wide-cc, REMB with abs-send-time, else neither."""
    uris = {ext["uri"] for ext in header_extensions}
    if _URI_TRANSPORT_WIDE_CC in uris:
        dropped: tuple[str, ...] = ("goog-remb",)
    elif _URI_ABS_SEND_TIME in uris:
        dropped = ("transport-cc",)
    else:
        dropped = ("transport-cc", "goog-remb")
    for codec in codecs:
        codec["rtcpFeedback"] = [fb for fb in codec["rtcpFeedback"] if fb["type"] not in dropped]


def _single_consumer_encoding(consumable_encodings: list[Json], rtx_supported: bool) -> Json:
    """The one encoding a (non pipe) Consumer receives.

    Simulcast streams become spatial layers of one stream (``L<n>T<t>``), and
    the highest ``maxBitrate`` of any stream is kept.
    """
    encoding: Json = {"ssrc": _random_ssrc()}
    if rtx_supported:
        encoding["rtx"] = {"ssrc": encoding["ssrc"] + 1}
    scalability_mode = next((e["scalabilityMode"] for e in consumable_encodings if e.get("scalabilityMode")), None)
    if len(consumable_encodings) > 1:
        temporal_layers = parse_scalability_mode(scalability_mode).temporal_layers
        scalability_mode = f"L{len(consumable_encodings)}T{temporal_layers}"
    if scalability_mode:
        encoding["scalabilityMode"] = scalability_mode
    max_bitrate = max((e.get("maxBitrate") or 0 for e in consumable_encodings), default=0)
    if max_bitrate:
        encoding["maxBitrate"] = max_bitrate
    return encoding


def _pipe_encodings(consumable_encodings: list[Json], with_rtx: bool) -> list[Json]:
    """All consumable encodings, with new consecutive SSRCs (and RTX SSRCs)."""
    encodings = [_copy_encoding(encoding) for encoding in consumable_encodings]
    base_ssrc = _random_ssrc()
    base_rtx_ssrc = _random_ssrc()
    for index, encoding in enumerate(encodings):
        encoding["ssrc"] = base_ssrc + index
        if with_rtx:
            encoding["rtx"] = {"ssrc": base_rtx_ssrc + index}
        else:
            encoding.pop("rtx", None)
    return encodings


def _consumer_params(
    consumable_params: Json, codecs: list[Any], header_extensions: list[Any], encodings: list[Any]
) -> Json:
    consumer_params: Json = {
        "codecs": codecs,
        "headerExtensions": header_extensions,
        "encodings": encodings,
        "rtcp": consumable_params["rtcp"],
    }
    if consumable_params.get("msid") is not None:
        consumer_params["msid"] = consumable_params["msid"]
    return consumer_params


def get_consumer_rtp_parameters(
    *,
    consumable_rtp_parameters: Json,
    remote_rtp_capabilities: Json,
    pipe: bool = False,
    enable_rtx: bool = False,
) -> Json:
    """RTP parameters for a Consumer with these (validated) remote capabilities.

    Keeps the consumable codecs the remote supports (with the remote's RTCP
    feedback; plain NACK only with ``enable_rtx``), their RTX codecs if
    enabled, and the header extensions the remote supports with the same id.
    A normal Consumer gets a single encoding; a ``pipe`` one all of them.
    Raises ``UnsupportedError`` if no media codec is compatible.
    """
    cap_codecs = remote_rtp_capabilities.get("codecs") or []
    for cap_codec in cap_codecs:
        _normalize_codec_capability(_object(cap_codec, "codec"))

    codecs: list[Json] = []
    for consumable_codec in consumable_rtp_parameters["codecs"]:
        if not enable_rtx and is_rtx_codec(consumable_codec):
            continue
        cap_codec = next((c for c in cap_codecs if match_codecs(c, consumable_codec, strict=True)), None)
        if cap_codec is None:
            continue
        codec = _copy_codec(consumable_codec)
        # Copies: the capabilities may be shared (transport.validated_rtp_capabilities).
        codec["rtcpFeedback"] = [
            dict(fb) for fb in cap_codec["rtcpFeedback"] if enable_rtx or fb["type"] != "nack" or fb.get("parameter")
        ]
        codecs.append(codec)

    rtx_supported = _drop_orphan_rtx_codecs(codecs)
    if not codecs or is_rtx_codec(codecs[0]):
        raise UnsupportedError("no compatible media codecs")

    remote_extensions = {
        (ext.get("preferredId"), ext.get("uri")) for ext in remote_rtp_capabilities.get("headerExtensions") or ()
    }
    header_extensions = [
        ext for ext in consumable_rtp_parameters["headerExtensions"] if (ext["id"], ext["uri"]) in remote_extensions
    ]
    _reduce_bwe_feedback(codecs, header_extensions)

    consumable_encodings = consumable_rtp_parameters["encodings"]
    if pipe:
        encodings = _pipe_encodings(consumable_encodings, rtx_supported)
    else:
        encodings = [_single_consumer_encoding(consumable_encodings, rtx_supported)]
    return _consumer_params(consumable_rtp_parameters, codecs, header_extensions, encodings)


def _is_pipe_feedback(fb: Json, enable_rtx: bool) -> bool:
    """PLI and FIR always cross a pipe; plain NACK only with RTX; no BWE feedback."""
    fb_type, parameter = fb["type"], fb.get("parameter")
    if fb_type == "nack":
        return parameter == "pli" or (enable_rtx and not parameter)
    return fb_type == "ccm" and parameter == "fir"


def get_pipe_consumer_rtp_parameters(*, consumable_rtp_parameters: Json, enable_rtx: bool = False) -> Json:
    """RTP parameters for a Consumer on a PipeTransport.

    All consumable encodings with new SSRCs, no MID and no bandwidth
    estimation (extensions and feedback); without ``enable_rtx`` no RTX and
    no NACK either.
    """
    codecs = []
    for consumable_codec in consumable_rtp_parameters["codecs"]:
        if not enable_rtx and is_rtx_codec(consumable_codec):
            continue
        codec = _copy_codec(consumable_codec)
        codec["rtcpFeedback"] = [fb for fb in codec["rtcpFeedback"] if _is_pipe_feedback(fb, enable_rtx)]
        codecs.append(codec)

    excluded_uris = (_URI_MID, _URI_ABS_SEND_TIME, _URI_TRANSPORT_WIDE_CC)
    header_extensions = [
        ext for ext in consumable_rtp_parameters["headerExtensions"] if ext["uri"] not in excluded_uris
    ]
    if _PIPE_DEPENDENCY_DESCRIPTOR is not None:
        header_extensions.append({**_PIPE_DEPENDENCY_DESCRIPTOR, "parameters": {}})
        header_extensions.sort(key=lambda ext: ext["id"])

    encodings = _pipe_encodings(consumable_rtp_parameters["encodings"], enable_rtx)
    return _consumer_params(consumable_rtp_parameters, codecs, header_extensions, encodings)

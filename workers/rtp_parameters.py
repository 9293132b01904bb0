"""RTP capabilities and parameters: the wire models and their FlatBuffers form.

The models mirror mediasoup's ``rtpParametersTypes.d.ts`` field by field. Their
JSON form, ``model.to_dict()`` (that is ``model_dump(by_alias=True,
exclude_none=True)``), is exactly the camelCase JSON mediasoup, mediasoup-client
and pymediasoup exchange, so a payload parsed from a client and dumped again
comes back unchanged:

* every field mediasoup marks optional (``?``) defaults to ``None`` and is
  omitted from the JSON while unset; the defaults mediasoup fills in are
  filled by ``ortc``'s validators, which work on this JSON form;
* unknown fields are kept (``extra="allow"``), e.g. the ``maxFramerate`` or
  ``scaleResolutionDownBy`` a browser puts in its encodings;
* types are strict (``"90000"`` is not a clock rate), like mediasoup's
  ``typeof`` checks.

The second half of the module serialises RTP parameters into a
``flatbuffers.Builder`` and parses them back from the generated ``FBS``
bindings, like mediasoup's ``rtpParametersFbsUtils.ts``. Like ``ortc``, those
helpers work on mediasoup JSON dicts (a model is accepted and dumped first):
the hot produce/consume paths never build models.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, Literal, Self

import flatbuffers
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from workers.errors import MediasoupTypeError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_blob import Blob, TableLayout, splice, table_layout

import FBS.RtpParameters.Boolean as _FbsBoolean
import FBS.RtpParameters.Double as _FbsDouble
import FBS.RtpParameters.Integer32 as _FbsInteger32
import FBS.RtpParameters.Integer32Array as _FbsInteger32Array
import FBS.RtpParameters.String as _FbsString
from FBS.RtpParameters.RtpHeaderExtensionUri import (
    RtpHeaderExtensionUri as _FbsUri,
)
from FBS.RtpParameters.Value import Value as _FbsValue

__all__ = [
    "CodecMapping",
    "EncodingMapping",
    "MediaKind",
    "RouterRtpCapabilities",
    "RouterRtpCodecCapability",
    "RtcpFeedback",
    "RtcpParameters",
    "RtpCapabilities",
    "RtpCodecCapability",
    "RtpCodecParameters",
    "RtpEncodingParameters",
    "RtpEncodingRtx",
    "RtpHeaderExtension",
    "RtpHeaderExtensionDirection",
    "RtpHeaderExtensionParameters",
    "RtpHeaderExtensionUri",
    "RtpMapping",
    "RtpParameters",
    "WireModel",
    "parse_parameters",
    "parse_rtcp_feedback",
    "parse_rtp_codec_parameters",
    "parse_rtp_encoding_parameters",
    "parse_rtp_header_extension_parameters",
    "parse_rtp_parameters",
    "rtp_header_extension_uri_from_fbs",
    "rtp_header_extension_uri_to_fbs",
    "serialize_rtp_encoding_parameters",
    "serialize_rtp_mapping",
    "serialize_rtp_parameters",
    "write_rtp_encoding_parameters",
    "write_rtp_mapping",
    "write_rtp_parameters",
]

MediaKind = Literal["audio", "video"]
RtpHeaderExtensionDirection = Literal["sendrecv", "sendonly", "recvonly", "inactive"]

# The URIs the worker knows (FBS.RtpParameters.RtpHeaderExtensionUri). Models
# accept any string, as mediasoup's validators do; only serialising an unknown
# one to the worker fails.
RtpHeaderExtensionUri = Literal[
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension",
    "urn:3gpp:video-orientation",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time",
    "urn:ietf:params:rtp-hdrext:toffset",
    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
    "urn:mediasoup:params:rtp-hdrext:packet-id",
]


class WireModel(BaseModel):
    """Base of every wire model: camelCase JSON, snake_case Python, strict types."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        strict=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """The mediasoup JSON form (camelCase keys, unset fields omitted)."""
        return self.model_dump(by_alias=True, exclude_none=True)

    def clone(self) -> Self:
        """A deep copy, like mediasoup's ``utils.clone()``.

        Round-trips through the Rust core, which is several times faster than
        ``model_copy(deep=True)`` (``copy.deepcopy``).
        """
        return type(self).model_validate(self.to_dict())


# ---------------------------------------------------------------------------
# Capabilities
# ---------------------------------------------------------------------------


class RtcpFeedback(WireModel):
    """An RTCP feedback mechanism a codec supports (``nack``, ``nack pli``...)."""

    type: str
    parameter: str | None = None


class RtpCodecCapability(WireModel):
    """A codec an endpoint (or a Router) can send or receive.

    ``kind`` is derived from ``mime_type`` by validation; ``preferred_payload_type``
    is optional only in a Router's ``mediaCodecs`` (``RouterRtpCodecCapability``).
    """

    kind: MediaKind | None = None
    mime_type: str
    preferred_payload_type: int | None = None
    clock_rate: int
    channels: int | None = None
    parameters: dict[str, Any] | None = None
    rtcp_feedback: list[RtcpFeedback] | None = None


RouterRtpCodecCapability = RtpCodecCapability


class RtpHeaderExtension(WireModel):
    """A header extension an endpoint (or a Router) supports."""

    kind: MediaKind
    uri: str
    preferred_id: int
    preferred_encrypt: bool | None = None
    direction: RtpHeaderExtensionDirection | None = None


class RtpCapabilities(WireModel):
    """What an endpoint can send/receive: codecs and header extensions."""

    codecs: list[RtpCodecCapability] | None = None
    header_extensions: list[RtpHeaderExtension] | None = None


RouterRtpCapabilities = RtpCapabilities


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


class RtpCodecParameters(WireModel):
    """A codec negotiated for one Producer or Consumer."""

    mime_type: str
    payload_type: int
    clock_rate: int
    channels: int | None = None
    parameters: dict[str, Any] | None = None
    rtcp_feedback: list[RtcpFeedback] | None = None


class RtpHeaderExtensionParameters(WireModel):
    """A header extension negotiated for one Producer or Consumer."""

    uri: str
    id: int
    encrypt: bool | None = None
    parameters: dict[str, Any] | None = None


class RtpEncodingRtx(WireModel):
    """The RTX stream of an encoding (``encoding.rtx``)."""

    ssrc: int


class RtpEncodingParameters(WireModel):
    """One RTP stream (a simulcast layer, or the single stream)."""

    ssrc: int | None = None
    rid: str | None = None
    codec_payload_type: int | None = None
    rtx: RtpEncodingRtx | None = None
    dtx: bool | None = None
    scalability_mode: str | None = None
    max_bitrate: int | None = None


class RtcpParameters(WireModel):
    """RTCP settings: CNAME and reduced-size RTCP."""

    cname: str | None = None
    reduced_size: bool | None = None


class RtpParameters(WireModel):
    """What a Producer sends or a Consumer receives."""

    mid: str | None = None
    codecs: list[RtpCodecParameters]
    header_extensions: list[RtpHeaderExtensionParameters] | None = None
    encodings: list[RtpEncodingParameters] | None = None
    rtcp: RtcpParameters | None = None
    msid: str | None = None


# ---------------------------------------------------------------------------
# Producer RTP mapping (Producer payload types and SSRCs -> Router's)
# ---------------------------------------------------------------------------


class CodecMapping(WireModel):
    payload_type: int
    mapped_payload_type: int


class EncodingMapping(WireModel):
    ssrc: int | None = None
    rid: str | None = None
    mapped_ssrc: int


class RtpMapping(WireModel):
    """How the worker rewrites a Producer's streams into the Router's space."""

    codecs: list[CodecMapping]
    encodings: list[EncodingMapping]


# ---------------------------------------------------------------------------
# FlatBuffers: serialisation
#
# Like ``ortc``, the helpers take mediasoup JSON dicts (what ``to_dict()``
# gives; a model is accepted too), so the produce/consume paths never build
# models.
#
# Why not the generated ``...Start/Add.../End`` builder functions: the Python
# ``flatbuffers.Builder`` spends ~100 interpreted calls per table, which made a
# Consumer's RtpParameters (~25 tables, ~20 strings) cost 30-40x what Node
# spends. RtpParameters are the one large nested structure on the hot paths,
# so they are encoded here directly: each table type has a layout (vtable
# bytes and a ``struct`` format) computed once per set of present fields, the
# tree is written parent-first into a standalone, position-independent
# FlatBuffers blob (every reference in it is relative, see ``workers.fbs_blob``),
# and the blob is copied into the caller's builder (``serialize_*``) or written
# straight into the blob of a whole request (``write_*``: produce and consume).
# The result is ordinary FlatBuffers that the generated readers, and the
# worker, read like any other; it is several times faster than the builder.
# Small tables elsewhere (SCTP, SRTP) keep using the generated builder functions.
# ---------------------------------------------------------------------------

Json = dict[str, Any]

_URI_TO_FBS: dict[str, int] = {
    "urn:ietf:params:rtp-hdrext:sdes:mid": _FbsUri.Mid,
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": _FbsUri.RtpStreamId,
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id": _FbsUri.RepairRtpStreamId,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": _FbsUri.AbsSendTime,
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01": (_FbsUri.TransportWideCcDraft01),
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": _FbsUri.SsrcAudioLevel,
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension": (
        _FbsUri.DependencyDescriptor
    ),
    "urn:3gpp:video-orientation": _FbsUri.VideoOrientation,
    "urn:ietf:params:rtp-hdrext:toffset": _FbsUri.TimeOffset,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time": _FbsUri.AbsCaptureTime,
    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay": _FbsUri.PlayoutDelay,
    "urn:mediasoup:params:rtp-hdrext:packet-id": _FbsUri.MediasoupPacketId,
}
_URI_FROM_FBS: dict[int, str] = {value: uri for uri, value in _URI_TO_FBS.items()}


def _json(value: Any) -> Any:
    """Mediasoup JSON from a model (ours or e.g. pymediasoup's); anything else as is."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_none=True)
    return value


def rtp_header_extension_uri_to_fbs(uri: str) -> int:
    """The worker's enum value for a header extension URI."""
    try:
        return _URI_TO_FBS[uri]
    except KeyError:
        raise MediasoupTypeError(f"invalid RtpHeaderExtensionUri: {uri}") from None


def rtp_header_extension_uri_from_fbs(value: int) -> str:
    """The URI of a worker header extension enum value."""
    return _URI_FROM_FBS[value]


# --- The blob writer (workers.fbs_blob, shared with the channel) -------------

_layout = table_layout
_Blob = Blob


# Codecs and header extensions repeat from one consumer to the next: their
# encoded subtrees are memoised by content (self-contained, so they can be
# copied to any 8-aligned position). Cleared when full: no LRU bookkeeping.
# Writes one value (a table, a vector...) into a blob; returns its position.
_Writer = Callable[["_Blob", Any], int]

_FRAGMENTS: dict[tuple[Any, ...], tuple[bytes, int]] = {}
_MAX_FRAGMENTS = 4096


def _memoised(blob: _Blob, key: tuple[Any, ...] | None, write: _Writer, item: Any) -> int:
    """Write ``item`` with ``write``, reusing the bytes of an identical earlier one."""
    if key is None:
        offset: int = write(blob, item)
        return offset
    fragment = _FRAGMENTS.get(key)
    if fragment is None:
        scratch = _Blob()
        root = write(scratch, item)
        fragment = (bytes(scratch.data), root)
        if len(_FRAGMENTS) >= _MAX_FRAGMENTS:
            _FRAGMENTS.clear()
        _FRAGMENTS[key] = fragment
    return blob.fragment(fragment)


_SCALAR_PARAMETER_TYPES = frozenset((str, int, float, bool))


def _parameters_key(parameters: Json | None) -> tuple[Any, ...] | None:
    """A hashable, type-exact key for a parameters dict (None unless all
    values are scalars)."""
    if not parameters:
        return ()
    key = []
    for name, value in parameters.items():
        value_type = value.__class__
        if value_type not in _SCALAR_PARAMETER_TYPES:
            return None
        key.append((name, value_type, value))  # True and 1 must differ
    return tuple(key)


_splice = splice


# --- RtpParameters tables (slot numbers and types from rtpParameters.fbs) ----

_FEEDBACK_TYPE_ONLY = _layout(((0, "ref"),))
_FEEDBACK = _layout(((0, "ref"), (1, "ref")))
_PARAMETER = _layout(((0, "ref"), (1, "u8"), (2, "ref")))
_BOOLEAN = _layout(((0, "u8"),))
_INTEGER32 = _layout(((0, "i32"),))
_DOUBLE = _layout(((0, "f64"),))
_STRING_VALUE = _layout(((0, "ref"),))
_INTEGER32_ARRAY = _layout(((0, "ref"),))
_CODEC = _layout(((0, "ref"), (1, "u8"), (2, "u32"), (3, "u8"), (4, "ref"), (5, "ref")))
_CODEC_NO_CHANNELS = _layout(((0, "ref"), (1, "u8"), (2, "u32"), (4, "ref"), (5, "ref")))
_HEADER_EXTENSION = _layout(((0, "u8"), (1, "u8"), (2, "bool"), (3, "ref")))
_RTX = _layout(((0, "u32"),))
_RTCP = _layout(((0, "ref"), (1, "bool")))
_RTCP_NO_CNAME = _layout(((1, "bool"),))
_CODEC_MAPPING = _layout(((0, "u8"), (1, "u8")))

# RtpEncodingParameters fields (slot, kind): ssrc, rid, codecPayloadType, rtx,
# dtx, scalabilityMode, maxBitrate; which are present varies.
_ENCODING_FIELDS = ((0, "u32"), (1, "ref"), (2, "u8"), (3, "ref"), (4, "bool"), (5, "ref"), (6, "u64"))
_RTP_MAPPING = _layout(((0, "ref"), (1, "ref")))


def _parameter_value(key: str, value: Any) -> tuple[int, Any]:
    """(union type, value to write) of a codec/extension parameter value."""
    if value is True or value is False:
        return _FbsValue.Boolean, 1 if value else 0
    if type(value) is float and value.is_integer():
        value = int(value)  # JavaScript has no int/float split: 1.0 is 1.
    if type(value) is int:
        return _FbsValue.Integer32, value
    if type(value) is float:
        return _FbsValue.Double, value
    if type(value) is str:
        return _FbsValue.String, value
    if isinstance(value, (list, tuple)):
        return _FbsValue.Integer32Array, value
    raise MediasoupTypeError(f"invalid parameter type [key:'{key}', value:{value!r}]")


def _write_parameter_value(blob: _Blob, union_type: int, value: Any) -> int:
    if union_type == _FbsValue.Boolean:
        return blob.table(_BOOLEAN, (value,))
    if union_type == _FbsValue.Integer32:
        return blob.table(_INTEGER32, (value,))
    if union_type == _FbsValue.Double:
        return blob.table(_DOUBLE, (value,))
    if union_type == _FbsValue.String:
        position = blob.table(_STRING_VALUE, (0,))
        blob.patch(position + _STRING_VALUE.ref_positions[0], blob.string(value))
        return position
    position = blob.table(_INTEGER32_ARRAY, (0,))
    blob.patch(position + _INTEGER32_ARRAY.ref_positions[0], blob.int32_vector(value))
    return position


def _write_parameters(blob: _Blob, parameters: Json | None) -> int:
    parameters = parameters or {}
    name_ref, value_ref = _PARAMETER.ref_positions
    vector = blob.ref_vector(len(parameters))
    for index, (key, value) in enumerate(parameters.items()):
        union_type, value = _parameter_value(key, value)
        position = blob.table(_PARAMETER, (0, union_type, 0))
        blob.patch_vector(vector, index, position)
        blob.patch(position + name_ref, blob.string(key))
        blob.patch(position + value_ref, _write_parameter_value(blob, union_type, value))
    return vector


def _write_rtcp_feedback(blob: _Blob, fb: Json) -> int:
    parameter = fb.get("parameter")
    if parameter is None:
        position = blob.table(_FEEDBACK_TYPE_ONLY, (0,))
    else:
        position = blob.table(_FEEDBACK, (0, 0))
        blob.patch(position + _FEEDBACK.ref_positions[1], blob.string(parameter))
    blob.patch(position + _FEEDBACK.ref_positions[0], blob.string(fb["type"]))  # same in both layouts
    return position


def _write_codec(blob: _Blob, codec: Json) -> int:
    channels = codec.get("channels")
    if channels is None:
        layout = _CODEC_NO_CHANNELS
        position = blob.table(layout, (0, codec["payloadType"], codec["clockRate"], 0, 0))
    else:
        layout = _CODEC
        position = blob.table(layout, (0, codec["payloadType"], codec["clockRate"], channels, 0, 0))
    mime_type_ref, parameters_ref, feedback_ref = layout.ref_positions
    blob.patch(position + mime_type_ref, blob.string(codec["mimeType"]))
    blob.patch(position + parameters_ref, _write_parameters(blob, codec.get("parameters")))
    feedback = codec.get("rtcpFeedback") or ()
    vector = blob.ref_vector(len(feedback))
    blob.patch(position + feedback_ref, vector)
    for index, fb in enumerate(feedback):
        blob.patch_vector(vector, index, _write_rtcp_feedback(blob, fb))
    return position


def _write_header_extension(blob: _Blob, ext: Json) -> int:
    uri = rtp_header_extension_uri_to_fbs(ext["uri"])
    layout = _HEADER_EXTENSION
    position = blob.table(layout, (uri, ext["id"], bool(ext.get("encrypt")), 0))
    blob.patch(position + layout.ref_positions[0], _write_parameters(blob, ext.get("parameters")))
    return position


@cache
def _encoding_layout(present: int) -> TableLayout:
    """The layout of an encoding whose present fields are the bits of ``present``."""
    return _layout(tuple((slot, kind) for slot, kind in _ENCODING_FIELDS if present & (1 << slot)))


def _write_encoding(blob: _Blob, encoding: Json) -> int:
    # As mediasoup serialises it: a falsy ssrc, rid, codecPayloadType, rtx or
    # scalabilityMode means "not set"; dtx and maxBitrate only when defined.
    get = encoding.get
    ssrc, rid, payload_type, rtx = get("ssrc"), get("rid"), get("codecPayloadType"), get("rtx")
    dtx, mode, max_bitrate = get("dtx"), get("scalabilityMode"), get("maxBitrate")
    present, values = 0, []
    if ssrc:
        present |= 1
        values.append(ssrc)
    if rid:
        present |= 2
        values.append(0)
    if payload_type:
        present |= 4
        values.append(payload_type)
    if rtx:
        present |= 8
        values.append(0)
    if dtx is not None:
        present |= 16
        values.append(bool(dtx))
    if mode:
        present |= 32
        values.append(0)
    if max_bitrate is not None:
        present |= 64
        values.append(int(max_bitrate))

    layout = _encoding_layout(present)
    position = blob.table(layout, tuple(values))
    refs = iter(layout.ref_positions)
    if rid:
        blob.patch(position + next(refs), blob.string(rid))
    if rtx:
        blob.patch(position + next(refs), blob.table(_RTX, (rtx["ssrc"],)))
    if mode:
        blob.patch(position + next(refs), blob.string(mode))
    return position


def _codec_key(codec: Json) -> tuple[Any, ...] | None:
    parameters_key = _parameters_key(codec.get("parameters"))
    if parameters_key is None:
        return None
    feedback_key = tuple((fb["type"], fb.get("parameter")) for fb in codec.get("rtcpFeedback") or ())
    return (
        "codec",
        codec["mimeType"],
        codec["payloadType"],
        codec["clockRate"],
        codec.get("channels"),
        parameters_key,
        feedback_key,
    )


def _header_extension_key(ext: Json) -> tuple[Any, ...] | None:
    parameters_key = _parameters_key(ext.get("parameters"))
    if parameters_key is None:
        return None
    return ("ext", ext["uri"], ext["id"], bool(ext.get("encrypt")), parameters_key)


def _vector_key(items: Sequence[Json], item_key: Callable[[Json], tuple[Any, ...] | None]) -> tuple[Any, ...] | None:
    keys = tuple(item_key(item) for item in items)
    return None if None in keys else keys


def _write_codecs(blob: _Blob, codecs: Sequence[Json]) -> int:
    return _memoised(blob, _vector_key(codecs, _codec_key), _write_codec_vector, codecs)


def _write_header_extensions(blob: _Blob, extensions: Sequence[Json]) -> int:
    key = _vector_key(extensions, _header_extension_key)
    return _memoised(blob, key, _write_header_extension_vector, extensions)


def _write_table_vector(blob: _Blob, items: Sequence[Json], write_item: _Writer) -> int:
    vector = blob.ref_vector(len(items))
    for index, item in enumerate(items):
        blob.patch_vector(vector, index, write_item(blob, item))
    return vector


def _write_codec_vector(blob: _Blob, codecs: Sequence[Json]) -> int:
    return _write_table_vector(blob, codecs, _write_codec)


def _write_header_extension_vector(blob: _Blob, extensions: Sequence[Json]) -> int:
    return _write_table_vector(blob, extensions, _write_header_extension)


def _write_encoding_vector(blob: _Blob, encodings: Sequence[Json]) -> int:
    return _write_table_vector(blob, encodings, _write_encoding)


def _write_rtcp(blob: _Blob, rtcp: Json | None) -> int:
    rtcp = rtcp if rtcp is not None else {"reducedSize": True}
    cname = rtcp.get("cname")
    reduced_size = bool(rtcp.get("reducedSize"))
    if not cname:
        return blob.table(_RTCP_NO_CNAME, (reduced_size,))
    position = blob.table(_RTCP, (0, reduced_size))
    blob.patch(position + _RTCP.ref_positions[0], blob.string(cname))
    return position


def _rtp_parameters_layout(has_mid: bool, has_msid: bool) -> TableLayout:
    slots = [0] * has_mid + [1, 2, 3, 4] + [5] * has_msid
    return _layout(tuple((slot, "ref") for slot in slots))


# (has mid, has msid) -> layout; mid and msid are the only optional fields.
_RTP_PARAMETERS_LAYOUTS = {
    (has_mid, has_msid): _rtp_parameters_layout(has_mid, has_msid)
    for has_mid in (False, True)
    for has_msid in (False, True)
}


def _write_rtp_parameters(blob: _Blob, params: Json) -> int:
    mid, msid = params.get("mid"), params.get("msid")
    layout = _RTP_PARAMETERS_LAYOUTS[bool(mid), bool(msid)]
    refs = iter(layout.ref_positions)
    position = blob.table(layout, (0,) * len(layout.ref_positions))
    if mid:
        blob.patch(position + next(refs), blob.string(mid))
    blob.patch(position + next(refs), _write_codecs(blob, params["codecs"]))
    blob.patch(position + next(refs), _write_header_extensions(blob, params.get("headerExtensions") or ()))
    blob.patch(position + next(refs), _write_encoding_vector(blob, params.get("encodings") or ()))
    blob.patch(position + next(refs), _write_rtcp(blob, params.get("rtcp")))
    if msid:
        blob.patch(position + next(refs), blob.string(msid))
    return position


def _write_checked(blob: _Blob, write: _Writer, value: Any) -> int:
    """Write ``value`` into ``blob``; returns its root's position.

    Expects validated input; a missing field or a number out of its FBS
    type's range (a payload type of 300...) is a ``MediasoupTypeError``.
    """
    try:
        offset: int = write(blob, value)
        return offset
    except KeyError as error:
        raise MediasoupTypeError(f"missing {error.args[0]}") from None
    except struct.error as error:
        raise MediasoupTypeError(f"invalid value ({error})") from None


def _serialize(builder: flatbuffers.Builder, write: _Writer, value: Any) -> int:
    """Write ``value`` into a blob and splice it into ``builder``."""
    blob = _Blob()
    root = _write_checked(blob, write, value)
    return _splice(builder, blob, root)


def write_rtp_parameters(blob: Blob, rtp_parameters: Any) -> int:
    """``serialize_rtp_parameters`` into a blob (a request written without a builder)."""
    return _write_checked(blob, _write_rtp_parameters, _json(rtp_parameters))


def write_rtp_encoding_parameters(blob: Blob, encodings: Any) -> int:
    """``serialize_rtp_encoding_parameters`` into a blob."""
    return _write_checked(blob, _write_encoding_vector, [_json(encoding) for encoding in encodings or ()])


def write_rtp_mapping(blob: Blob, rtp_mapping: Any) -> int:
    """``serialize_rtp_mapping`` into a blob."""
    return _write_checked(blob, _write_rtp_mapping, _json(rtp_mapping))


def serialize_rtp_parameters(builder: flatbuffers.Builder, rtp_parameters: Any) -> int:
    """An ``FBS.RtpParameters.RtpParameters`` table in ``builder``; returns its offset."""
    return _serialize(builder, _write_rtp_parameters, _json(rtp_parameters))


def serialize_rtp_encoding_parameters(builder: flatbuffers.Builder, encodings: Any) -> int:
    """A ``[RtpEncodingParameters]`` vector in ``builder`` (e.g. a consume
    request's ``consumableRtpEncodings``); returns its offset."""
    encodings = [_json(encoding) for encoding in encodings or ()]
    return _serialize(builder, _write_encoding_vector, encodings)


def _write_codec_mapping(blob: _Blob, codec: Json) -> int:
    return blob.table(_CODEC_MAPPING, (codec["payloadType"], codec["mappedPayloadType"]))


def _write_encoding_mapping(blob: _Blob, encoding: Json) -> int:
    rid, ssrc = encoding.get("rid"), encoding.get("ssrc")
    fields, values = [], []
    if rid is not None:
        fields.append((0, "ref"))
        values.append(0)
    if ssrc is not None:
        fields.append((1, "u32"))
        values.append(ssrc)
    fields.append((2, "u32"))
    values.append(encoding["mappedSsrc"])
    layout = _layout(tuple(fields))
    position = blob.table(layout, tuple(values))
    if rid is not None:
        blob.patch(position + layout.ref_positions[0], blob.string(rid))
    return position


def _write_rtp_mapping(blob: _Blob, rtp_mapping: Json) -> int:
    codecs_ref, encodings_ref = _RTP_MAPPING.ref_positions
    position = blob.table(_RTP_MAPPING, (0, 0))
    blob.patch(position + codecs_ref, _write_table_vector(blob, rtp_mapping["codecs"], _write_codec_mapping))
    blob.patch(position + encodings_ref, _write_table_vector(blob, rtp_mapping["encodings"], _write_encoding_mapping))
    return position


def serialize_rtp_mapping(builder: flatbuffers.Builder, rtp_mapping: Any) -> int:
    """An ``FBS.RtpParameters.RtpMapping`` table (``produce`` request); returns its offset."""
    return _serialize(builder, _write_rtp_mapping, _json(rtp_mapping))


# ---------------------------------------------------------------------------
# FlatBuffers: parsing (worker dumps and notifications back into mediasoup JSON)
#
# As in mediasoup, empty strings and absent optional fields are left out.
# ---------------------------------------------------------------------------


def _set_text(target: Json, key: str, value: bytes | None) -> None:
    """FBS strings come back as bytes; mediasoup maps empty ones to undefined."""
    if value:
        target[key] = value.decode()


def _parse_parameter_value(fbs_parameter: Any) -> Any:
    value_type = fbs_parameter.ValueType()
    table = fbs_parameter.Value()
    if value_type == _FbsValue.Boolean:
        value = _FbsBoolean.Boolean()
        value.Init(table.Bytes, table.Pos)
        return value.Value()
    if value_type == _FbsValue.Integer32:
        value = _FbsInteger32.Integer32()
        value.Init(table.Bytes, table.Pos)
        return value.Value()
    if value_type == _FbsValue.Double:
        value = _FbsDouble.Double()
        value.Init(table.Bytes, table.Pos)
        return value.Value()
    if value_type == _FbsValue.String:
        value = _FbsString.String()
        value.Init(table.Bytes, table.Pos)
        return value.Value().decode()
    if value_type == _FbsValue.Integer32Array:
        value = _FbsInteger32Array.Integer32Array()
        value.Init(table.Bytes, table.Pos)
        return [value.Value(i) for i in range(value.ValueLength())]
    return None


def parse_parameters(fbs_owner: Any) -> Json:
    """The ``parameters`` dict of an FBS codec or header extension."""
    parameters: Json = {}
    for i in range(fbs_owner.ParametersLength()):
        fbs_parameter = fbs_owner.Parameters(i)
        value = _parse_parameter_value(fbs_parameter)
        if value is not None:
            parameters[fbs_parameter.Name().decode()] = value
    return parameters


def parse_rtcp_feedback(fbs_fb: Any) -> Json:
    fb: Json = {"type": fbs_fb.Type().decode()}
    parameter = fbs_fb.Parameter()
    if parameter is not None:
        fb["parameter"] = parameter.decode()
    return fb


def parse_rtp_codec_parameters(fbs_codec: Any) -> Json:
    codec: Json = {
        "mimeType": fbs_codec.MimeType().decode(),
        "payloadType": fbs_codec.PayloadType(),
        "clockRate": fbs_codec.ClockRate(),
    }
    channels = fbs_codec.Channels()
    if channels is not None:
        codec["channels"] = channels
    codec["parameters"] = parse_parameters(fbs_codec)
    codec["rtcpFeedback"] = [
        parse_rtcp_feedback(fbs_codec.RtcpFeedback(i)) for i in range(fbs_codec.RtcpFeedbackLength())
    ]
    return codec


def parse_rtp_header_extension_parameters(fbs_ext: Any) -> Json:
    return {
        "uri": rtp_header_extension_uri_from_fbs(fbs_ext.Uri()),
        "id": fbs_ext.Id(),
        "encrypt": fbs_ext.Encrypt(),
        "parameters": parse_parameters(fbs_ext),
    }


def parse_rtp_encoding_parameters(fbs_encoding: Any) -> Json:
    encoding: Json = {}
    if (ssrc := fbs_encoding.Ssrc()) is not None:
        encoding["ssrc"] = ssrc
    _set_text(encoding, "rid", fbs_encoding.Rid())
    if (codec_payload_type := fbs_encoding.CodecPayloadType()) is not None:
        encoding["codecPayloadType"] = codec_payload_type
    if (fbs_rtx := fbs_encoding.Rtx()) is not None:
        encoding["rtx"] = {"ssrc": fbs_rtx.Ssrc()}
    encoding["dtx"] = fbs_encoding.Dtx()
    _set_text(encoding, "scalabilityMode", fbs_encoding.ScalabilityMode())
    if (max_bitrate := fbs_encoding.MaxBitrate()) is not None:
        encoding["maxBitrate"] = max_bitrate
    return encoding


def parse_rtp_parameters(fbs_params: Any) -> Json:
    """Mediasoup JSON ``RtpParameters`` from an ``FBS.RtpParameters.RtpParameters``."""
    params: Json = {}
    _set_text(params, "mid", fbs_params.Mid())
    params["codecs"] = [parse_rtp_codec_parameters(fbs_params.Codecs(i)) for i in range(fbs_params.CodecsLength())]
    params["headerExtensions"] = [
        parse_rtp_header_extension_parameters(fbs_params.HeaderExtensions(i))
        for i in range(fbs_params.HeaderExtensionsLength())
    ]
    params["encodings"] = [
        parse_rtp_encoding_parameters(fbs_params.Encodings(i)) for i in range(fbs_params.EncodingsLength())
    ]
    fbs_rtcp = fbs_params.Rtcp()
    if fbs_rtcp is not None:
        rtcp: Json = {}
        _set_text(rtcp, "cname", fbs_rtcp.Cname())
        rtcp["reducedSize"] = fbs_rtcp.ReducedSize()
        params["rtcp"] = rtcp
    _set_text(params, "msid", fbs_params.Msid())
    return params

"""What a client sends that reaches another parser is checked here first.

Signaling payloads go on to a media worker (FlatBuffers), to other peers'
``newConsumer`` (their SDP), to FFmpeg's SDP of a recording, to MongoDB and to
logs. So, beyond the shapes of :mod:`control.signaling.messages`:

- :func:`check_json`, for every request of the protocol: numbers are finite and
  within the range JavaScript represents exactly (``NaN`` and ``1e999`` parse in
  Python), strings (keys too) hold no control character (C0, DEL, C1: no CR, LF,
  NUL, ESC) and no lone surrogate;
- :func:`rtp_parameters`, :func:`rtp_capabilities`, :func:`sctp_capabilities`,
  :func:`sctp_stream_parameters`: after mediasoup's own normalisation
  (``workers.ortc``), every string that becomes SDP is made of RFC 4566 token
  characters (``mid``, ``rid``, ``msid``, ``scalabilityMode``,
  ``mimeType``, fmtp keys and values, RTCP feedback, header extension URIs) or,
  for ``cname`` (RFC 5576 byte-string: libwebrtc's are base64), visible ASCII, with a
  length cap, and every number has the type and range the worker's schema holds
  (``payloadType`` 0-127, ``ssrc`` a uint32, ``maxBitrate`` a finite number...).

Each raises ``ValueError`` with a message naming the field, never echoing the value;
the models turn it into a 400.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "check_json",
    "rtp_capabilities",
    "rtp_parameters",
    "sctp_capabilities",
    "sctp_stream_parameters",
]

#: Integers JavaScript represents exactly (what a browser can have sent).
MAX_SAFE_INTEGER = 2**53 - 1
MAX_UINT32 = 2**32 - 1

_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: For free text that may span lines (a PEM key in ``integrations``): TAB, LF and CR pass.
_CONTROL_MULTILINE_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
#: RFC 4566 ``token``.
_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]"
_TOKEN_RE = re.compile(rf"{_TOKEN}{{1,255}}")
_MID_RE = re.compile(rf"{_TOKEN}{{1,32}}")
_RID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
#: RFC 5576 ``cname`` (a byte-string): visible ASCII, no space. libwebrtc draws its
#: 16 characters from the base64 alphabet (``+``, ``/``), RFC 3550 suggests ``user@host``.
_CNAME_RE = re.compile(r"[!-~]{1,255}")
_MSID_RE = re.compile(rf"{_TOKEN}{{1,64}}(?: {_TOKEN}{{1,64}})?")
_SCALABILITY_MODE_RE = re.compile(r"[A-Za-z0-9_]{1,32}")
_MIME_TYPE_RE = re.compile(r"(?:audio|video)/[A-Za-z0-9][A-Za-z0-9_.+-]{0,47}", re.IGNORECASE)
_FMTP_KEY_RE = re.compile(rf"{_TOKEN}{{1,64}}")
#: fmtp values: token characters and what parameter sets hold (base64 ``/ + =``, ``,``, ``:``).
_FMTP_VALUE_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~,/:=@]{0,256}")
_FEEDBACK_RE = re.compile(rf"{_TOKEN}{{1,64}}")
_URI_RE = re.compile(r"[A-Za-z0-9:/._#~%?&=+-]{1,256}")
_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
_KINDS = frozenset({"audio", "video"})

MAX_CODECS = 64
MAX_HEADER_EXTENSIONS = 64
MAX_ENCODINGS = 16
MAX_FEEDBACK = 32
MAX_PARAMETERS = 32


# -- any JSON ---------------------------------------------------------------------------


def check_json(value: Any, where: str = "data", *, multiline: bool = False) -> None:
    """Finite numbers in JavaScript's exact range; strings and keys without control
    characters or lone surrogates (``ValueError`` naming the first bad place).
    ``multiline``: string values may hold TAB, LF and CR (free text that is never
    relayed to other peers)."""
    values_re = _CONTROL_MULTILINE_RE if multiline else _CONTROL_RE
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        kind = type(item)
        if kind is str:
            if values_re.search(item):
                raise ValueError(f"{path} contains a control character or a lone surrogate")
        elif kind is float:
            if not math.isfinite(item) or abs(item) > MAX_SAFE_INTEGER:
                raise ValueError(f"{path} must be a finite number")
        elif kind is int:
            if abs(item) > MAX_SAFE_INTEGER:
                raise ValueError(f"{path} is out of range")
        elif kind is dict:
            for key, child in item.items():
                if _CONTROL_RE.search(key):
                    raise ValueError(f"{path} has a key with a control character or a lone surrogate")
                stack.append((child, f"{path}.{key[:32]}"))
        elif kind is list:
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))


# -- field checks -----------------------------------------------------------------------


def _int(owner: Mapping[str, Any], key: str, path: str, low: int, high: int, *, required: bool = False) -> None:
    value = owner.get(key)
    if value is None and not required:
        return
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{path}.{key} must be an integer from {low} to {high}")


def _number(owner: Mapping[str, Any], key: str, path: str, low: float, high: float) -> None:
    value = owner.get(key)
    if value is None:
        return
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{path}.{key} must be a number from {low:g} to {high:g}")


def _bool(owner: Mapping[str, Any], key: str, path: str) -> None:
    value = owner.get(key)
    if value is not None and type(value) is not bool:
        raise ValueError(f"{path}.{key} must be a boolean")


def _text(owner: Mapping[str, Any], key: str, path: str, pattern: re.Pattern[str], *, required: bool = False) -> None:
    """An optional (``None`` or ``""`` is unset, as in mediasoup) or required string of ``pattern``."""
    value = owner.get(key)
    if (value is None or value == "") and not required:
        return
    if type(value) is not str or pattern.fullmatch(value) is None:
        raise ValueError(f"{path}.{key} must be 1-{_cap(pattern)} token characters")


def _cap(pattern: re.Pattern[str]) -> str:
    found = re.findall(r"\{\d+,(\d+)\}", pattern.pattern)
    return found[-1] if found else "255"


def _list(owner: Mapping[str, Any], key: str, path: str, cap: int) -> list[Any]:
    value = owner.get(key)
    if value is None:
        return []
    if type(value) is not list or len(value) > cap:
        raise ValueError(f"{path}.{key} must be an array of at most {cap} items")
    for index, item in enumerate(value):
        if type(item) is not dict:
            raise ValueError(f"{path}.{key}[{index}] must be an object")
    return value


def _parameters(owner: Mapping[str, Any], path: str) -> None:
    """fmtp-like ``parameters``: token keys, token (or number) values."""
    parameters = owner.get("parameters")
    if parameters is None:
        return
    if type(parameters) is not dict or len(parameters) > MAX_PARAMETERS:
        raise ValueError(f"{path}.parameters must be an object of at most {MAX_PARAMETERS} entries")
    for key, value in parameters.items():
        if _FMTP_KEY_RE.fullmatch(key) is None:
            raise ValueError(f"{path}.parameters has a key that is not 1-64 token characters")
        if type(value) is str:
            if _FMTP_VALUE_RE.fullmatch(value) is None:
                raise ValueError(f"{path}.parameters.{key} must be at most 256 token characters")
        elif type(value) not in (int, float) or not math.isfinite(value):
            raise ValueError(f"{path}.parameters.{key} must be a string or a finite number")


def _feedback(codec: Mapping[str, Any], path: str) -> None:
    for index, fb in enumerate(_list(codec, "rtcpFeedback", path, MAX_FEEDBACK)):
        where = f"{path}.rtcpFeedback[{index}]"
        _text(fb, "type", where, _FEEDBACK_RE, required=True)
        _text(fb, "parameter", where, _FEEDBACK_RE)


def _codec(codec: Mapping[str, Any], path: str, payload_type: str) -> None:
    _text(codec, "mimeType", path, _MIME_TYPE_RE, required=True)
    _int(codec, payload_type, path, 0, 127, required=payload_type == "payloadType")
    _int(codec, "clockRate", path, 1, 10_000_000, required=True)
    _int(codec, "channels", path, 1, 255)
    _parameters(codec, path)
    _feedback(codec, path)


# -- RTP and SCTP -----------------------------------------------------------------------


def rtp_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """RTP parameters of a ``produce`` (normalised by ``workers.ortc`` first)."""
    path = "rtpParameters"
    _text(params, "mid", path, _MID_RE)
    _text(params, "msid", path, _MSID_RE)
    for index, codec in enumerate(_list(params, "codecs", path, MAX_CODECS)):
        _codec(codec, f"{path}.codecs[{index}]", "payloadType")
    for index, ext in enumerate(_list(params, "headerExtensions", path, MAX_HEADER_EXTENSIONS)):
        where = f"{path}.headerExtensions[{index}]"
        _text(ext, "uri", where, _URI_RE, required=True)
        _int(ext, "id", where, 1, 255, required=True)
        _bool(ext, "encrypt", where)
        _parameters(ext, where)
    for index, encoding in enumerate(_list(params, "encodings", path, MAX_ENCODINGS)):
        _encoding(encoding, f"{path}.encodings[{index}]")
    rtcp = params.get("rtcp")
    if isinstance(rtcp, dict):
        _text(rtcp, "cname", f"{path}.rtcp", _CNAME_RE)
        _bool(rtcp, "reducedSize", f"{path}.rtcp")
        _bool(rtcp, "mux", f"{path}.rtcp")
    return params


def _encoding(encoding: Mapping[str, Any], path: str) -> None:
    _int(encoding, "ssrc", path, 0, MAX_UINT32)
    _text(encoding, "rid", path, _RID_RE)
    _int(encoding, "codecPayloadType", path, 0, 127)
    rtx = encoding.get("rtx")
    if rtx is not None:
        if type(rtx) is not dict:
            raise ValueError(f"{path}.rtx must be an object")
        _int(rtx, "ssrc", f"{path}.rtx", 0, MAX_UINT32, required=True)
    _bool(encoding, "dtx", path)
    _text(encoding, "scalabilityMode", path, _SCALABILITY_MODE_RE)
    _number(encoding, "maxBitrate", path, 0, 1e10)
    _number(encoding, "maxFramerate", path, 0, 1000)
    _number(encoding, "scaleResolutionDownBy", path, 0, 1000)
    _bool(encoding, "active", path)
    _text(encoding, "priority", path, _TOKEN_RE)
    _text(encoding, "networkPriority", path, _TOKEN_RE)


def rtp_capabilities(caps: dict[str, Any]) -> dict[str, Any]:
    """A device's RTP capabilities (``join``), normalised by ``workers.ortc`` first."""
    path = "rtpCapabilities"
    for index, codec in enumerate(_list(caps, "codecs", path, MAX_CODECS)):
        where = f"{path}.codecs[{index}]"
        if codec.get("kind") not in _KINDS:
            raise ValueError(f"{where}.kind must be audio or video")
        _codec(codec, where, "preferredPayloadType")
    for index, ext in enumerate(_list(caps, "headerExtensions", path, MAX_HEADER_EXTENSIONS)):
        where = f"{path}.headerExtensions[{index}]"
        if ext.get("kind") not in _KINDS:
            raise ValueError(f"{where}.kind must be audio or video")
        _text(ext, "uri", where, _URI_RE, required=True)
        _int(ext, "preferredId", where, 1, 255, required=True)
        _bool(ext, "preferredEncrypt", where)
        if ext.get("direction") not in _DIRECTIONS:
            raise ValueError(f"{where}.direction must be one of {', '.join(sorted(_DIRECTIONS))}")
    return caps


def sctp_capabilities(caps: dict[str, Any]) -> dict[str, Any]:
    """SCTP capabilities: ``numStreams.OS``/``MIS`` from 1 to 65535."""
    streams = caps.get("numStreams")
    if type(streams) is not dict:
        raise ValueError("sctpCapabilities.numStreams must be an object")
    _int(streams, "OS", "sctpCapabilities.numStreams", 1, 65535, required=True)
    _int(streams, "MIS", "sctpCapabilities.numStreams", 1, 65535, required=True)
    return caps


def sctp_stream_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """SCTP stream parameters of a ``produceData``."""
    path = "sctpStreamParameters"
    _int(params, "streamId", path, 0, 65534, required=True)
    _bool(params, "ordered", path)
    _int(params, "maxPacketLifeTime", path, 0, 65535)
    _int(params, "maxRetransmits", path, 0, 65535)
    return params

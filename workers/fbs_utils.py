"""Helpers to turn generated FlatBuffers objects into mediasoup's JSON shapes.

Dumps and stats are large trees whose field names, in the generated object
API (``...T`` classes), are already mediasoup's camelCase names. ``to_dict``
walks such a tree generically; enum fields named in ``ENUM_FIELDS`` become
mediasoup's lowercase strings, union ``...Type`` tags are dropped, and byte
strings are decoded. Entity modules post-process the few fields whose JSON
differs (fingerprint algorithms, SRTP suites).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)

import FBS.Common.TraceDirection as FbsTraceDirection
import FBS.Consumer.TraceEventType as FbsConsumerTraceEventType
import FBS.DataProducer.Type as FbsDataProducerType
import FBS.Producer.TraceEventType as FbsProducerTraceEventType
import FBS.RtpParameters.MediaKind as FbsMediaKind
import FBS.RtpParameters.Type as FbsRtpType
import FBS.SctpAssociation.SctpState as FbsSctpState
import FBS.SrtpParameters.SrtpCryptoSuite as FbsSrtpCryptoSuite
import FBS.Transport.Protocol as FbsProtocol
import FBS.Transport.Tuple as FbsTuple
import FBS.WebRtcTransport.DtlsRole as FbsDtlsRole
import FBS.WebRtcTransport.DtlsState as FbsDtlsState
import FBS.WebRtcTransport.FingerprintAlgorithm as FbsFingerprintAlgorithm
import FBS.WebRtcTransport.IceCandidateTcpType as FbsIceCandidateTcpType
import FBS.WebRtcTransport.IceCandidateType as FbsIceCandidateType
import FBS.WebRtcTransport.IceRole as FbsIceRole
import FBS.WebRtcTransport.IceState as FbsIceState


def enum_names(enum_cls: type, transform: Callable[[str], str] = str.lower) -> dict[int, str]:
    """Map a generated enum's values to mediasoup's strings."""
    return {
        value: transform(name)
        for name, value in vars(enum_cls).items()
        if not name.startswith("_") and isinstance(value, int)
    }


def enum_values(enum_cls: type, transform: Callable[[str], str] = str.lower) -> dict[str, int]:
    return {name: value for value, name in enum_names(enum_cls, transform).items()}


def _fingerprint_name(name: str) -> str:
    return "sha-" + name[3:] if name.startswith("SHA") else name.lower()


PROTOCOL = enum_names(FbsProtocol.Protocol)
ICE_STATE = enum_names(FbsIceState.IceState)
ICE_ROLE = enum_names(FbsIceRole.IceRole)
DTLS_STATE = enum_names(FbsDtlsState.DtlsState)
DTLS_ROLE = enum_names(FbsDtlsRole.DtlsRole)
SCTP_STATE = enum_names(FbsSctpState.SctpState)
MEDIA_KIND = enum_names(FbsMediaKind.MediaKind)
RTP_TYPE = enum_names(FbsRtpType.Type)
FINGERPRINT_ALGORITHM = enum_names(FbsFingerprintAlgorithm.FingerprintAlgorithm, _fingerprint_name)
SRTP_CRYPTO_SUITE = enum_names(FbsSrtpCryptoSuite.SrtpCryptoSuite, str)
TRACE_DIRECTION = {
    value: name[len("DIRECTION_") :].lower()
    for value, name in enum_names(FbsTraceDirection.TraceDirection, str).items()
}

# Field name -> value-to-string table, for fields whose meaning is unambiguous.
ENUM_FIELDS: dict[str, dict[int, str]] = {
    "protocol": PROTOCOL,
    "iceState": ICE_STATE,
    "iceRole": ICE_ROLE,
    "dtlsState": DTLS_STATE,
    "role": DTLS_ROLE,
    "sctpState": SCTP_STATE,
    "kind": MEDIA_KIND,
    "algorithm": FINGERPRINT_ALGORITHM,
    "cryptoSuite": SRTP_CRYPTO_SUITE,
    "tcpType": enum_names(FbsIceCandidateTcpType.IceCandidateTcpType),
    "direction": TRACE_DIRECTION,
}

PRODUCER_TRACE_EVENT = enum_names(FbsProducerTraceEventType.TraceEventType)
CONSUMER_TRACE_EVENT = enum_names(FbsConsumerTraceEventType.TraceEventType)
DATA_TYPE = enum_names(FbsDataProducerType.Type)
ICE_CANDIDATE_TYPE = enum_names(FbsIceCandidateType.IceCandidateType)


def to_dict(obj: Any, enums: dict[str, dict[int, str]] | None = None) -> Any:
    """Convert a generated ``...T`` object tree to plain JSON-able data."""
    enums = ENUM_FIELDS if enums is None else {**ENUM_FIELDS, **enums}
    return _convert(obj, enums)


def _convert(obj: Any, enums: dict[str, dict[int, str]]) -> Any:
    if obj is None or isinstance(obj, (int, float, bool, str)):
        return obj
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, (list, tuple)):
        return [_convert(item, enums) for item in obj]
    if hasattr(obj, "tolist"):  # numpy arrays, if numpy is present
        return obj.tolist()
    if isinstance(obj, FbsTuple.TupleT):
        return parse_tuple(obj)
    fields = vars(obj)
    result: dict[str, Any] = {}
    for name, value in fields.items():
        if name.endswith("Type") and name[:-4] in fields and isinstance(value, int):
            continue  # union tag: the union member itself carries the data
        if isinstance(value, int) and not isinstance(value, bool) and name in enums:
            result[name] = enums[name].get(value, value)
        else:
            result[name] = _convert(value, enums)
    return result


def parse_tuple(tuple_t: Any) -> dict[str, Any] | None:
    """mediasoup's ``parseTuple``: a transport tuple, with the deprecated ``localIp`` alias."""
    if tuple_t is None:
        return None
    local_address = _convert(tuple_t.localAddress, ENUM_FIELDS)
    return {
        "localIp": local_address,
        "localAddress": local_address,
        "localPort": tuple_t.localPort,
        "remoteIp": _convert(tuple_t.remoteIp, ENUM_FIELDS),
        "remotePort": tuple_t.remotePort,
        "protocol": PROTOCOL.get(tuple_t.protocol, tuple_t.protocol),
    }


def vector(values: Any) -> list[Any]:
    """A generated object-API vector (``None`` when absent, maybe a numpy array) as a list."""
    if values is None:
        return []
    return values.tolist() if hasattr(values, "tolist") else list(values)


def unpack(response: Any, table_cls: type, object_cls: Any) -> Any:
    """Decode a response body as the object API ``...T`` instance."""
    table = response.Body()
    body = table_cls()
    body.Init(table.Bytes, table.Pos)
    return object_cls.InitFromObj(body)


def body_as(holder: Any, table_cls: type) -> Any:
    """Decode a union body (of a response or notification) as ``table_cls``."""
    table = holder.Body()
    body = table_cls()
    body.Init(table.Bytes, table.Pos)
    return body


def str_or_none(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


def byte_vector(table_obj: Any, field_index: int) -> bytes:
    """The bytes of a ``[ubyte]`` field, sliced straight from the buffer.

    The generated accessors return one byte per call (or need numpy); payloads
    (RTP packets, data channel messages) want one slice.
    """
    tab = table_obj._tab
    offset = tab.Offset(4 + 2 * field_index)
    if not offset:
        return b""
    start = tab.Vector(offset)
    return bytes(tab.Bytes[start : start + tab.VectorLen(offset)])

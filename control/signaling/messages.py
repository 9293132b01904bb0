"""Request payloads of the signaling protocol, one pydantic model per method.

Shapes are mediasoup-demo's (camelCase, as mediasoup-client and pymediasoup
send them). RTP/SCTP capabilities and parameters are checked with
``workers.ortc`` (mediasoup's own validation rules) and normalised copies are
kept, then :mod:`control.signaling.sanitize` checks what becomes SDP (token
characters, length caps, number types and ranges); every payload is checked by
:func:`~control.signaling.sanitize.check_json` first (finite numbers, no control
characters or lone surrogates anywhere). ``appData``, ``device`` and the
participant metadata are size- and depth-limited; display names follow the one
rule of :mod:`control.ids` (:data:`~control.ids.DISPLAY_NAME_RULE`).

:func:`parse` turns ``(method, data)`` into a model or raises
:class:`~control.errors.BadRequest` (400) or :class:`~control.errors.NotFound` (404,
an unknown method) with a message that
names fields but never echoes their values (they may hold credentials).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from control.errors import BadRequest, NotFound
from control.ids import DISPLAY_NAME_RULE, MAX_DISPLAY_NAME_LENGTH, is_valid_display_name
from control.signaling import sanitize
from workers import ortc
from workers.errors import MediasoupTypeError
from workers.wire import clone

#: Size limits (bytes of compact JSON) and nesting depth of free-form objects.
MAX_APP_DATA_BYTES = 4096
MAX_DEVICE_BYTES = 2048
MAX_METADATA_BYTES = 16_384
MAX_DEPTH = 8
MAX_DISPLAY_NAME = MAX_DISPLAY_NAME_LENGTH
#: Ids of server-created entities (transports, producers, consumers...); room and
#: peer ids follow :mod:`control.ids`.
MAX_ID = 128
MAX_LABEL = 256

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s.]{1,63}$")


def is_email(value: str) -> bool:
    """An e-mail address as ``join`` accepts it (at most 320 characters, one ``@``, no spaces)."""
    return len(value) <= 320 and _EMAIL_RE.match(value) is not None


def _too_deep(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests objects/arrays deeper than ``max_depth`` (iterative: any depth)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            if level + 1 > max_depth:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return False


def check_object(value: Any, what: str, max_bytes: int, *, multiline: bool = False) -> dict[str, Any] | None:
    """A JSON object of at most ``max_bytes`` and ``MAX_DEPTH`` levels (or None), of
    finite numbers and strings without control characters (but TAB/LF/CR if ``multiline``)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object")
    if _too_deep(value, MAX_DEPTH):
        raise ValueError(f"{what} is nested too deeply (limit {MAX_DEPTH} levels)")
    sanitize.check_json(value, what, multiline=multiline)
    try:
        size = len(json.dumps(value, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be JSON") from None
    if size > max_bytes:
        raise ValueError(f"{what} is too large ({size} bytes, limit {max_bytes})")
    return value


def _ortc(check: Any, value: Any, what: str, sanitizer: Any = None) -> Any:
    """``value`` validated and normalised by mediasoup's rules (``check``), then by
    ``sanitizer`` (by default the one of :data:`_SANITIZERS` for ``check``: the
    broadcaster API's bodies get the same checks as signaling's)."""
    sanitizer = sanitizer or _SANITIZERS.get(check)
    try:
        checked = check(clone(value))
    except MediasoupTypeError as error:
        raise ValueError(f"invalid {what}: {error}") from None
    except (TypeError, KeyError, AttributeError, RecursionError):
        raise ValueError(f"invalid {what}") from None
    return checked if sanitizer is None else sanitizer(checked)


#: What :mod:`control.signaling.sanitize` checks after each of mediasoup's validations.
_SANITIZERS: dict[Any, Any] = {
    ortc.validate_rtp_parameters: sanitize.rtp_parameters,
    ortc.validate_rtp_capabilities: sanitize.rtp_capabilities,
    ortc.validate_sctp_capabilities: sanitize.sctp_capabilities,
    ortc.validate_sctp_stream_parameters: sanitize.sctp_stream_parameters,
}


def _display_name(value: Any) -> Any:
    """The display name rule of :mod:`control.ids` (other types are left to pydantic)."""
    if isinstance(value, str) and not is_valid_display_name(value):
        raise ValueError(f"displayName must be {DISPLAY_NAME_RULE}")
    return value


#: A display name of :data:`control.ids.DISPLAY_NAME_RULE`, for every model that takes
#: one (signaling's and the broadcaster API's).
DisplayName = Annotated[str, BeforeValidator(_display_name), Field(max_length=MAX_DISPLAY_NAME)]


class Request(BaseModel):
    """Base of every request payload: unknown fields are ignored, as the demo does."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Empty(Request):
    pass


class Join(Request):
    displayName: DisplayName = ""
    device: dict[str, Any] | None = None
    rtpCapabilities: dict[str, Any] | None = None
    sctpCapabilities: dict[str, Any] | None = None
    # The seed's participant metadata: kept for the session, never sent to others.
    email: str | None = Field(None, max_length=320)
    aiSettings: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v: Any) -> Any:
        return check_object(v, "device", MAX_DEVICE_BYTES)

    @field_validator("rtpCapabilities", mode="before")
    @classmethod
    def _rtp_capabilities(cls, v: Any) -> Any:
        return (
            None
            if v is None
            else _ortc(ortc.validate_rtp_capabilities, v, "rtpCapabilities", sanitize.rtp_capabilities)
        )

    @field_validator("sctpCapabilities", mode="before")
    @classmethod
    def _sctp_capabilities(cls, v: Any) -> Any:
        return (
            None
            if v is None
            else _ortc(ortc.validate_sctp_capabilities, v, "sctpCapabilities", sanitize.sctp_capabilities)
        )

    @field_validator("displayName", mode="before")
    @classmethod
    def _no_name(cls, v: Any) -> Any:
        return "" if v is None else v

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, v: Any) -> Any:
        if v is None or v == "":
            return None
        if not isinstance(v, str) or not _EMAIL_RE.match(v.strip()):
            raise ValueError("email must be an e-mail address")
        return v.strip()

    @field_validator("aiSettings", "integrations", mode="before")
    @classmethod
    def _metadata(cls, v: Any, info: Any) -> Any:
        # Kept for the room's services, never relayed: multi-line values (a PEM key) pass.
        return check_object(v, info.field_name, MAX_METADATA_BYTES, multiline=True)


class CreateWebRtcTransport(Request):
    forceTcp: bool = False
    producing: bool = False
    consuming: bool = False
    sctpCapabilities: dict[str, Any] | None = None

    @field_validator("forceTcp", "producing", "consuming", mode="before")
    @classmethod
    def _bool(cls, v: Any) -> Any:
        return False if v is None else v

    @field_validator("sctpCapabilities", mode="before")
    @classmethod
    def _sctp(cls, v: Any) -> Any:
        return (
            None
            if v is None
            else _ortc(ortc.validate_sctp_capabilities, v, "sctpCapabilities", sanitize.sctp_capabilities)
        )


class DtlsFingerprint(Request):
    algorithm: Literal["sha-1", "sha-224", "sha-256", "sha-384", "sha-512"]
    value: str = Field(min_length=1, max_length=256, pattern=r"^[0-9A-Fa-f:]+$")


class DtlsParameters(Request):
    role: Literal["auto", "client", "server"] = "auto"
    fingerprints: list[DtlsFingerprint] = Field(min_length=1, max_length=8)


class ConnectWebRtcTransport(Request):
    transportId: Id
    dtlsParameters: DtlsParameters


class TransportId(Request):
    transportId: Id


class Produce(Request):
    transportId: Id
    kind: Literal["audio", "video"]
    rtpParameters: dict[str, Any]
    appData: dict[str, Any] | None = None
    paused: bool = False

    @field_validator("rtpParameters", mode="before")
    @classmethod
    def _rtp(cls, v: Any) -> Any:
        return _ortc(ortc.validate_rtp_parameters, v, "rtpParameters", sanitize.rtp_parameters)

    @field_validator("appData", mode="before")
    @classmethod
    def _app_data(cls, v: Any) -> Any:
        return check_object(v, "appData", MAX_APP_DATA_BYTES)

    @field_validator("paused", mode="before")
    @classmethod
    def _paused(cls, v: Any) -> Any:
        return False if v is None else v


class ProducerId(Request):
    producerId: Id


class ConsumerId(Request):
    consumerId: Id


class SetConsumerPreferredLayers(Request):
    consumerId: Id
    spatialLayer: int = Field(ge=0, le=255)
    temporalLayer: int | None = Field(None, ge=0, le=255)


class SetConsumerPriority(Request):
    consumerId: Id
    priority: int = Field(ge=1, le=255)


class ProduceData(Request):
    transportId: Id
    sctpStreamParameters: dict[str, Any]
    label: str = Field("", max_length=MAX_LABEL)
    protocol: str = Field("", max_length=MAX_LABEL)
    appData: dict[str, Any] | None = None

    @field_validator("sctpStreamParameters", mode="before")
    @classmethod
    def _sctp(cls, v: Any) -> Any:
        return _ortc(ortc.validate_sctp_stream_parameters, v, "sctpStreamParameters", sanitize.sctp_stream_parameters)

    @field_validator("label", "protocol", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return "" if v is None else v

    @field_validator("appData", mode="before")
    @classmethod
    def _app_data(cls, v: Any) -> Any:
        return check_object(v, "appData", MAX_APP_DATA_BYTES)


class ChangeDisplayName(Request):
    displayName: DisplayName


class DataProducerId(Request):
    dataProducerId: Id


class DataConsumerId(Request):
    dataConsumerId: Id


#: ``join`` fields whose strings may span lines (checked by their validators).
_MULTILINE = frozenset({"aiSettings", "integrations"})

#: Every method a peer may call, with its payload model.
REQUESTS: dict[str, type[Request]] = {
    "getRouterRtpCapabilities": Empty,
    "join": Join,
    "createWebRtcTransport": CreateWebRtcTransport,
    "connectWebRtcTransport": ConnectWebRtcTransport,
    "restartIce": TransportId,
    "produce": Produce,
    "closeProducer": ProducerId,
    "pauseProducer": ProducerId,
    "resumeProducer": ProducerId,
    "pauseConsumer": ConsumerId,
    "resumeConsumer": ConsumerId,
    "requestConsumerKeyFrame": ConsumerId,
    "setConsumerPreferredLayers": SetConsumerPreferredLayers,
    "setConsumerPriority": SetConsumerPriority,
    "produceData": ProduceData,
    "changeDisplayName": ChangeDisplayName,
    "getTransportStats": TransportId,
    "getProducerStats": ProducerId,
    "getConsumerStats": ConsumerId,
    "getDataProducerStats": DataProducerId,
    "getDataConsumerStats": DataConsumerId,
}

#: Methods allowed before ``join`` (as in mediasoup-demo: capabilities,
#: transports and stats; everything that produces or consumes needs a join).
BEFORE_JOIN = frozenset(
    {
        "getRouterRtpCapabilities",
        "join",
        "createWebRtcTransport",
        "connectWebRtcTransport",
        "restartIce",
        "getTransportStats",
    }
)


def describe(error: ValidationError) -> str:
    """``field: message; ...`` without the offending values."""
    parts = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(p) for p in item.get("loc", ()))
        msg = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse(method: str, data: dict[str, Any]) -> Request:
    """The validated payload of ``method`` (NotFound 404 unknown, BadRequest 400 invalid)."""
    model = REQUESTS.get(method)
    if model is None:
        shown = method[:64] if _PRINTABLE_RE.fullmatch(method[:64]) else "(not printable)"
        raise NotFound(f'unknown request.method "{shown}"', code="unknown_method")
    try:
        sanitize.check_json({k: v for k, v in data.items() if k not in _MULTILINE} if method == "join" else data)
        return model.model_validate(data)
    except ValidationError as error:
        raise BadRequest(f"invalid {method} request: {describe(error)}") from None
    except ValueError as error:
        raise BadRequest(f"invalid {method} request: {error}") from None

"""Validation of what clients send to the chat: refused input never reaches a store.

Every refusal is a :class:`ChatValidationError` with a stable ``code``, the
offending ``field`` and a message a user can read; ``to_json()`` is the error body
the REST API and the signaling layer send back::

    {"code": "text_too_long", "field": "text",
     "message": "text is longer than 4000 characters (4012)"}

Rules:

- ``type`` is ``text`` (default) or ``file``; ``system`` messages are the server's.
- text: required for ``text`` messages, optional caption for ``file`` ones; at most
  ``max_text_length`` characters (code points, after CRLF/CR -> LF); not blank; no
  control characters except newline and tab; no lone surrogates.
- file: ``bucket`` (an S3 bucket name), ``key`` (one of the room's chat uploads,
  ``chat/<roomId>/<fileId>/<name>``), ``name`` (1-255, no ``/`` or ``\\``), ``size``
  (an integer from 0 to ``CHAT_FILE_MAX_MB``), ``mimeType`` (``type/subtype``).
- sender: ``peerId`` (the peer id rule of :mod:`control.ids`, the one signaling
  applies: 1-128 printable characters, no whitespace or control characters),
  ``displayName`` (not blank, and the one display name rule of :mod:`control.ids`,
  the rule signaling applies: at most 256 characters, one line, no control
  characters, bidirectional overrides or lone surrogates).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from control.errors import BadRequest, NotFound, ParleyError
from control.ids import DISPLAY_NAME_FORBIDDEN_RE, MAX_DISPLAY_NAME_LENGTH
from control.storage.keys import CHAT_PREFIX, InvalidKey, validate_key
from control.store.base import DEFAULT_PAGE, MAX_PAGE
from control.store.ids import InvalidId, validate_peer_id
from control.store.models import FileRef, Sender

__all__ = [
    "DEFAULT_MAX_TEXT_LENGTH",
    "MAX_FILE_SIZE",
    "ChatError",
    "ChatLimits",
    "ChatNotFound",
    "ChatValidationError",
    "ValidatedContent",
    "check_text",
    "parse_limit",
    "validate_content",
    "validate_display_name",
    "validate_email",
    "validate_event",
    "validate_file",
    "validate_sender",
]

DEFAULT_MAX_TEXT_LENGTH = 4000
MAX_FILE_NAME_LENGTH = 255
MAX_OBJECT_KEY_LENGTH = 1024
MAX_MIME_TYPE_LENGTH = 255
MAX_EMAIL_LENGTH = 254
MAX_EVENT_LENGTH = 64
#: 5 TiB: the largest S3 object.
MAX_FILE_SIZE = 5 * 1024**4

# C0 controls but TAB and LF, DEL, C1 controls, lone surrogates.
_CONTROL_MULTILINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# One-line fields: also TAB, LF, and the Unicode line/paragraph separators.
_CONTROL_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MIME_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MIME_RE = re.compile(rf"^{_MIME_TOKEN}/{_MIME_TOKEN}$")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")
_EVENT_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


class ChatError(ParleyError):
    """A chat request the server refuses; ``to_json()`` is the error body.

    A :class:`~control.errors.ParleyError`: REST answers it through the error
    middleware, signaling as ``"<code>: <message>"`` (:mod:`control.chat.signaling`)."""

    status = 400
    default_code = "invalid_request"

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, code=code, field=field)

    def to_json(self) -> dict[str, str]:
        return super().to_json()


class ChatValidationError(ChatError, BadRequest):
    """Invalid client input (HTTP 400)."""

    @classmethod
    def from_invalid_id(cls, exc: InvalidId) -> ChatValidationError:
        return cls(exc.code, exc.message, exc.field)


class ChatNotFound(ChatError, NotFound):
    """What the request names does not exist (HTTP 404): a meeting id."""

    status = 404


@dataclass(frozen=True, slots=True)
class ChatLimits:
    max_text_length: int = DEFAULT_MAX_TEXT_LENGTH
    #: Largest ``file.size`` accepted, bytes (``CHAT_FILE_MAX_MB``).
    max_file_size: int = MAX_FILE_SIZE


@dataclass(frozen=True, slots=True)
class ValidatedContent:
    type: str
    text: str | None
    file: FileRef | None


def check_text(
    value: Any,
    *,
    field: str = "text",
    max_length: int = DEFAULT_MAX_TEXT_LENGTH,
    multiline: bool = True,
    required: bool = True,
) -> str | None:
    """A normalized, validated text, or ``None`` when absent and not required."""
    if value is None:
        if required:
            raise ChatValidationError("missing_field", f"{field} is required", field)
        return None
    if not isinstance(value, str):
        raise ChatValidationError("invalid_type", f"{field} must be a string", field)
    if multiline:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    else:
        value = value.strip()
    if not value.strip():
        if required:
            raise ChatValidationError("empty", f"{field} must not be empty", field)
        return None
    if len(value) > max_length:
        raise ChatValidationError(
            "text_too_long" if field == "text" else "too_long",
            f"{field} is longer than {max_length} characters ({len(value)})",
            field,
        )
    bad = (_CONTROL_MULTILINE if multiline else _CONTROL_LINE).search(value)
    if bad is not None:
        raise ChatValidationError(
            "control_characters",
            f"{field} contains a control character (U+{ord(bad.group()):04X} at {bad.start()})",
            field,
        )
    return value


def validate_display_name(value: Any, field: str = "displayName") -> str:
    """The display name rule of :mod:`control.ids` (the one signaling applies), not blank."""
    name = check_text(value, field=field, max_length=MAX_DISPLAY_NAME_LENGTH, multiline=False)
    assert name is not None
    bad = DISPLAY_NAME_FORBIDDEN_RE.search(name)
    if bad is not None:
        raise ChatValidationError(
            "control_characters",
            f"{field} contains a control or bidirectional character (U+{ord(bad.group()):04X} at {bad.start()})",
            field,
        )
    return name


def validate_email(value: Any, field: str = "email") -> str | None:
    if value is None or value == "":
        return None
    email = check_text(value, field=field, max_length=MAX_EMAIL_LENGTH, multiline=False)
    if email is None or not _EMAIL_RE.fullmatch(email):
        raise ChatValidationError("invalid_email", f"{field} is not an e-mail address", field)
    return email


def validate_sender(sender: Any) -> Sender:
    """A :class:`Sender`, a mapping with ``peerId``/``displayName`` (or snake_case)."""
    peer_id: Any
    display_name: Any
    if isinstance(sender, Sender):
        peer_id, display_name = sender.peer_id, sender.display_name
    elif isinstance(sender, Mapping):
        peer_id = sender.get("peerId", sender.get("peer_id"))
        display_name = sender.get("displayName", sender.get("display_name"))
    else:
        peer_id = getattr(sender, "peer_id", getattr(sender, "id", None))
        display_name = getattr(sender, "display_name", None)
    try:
        peer_id = validate_peer_id(peer_id, "sender.peerId")
    except InvalidId as exc:
        raise ChatValidationError("invalid_peer_id", exc.message, exc.field) from None
    return Sender(peer_id=peer_id, display_name=validate_display_name(display_name, "sender.displayName"))


def validate_file(value: Any, *, room_id: str | None = None, max_size: int = MAX_FILE_SIZE) -> FileRef:
    """A file reference. With ``room_id``, ``key`` must be one of that room's chat
    uploads (``chat/<roomId>/<fileId>/<name>``, ``control/storage/keys.py``): a message
    cannot point at recordings or at another room's files."""
    if not isinstance(value, Mapping):
        raise ChatValidationError(
            "missing_field",
            "file is required for a file message (an object with bucket, key, name, size, mimeType)",
            "file",
        )
    bucket = value.get("bucket")
    if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ChatValidationError("invalid_file", "file.bucket must be an S3 bucket name", "file.bucket")
    key = check_text(value.get("key"), field="file.key", max_length=MAX_OBJECT_KEY_LENGTH, multiline=False)
    name = check_text(value.get("name"), field="file.name", max_length=MAX_FILE_NAME_LENGTH, multiline=False)
    assert key is not None and name is not None
    if room_id is not None:
        prefix = f"{CHAT_PREFIX}/{room_id}/"
        try:
            validate_key(key)
        except InvalidKey:
            raise ChatValidationError("invalid_file", "file.key is not a valid object key", "file.key") from None
        if not key.startswith(prefix) or key.count("/") != 3:
            raise ChatValidationError(
                "invalid_file", f"file.key must be a chat upload of this room ({prefix}<fileId>/<name>)", "file.key"
            )
    if "/" in name or "\\" in name:
        raise ChatValidationError("invalid_file", "file.name must not contain '/' or '\\'", "file.name")
    size = value.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_SIZE:
        raise ChatValidationError("invalid_file", "file.size must be an integer number of bytes >= 0", "file.size")
    if size > max_size:
        raise ChatValidationError("file_too_large", f"file.size is larger than {max_size} bytes", "file.size")
    mime = value.get("mimeType", value.get("mime_type"))
    if not isinstance(mime, str) or len(mime) > MAX_MIME_TYPE_LENGTH or not _MIME_RE.fullmatch(mime):
        raise ChatValidationError("invalid_file", "file.mimeType must be a MIME type (type/subtype)", "file.mimeType")
    return FileRef(bucket=bucket, key=key, name=name, size=size, mime_type=mime.lower())


def validate_content(payload: Any, limits: ChatLimits = ChatLimits(), room_id: str | None = None) -> ValidatedContent:
    """What a participant may send: ``{"type": "text", "text": ...}`` or
    ``{"type": "file", "file": {...}, "text": <optional caption>}``.
    Unknown keys are ignored (never stored). ``room_id``: see :func:`validate_file`."""
    if not isinstance(payload, Mapping):
        raise ChatValidationError("invalid_payload", "a chat message must be a JSON object")
    kind = payload.get("type", "text")
    if kind == "text":
        return ValidatedContent("text", check_text(payload.get("text"), max_length=limits.max_text_length), None)
    if kind == "file":
        file = validate_file(payload.get("file"), room_id=room_id, max_size=limits.max_file_size)
        text = check_text(payload.get("text"), max_length=limits.max_text_length, required=False)
        return ValidatedContent("file", text, file)
    if kind == "system":
        raise ChatValidationError("forbidden_type", "system messages are sent by the server only", "type")
    raise ChatValidationError("invalid_type", "type must be 'text' or 'file'", "type")


def validate_event(value: Any) -> str:
    if not isinstance(value, str) or not _EVENT_RE.fullmatch(value):
        raise ChatValidationError(
            "invalid_event", "event must be a short lowercase name like 'participant.joined'", "event"
        )
    return value


def parse_limit(value: Any, *, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE) -> int:
    """A page size: ``None``/empty -> ``default``; an integer in 1..``maximum``."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ChatValidationError("invalid_limit", f"limit must be an integer from 1 to {maximum}", "limit")
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise ChatValidationError("invalid_limit", f"limit must be an integer from 1 to {maximum}", "limit") from None
    if not 1 <= limit <= maximum or (isinstance(value, float) and value != limit):
        raise ChatValidationError("invalid_limit", f"limit must be an integer from 1 to {maximum}", "limit")
    return limit

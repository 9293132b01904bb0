"""The records the stores keep: chat messages and meetings.

Pydantic models with snake_case attributes whose JSON (``to_json()``) is camelCase,
the shape the REST API and the signaling layer send to clients::

    {"id": "01J...", "roomId": "abc", "meetingId": "01J...", "type": "text",
     "sender": {"peerId": "p1", "displayName": "Ada"}, "text": "hi",
     "createdAt": "2025-01-01T10:00:00.123Z"}

Times are UTC with millisecond precision (what BSON dates hold). Models are built by
the stores and the chat service after validation; they do not validate client input
themselves (see :mod:`control.chat.validation`).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, PlainSerializer
from pydantic.alias_generators import to_camel

from control.errors import BadRequest
from control.store.ids import ID_RE, datetime_to_ms, ms_to_datetime

__all__ = [
    "MESSAGE_TYPES",
    "ChatMessage",
    "Cursor",
    "FileRef",
    "InvalidCursor",
    "Meeting",
    "MessageType",
    "Participant",
    "RecordingRef",
    "Sender",
    "iso_ms",
]


def iso_ms(value: datetime) -> str:
    """``2025-01-01T10:00:00.123Z``: UTC, milliseconds, the JavaScript ``Date`` form."""
    return ms_to_datetime(datetime_to_ms(value)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


#: A datetime that serializes to JSON as :func:`iso_ms`.
Time = Annotated[datetime, PlainSerializer(iso_ms, return_type=str, when_used="json")]

MessageType = Literal["text", "system", "file"]
MESSAGE_TYPES: tuple[str, ...] = ("text", "system", "file")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")

    def to_json(self) -> dict[str, Any]:
        """camelCase JSON-ready dict; unset optional fields are left out."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class Sender(_Model):
    peer_id: str
    display_name: str


class FileRef(_Model):
    """An object in the object store (S3/MinIO bucket, or the local directory)."""

    bucket: str
    key: str
    name: str
    size: int
    mime_type: str


class ChatMessage(_Model):
    id: str
    room_id: str
    meeting_id: str | None = None
    type: MessageType
    #: ``None`` for system messages.
    sender: Sender | None = None
    text: str | None = None
    #: For ``type == "file"``.
    file: FileRef | None = None
    #: For ``type == "system"``: what happened (``participant.joined``...) and its details.
    event: str | None = None
    data: dict[str, Any] | None = None
    created_at: Time

    @property
    def cursor(self) -> Cursor:
        """The position of this message in its room's history."""
        return Cursor(datetime_to_ms(self.created_at), self.id)


class Participant(_Model):
    """One stay of a peer in a meeting (a peer that rejoins gets another entry)."""

    peer_id: str
    display_name: str
    email: str | None = None
    joined_at: Time
    left_at: Time | None = None


class RecordingRef(_Model):
    """A recording of a meeting: the object reference and what the recorder adds."""

    bucket: str
    key: str
    name: str
    size: int
    mime_type: str
    recording_id: str | None = None
    started_at: Time | None = None
    ended_at: Time | None = None
    #: Anything else the recorder wants to keep (JSON values).
    metadata: dict[str, Any] | None = None

    @classmethod
    def from_object(cls, obj: Any, **extra: Any) -> RecordingRef:
        """From the storage layer's ``ObjectRef`` (``bucket``, ``key``, ``size``,
        ``content_type``, and ``backend``/``etag``/``sha256``/``duration`` kept in
        ``metadata``); ``extra`` sets ``recording_id``, ``started_at``... ."""
        meta = {
            k: getattr(obj, k) for k in ("backend", "etag", "sha256", "duration") if getattr(obj, k, None) is not None
        }
        if extra.get("metadata"):
            meta.update(extra.pop("metadata"))
        return cls(
            bucket=obj.bucket,
            key=obj.key,
            name=extra.pop("name", None) or obj.key.rsplit("/", 1)[-1],
            size=obj.size,
            mime_type=extra.pop("mime_type", None) or obj.content_type,
            metadata=meta or None,
            **extra,
        )


class Meeting(_Model):
    """A room's life from its first join to its last leave."""

    meeting_id: str
    room_id: str
    started_at: Time
    ended_at: Time | None = None
    participants: list[Participant] = []
    recordings: list[RecordingRef] = []

    @property
    def cursor(self) -> Cursor:
        return Cursor(datetime_to_ms(self.started_at), self.meeting_id)

    @property
    def active_participants(self) -> list[Participant]:
        return [p for p in self.participants if p.left_at is None]


class InvalidCursor(BadRequest, ValueError):
    """A ``before`` cursor that is not one the server handed out (400 ``invalid_cursor``)."""

    default_code = "invalid_cursor"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="before")


_CURSOR_RE = re.compile(r"^1\.(\d{1,15})\.([0-9A-Z]{26})$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in a newest-first list: ``(time in ms, id)``; ties break on the id.

    ``str(cursor)`` / :meth:`encode` give the opaque token clients pass back as
    ``before``; :meth:`decode` validates one.
    """

    ms: int
    id: str

    def encode(self) -> str:
        raw = f"1.{self.ms}.{self.id}".encode("ascii")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    __str__ = encode

    @property
    def time(self) -> datetime:
        return ms_to_datetime(self.ms)

    @classmethod
    def decode(cls, token: str) -> Cursor:
        if not isinstance(token, str) or not _B64URL_RE.fullmatch(token):
            raise InvalidCursor("invalid cursor: use a nextCursor value returned by the server")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidCursor("invalid cursor: use a nextCursor value returned by the server") from None
        m = _CURSOR_RE.fullmatch(raw)
        if m is None or not ID_RE.fullmatch(m.group(2)):
            raise InvalidCursor("invalid cursor: use a nextCursor value returned by the server")
        return cls(int(m.group(1)), m.group(2))

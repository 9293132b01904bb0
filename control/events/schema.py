"""Event wire format: JSON envelopes on the topic exchange ``meetings``.

Every message body is one JSON object::

    {"schemaVersion": 1,
     "eventId": "6f1c...-uuid4",            # unique: consumers deduplicate on it
     "type": "recording.completed",         # also the routing key
     "occurredAt": "2026-05-01T10:00:00.123456Z",
     "source": "parley",
     "data": {...}}                         # camelCase, one model per type below

AMQP properties: ``delivery_mode=2`` (persistent), ``content_type=application/json``,
``message_id`` = eventId, ``type`` = type, ``timestamp``, ``app_id=parley``,
header ``schema-version``. Delivery is at least once: a consumer may see an
event twice (after a broker outage or a restart) and must use ``eventId`` to
deduplicate. Fields are added without a version bump; a change that removes
or re-types a field bumps :data:`SCHEMA_VERSION`.

``recording.completed`` carries, per participant, ``aiSettings`` and
``integrations``: the credentials the AI service needs. They are never logged;
admin views and the example consumer mask them.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from control.logging import MASK, redact

__all__ = [
    "DEFAULT_AI_QUEUE",
    "EVENT_MODELS",
    "EXCHANGE",
    "MEETING_ENDED",
    "MEETING_STARTED",
    "PARTICIPANT_JOINED",
    "PARTICIPANT_LEFT",
    "RECORDING_COMPLETED",
    "SCHEMA_VERSION",
    "EventType",
    "MeetingEnded",
    "MeetingStarted",
    "Participant",
    "ParticipantJoined",
    "ParticipantLeft",
    "RecordingCompleted",
    "RecordingObject",
    "build_envelope",
    "redact_event",
]

SCHEMA_VERSION = 1
#: The topic exchange (durable) every event is published to.
EXCHANGE = "meetings"
#: The durable queue the AI service consumes, bound to ``recording.completed``.
DEFAULT_AI_QUEUE = "ai.recording.completed"

#: The event types this service publishes (the routing keys of :data:`EXCHANGE`).
EventType = Literal["recording.completed", "meeting.started", "meeting.ended", "participant.joined", "participant.left"]
RECORDING_COMPLETED: Final = "recording.completed"
MEETING_STARTED: Final = "meeting.started"
MEETING_ENDED: Final = "meeting.ended"
PARTICIPANT_JOINED: Final = "participant.joined"
PARTICIPANT_LEFT: Final = "participant.left"


class _Data(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", ser_json_timedelta="float"
    )


class Participant(_Data):
    peer_id: str
    display_name: str
    email: str | None = None
    #: The participant's AI preferences (summary language, features...), free-form.
    ai_settings: dict[str, Any] = Field(default_factory=dict)
    #: Third-party credentials/targets the AI service uses for this participant
    #: (e.g. ``{"notion": {"token": ..., "pageId": ...}}``). Secret: never logged.
    integrations: dict[str, Any] = Field(default_factory=dict)


class RecordingObject(_Data):
    """Where the recording is: :meth:`control.storage.ObjectRef.to_event`."""

    storage: str = "s3"  # "s3" or "local"
    bucket: str
    key: str
    size: int = Field(ge=0)
    content_type: str
    duration: float | None = Field(None, ge=0, description="seconds")
    etag: str | None = None
    sha256: str | None = None


class RecordingTrack(_Data):
    """One participant's audio (Ogg/Opus), ``offset_ms`` from the composite's start."""

    peer_id: str
    display_name: str | None = None
    kind: str = "audio"
    object: RecordingObject
    offset_ms: int
    duration_ms: int = Field(ge=0)


class RecordingCompleted(_Data):
    meeting_id: str
    room_id: str
    object: RecordingObject
    started_at: AwareDatetime
    ended_at: AwareDatetime
    participants: list[Participant] = Field(default_factory=list)
    recording_id: str | None = None
    #: One audio file per participant, beside the composite.
    tracks: list[RecordingTrack] = Field(default_factory=list)
    #: The timeline JSON's object (joins, leaves, mutes, shares, active speakers, in ms).
    timeline: RecordingObject | None = None


class MeetingStarted(_Data):
    meeting_id: str
    room_id: str
    started_at: AwareDatetime
    title: str | None = None


class MeetingEnded(_Data):
    meeting_id: str
    room_id: str
    started_at: AwareDatetime
    ended_at: AwareDatetime
    participant_count: int | None = Field(None, ge=0)


class ParticipantJoined(_Data):
    meeting_id: str
    room_id: str
    peer_id: str
    display_name: str
    email: str | None = None
    joined_at: AwareDatetime


class ParticipantLeft(_Data):
    meeting_id: str
    room_id: str
    peer_id: str
    display_name: str
    left_at: AwareDatetime
    reason: str | None = None


EVENT_MODELS: dict[str, type[_Data]] = {
    RECORDING_COMPLETED: RecordingCompleted,
    MEETING_STARTED: MeetingStarted,
    MEETING_ENDED: MeetingEnded,
    PARTICIPANT_JOINED: ParticipantJoined,
    PARTICIPANT_LEFT: ParticipantLeft,
}


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def build_envelope(
    event_type: str,
    data: BaseModel | dict[str, Any],
    *,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """Validate ``data`` against the type's model and wrap it (JSON-ready dict).

    Raises ``ValueError`` (pydantic's ``ValidationError``) for an unknown type or
    invalid data: nothing malformed reaches the outbox.
    """
    model = EVENT_MODELS.get(event_type)
    if model is None:
        raise ValueError(f"unknown event type {event_type!r}; one of {', '.join(EVENT_MODELS)}")
    if isinstance(data, BaseModel) and not isinstance(data, model):
        data = data.model_dump(by_alias=True)
    parsed = data if isinstance(data, model) else model.model_validate(data)
    if event_id is not None:
        event_id = str(uuid.UUID(str(event_id)))  # canonical form; ValueError if not a UUID
    return {
        "schemaVersion": SCHEMA_VERSION,
        "eventId": event_id or str(uuid.uuid4()),
        "type": event_type,
        "occurredAt": _iso(occurred_at or datetime.now(UTC)),
        "source": "parley",
        "data": parsed.model_dump(mode="json", by_alias=True),
    }


def _mask_leaves(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask_leaves(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_leaves(v) for v in value]
    return MASK if value not in (None, "") else value


def redact_event(envelope: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to show: every value under ``integrations`` masked (keys kept,
    so one sees *which* integrations are set), and secret-named fields anywhere."""
    out = copy.deepcopy(envelope)
    data = out.get("data")
    if isinstance(data, dict):
        for participant in data.get("participants") or []:
            if isinstance(participant, dict) and "integrations" in participant:
                participant["integrations"] = _mask_leaves(participant["integrations"])
    return redact(out)

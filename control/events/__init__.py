"""Meeting events: a durable outbox relayed to RabbitMQ (topic exchange ``meetings``).

    bus = app[EVENTS]
    await bus.publish("participant.joined", {"meetingId": ..., "roomId": ..., "peerId": ...,
                                             "displayName": ..., "joinedAt": datetime})
    await bus.publish(RECORDING_COMPLETED, RecordingCompleted(...))   # or a dict

``publish`` returns once the event is stored durably (the outbox); delivery is
asynchronous, confirmed and retried (at least once; ``eventId`` deduplicates).
Recording uploads queued with ``kind="recording.completed"`` publish their event
themselves once the object is stored (see :mod:`control.storage`).

Wire format: :mod:`control.events.schema`. Operators: ``python -m
control.events.consume`` prints the events of the AI queue.

:func:`setup` wires it into the app (``app[EVENTS]``, ``GET /api/events/outbox``).
"""

from __future__ import annotations

from aiohttp import web

from control.config import Settings
from control.events import routes as _routes_module
from control.events.bus import EventBus
from control.events.outbox import MongoOutbox, Outbox, OutboxEntry, SQLiteOutbox, open_outbox
from control.events.publisher import BrokerAuthError, PublishFailed, RabbitPublisher
from control.events.schema import (
    DEFAULT_AI_QUEUE,
    EVENT_MODELS,
    EXCHANGE,
    MEETING_ENDED,
    MEETING_STARTED,
    PARTICIPANT_JOINED,
    PARTICIPANT_LEFT,
    RECORDING_COMPLETED,
    SCHEMA_VERSION,
    MeetingEnded,
    MeetingStarted,
    Participant,
    ParticipantJoined,
    ParticipantLeft,
    RecordingCompleted,
    RecordingObject,
    build_envelope,
    redact_event,
)
from control.events.service import EVENTS_FLUSH_TIMEOUT, events_ctx

__all__ = [
    "DEFAULT_AI_QUEUE",
    "EVENTS_FLUSH_TIMEOUT",
    "EVENT_MODELS",
    "EXCHANGE",
    "MEETING_ENDED",
    "MEETING_STARTED",
    "PARTICIPANT_JOINED",
    "PARTICIPANT_LEFT",
    "RECORDING_COMPLETED",
    "SCHEMA_VERSION",
    "BrokerAuthError",
    "EventBus",
    "MeetingEnded",
    "MeetingStarted",
    "MongoOutbox",
    "Outbox",
    "OutboxEntry",
    "Participant",
    "ParticipantJoined",
    "ParticipantLeft",
    "PublishFailed",
    "RabbitPublisher",
    "RecordingCompleted",
    "RecordingObject",
    "SQLiteOutbox",
    "build_envelope",
    "events_ctx",
    "open_outbox",
    "redact_event",
    "setup",
]


def setup(app: web.Application, *, settings: web.AppKey[Settings]) -> None:
    """Run the event bus (``app[EVENTS]``) and serve ``GET /api/events/outbox`` (``roomList``)."""
    app.cleanup_ctx.append(events_ctx(settings=settings))
    app.add_routes(_routes_module.routes)

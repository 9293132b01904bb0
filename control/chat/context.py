"""Wiring into the aiohttp app: :func:`chat_ctx`, a ``cleanup_ctx`` entry.

Start-up: create the store the settings choose (MongoDB if ``MONGODB_URI``, else the
SQLite file), start it (connect, check it accepts our credentials, create indexes --
a clear :class:`~control.store.StoreUnavailable` otherwise, which stops start-up; a
MongoDB that does not answer yet does not: media needs no database, chat and
meeting calls answer 503 ``store_unavailable`` until it is back, meeting changes are
journaled meanwhile), end meetings a crashed run left open, and publish the services
under ``DATABASE``, ``CHAT`` and ``MEETINGS``. When the event bus is given, meeting
lifecycle changes are published as ``meeting.started``, ``participant.joined``,
``participant.left`` and ``meeting.ended`` events. Shutdown: close the store.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from loguru import logger

from control.chat.meetings import MeetingEvent, MeetingEventType
from control.chat.service import ChatService
from control.config import Settings
from control.keys import CHAT, DATABASE, MEETINGS
from control.store import create_store
from control.store.ids import datetime_to_ms

if TYPE_CHECKING:
    from control.events.bus import EventBus

__all__ = ["chat_ctx", "meeting_event_data", "meeting_publisher"]

_EVENT_NS = uuid.UUID("5d0c2b62-36b5-4a43-9a53-5b3c1f0e7c11")
_PUBLISHED: frozenset[MeetingEventType] = frozenset(
    {"meeting.started", "meeting.ended", "participant.joined", "participant.left"}
)


def meeting_event_data(event: MeetingEvent) -> tuple[str, dict[str, Any]] | None:
    """``(event_id, data)`` for the event bus (``control/events/schema.py``), or
    ``None`` for changes that are not published. The id is derived from the change,
    so publishing the same change twice yields one event."""
    m = event.meeting
    base: dict[str, Any] = {"meetingId": m.meeting_id, "roomId": m.room_id}
    if event.type == "meeting.started":
        data = {**base, "startedAt": m.started_at}
        when = m.started_at
    elif event.type == "meeting.ended":
        if m.ended_at is None:
            return None
        data = {
            **base,
            "startedAt": m.started_at,
            "endedAt": m.ended_at,
            "participantCount": len({p.peer_id for p in m.participants}),
        }
        when = m.ended_at
    elif event.type in ("participant.joined", "participant.left"):
        entry = next((p for p in reversed(m.participants) if p.peer_id == event.peer_id), None)
        if entry is None:
            return None
        data = {**base, "peerId": entry.peer_id, "displayName": entry.display_name}
        if event.type == "participant.joined":
            data.update(email=entry.email, joinedAt=entry.joined_at)
            when = entry.joined_at
        else:
            if entry.left_at is None:
                return None
            data["leftAt"] = entry.left_at
            when = entry.left_at
    else:
        return None
    key = f"{event.type}:{m.meeting_id}:{event.peer_id or ''}:{datetime_to_ms(when)}"
    return str(uuid.uuid5(_EVENT_NS, key)), data


def chat_ctx(
    *, settings: web.AppKey[Settings], events: web.AppKey[EventBus] | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup_ctx: the database (``DATABASE``), the chat (``CHAT``) and meetings
    (``MEETINGS``); meeting changes published on ``events`` when given."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[settings]
        database = create_store(config)
        await database.start(require_reachable=False)
        chat: ChatService | None = None
        try:
            chat = ChatService.from_settings(database, config)
            await chat.start()
            app[DATABASE] = database
            app[CHAT] = chat
            app[MEETINGS] = chat.meetings
            if events is not None:
                chat.meetings.subscribe(meeting_publisher(app[events]))
            logger.info("chat and meetings: {}", database.describe())
            yield
        finally:
            if chat is not None:
                await chat.close()
            await database.close()
            logger.info("chat store closed")

    return ctx


def meeting_publisher(bus: EventBus) -> Callable[[MeetingEvent], Awaitable[None]]:
    """A meetings subscriber that publishes the lifecycle changes on ``bus``."""

    async def publish(event: MeetingEvent) -> None:
        if event.type not in _PUBLISHED:
            return
        built = meeting_event_data(event)
        if built is not None:
            event_id, data = built
            await bus.publish(event.type, data, event_id=event_id)

    return publish

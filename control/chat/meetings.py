"""Meetings: a room's life from its first join to its last leave, written as it happens.

The signaling layer reports joins and leaves (through :class:`ChatService`, which
also posts the matching system messages); the recording layer adds recordings.
Each call is one acknowledged write, so a crash loses at most the write in flight.
Calls for one room are serialized (a per-room lock), so two peers joining an empty
room at once open one meeting, not two.

On start-up :meth:`MeetingService.recover` ends the meetings a crashed process left
open (``endedAt`` = recovery time, and ``leftAt`` of whoever was still in): rooms
live in this process's memory, so after a restart nobody is in them.

Subscribers (``subscribe(callback)``) receive a :class:`MeetingEvent` after each
acknowledged change: ``meeting.started``, ``participant.joined``,
``participant.left``, ``meeting.ended``, ``recording.added`` -- for the event bus.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from loguru import logger

from control.chat.validation import (
    ChatError,
    ChatNotFound,
    ChatValidationError,
    parse_limit,
    validate_display_name,
    validate_email,
)
from control.errors import Unavailable
from control.store.base import Store
from control.store.errors import StoreError
from control.store.ids import InvalidId, ms_to_datetime, new_id, validate_id, validate_peer_id, validate_room_id
from control.store.models import Cursor, InvalidCursor, Meeting, Participant, RecordingRef

#: What changed in a meeting (``MeetingEvent.type``); all but ``recording.added`` are
#: published on the event bus (:mod:`control.chat.context`).
MeetingEventType = Literal[
    "meeting.started", "participant.joined", "participant.left", "meeting.ended", "recording.added"
]

__all__ = [
    "ChatUnavailable",
    "MeetingEvent",
    "MeetingEventType",
    "MeetingPage",
    "MeetingService",
    "now",
    "room_id_or_error",
]


def now() -> datetime:
    """The current UTC time, truncated to milliseconds (what the stores keep)."""
    return ms_to_datetime(time.time_ns() // 1_000_000)


class ChatUnavailable(ChatError, Unavailable):
    """The store did not acknowledge the write/read (HTTP 503); the client may retry."""

    status = 503

    def __init__(self, message: str = "chat storage is unavailable; try again") -> None:
        super().__init__("unavailable", message)


def room_id_or_error(room_id: Any) -> str:
    try:
        return validate_room_id(room_id)
    except InvalidId as exc:
        raise ChatValidationError.from_invalid_id(exc) from None


def _peer_id_or_error(peer_id: Any) -> str:
    try:
        return validate_peer_id(peer_id)
    except InvalidId as exc:
        raise ChatValidationError.from_invalid_id(exc) from None


def decode_cursor(before: str | None) -> Cursor | None:
    if before is None or before == "":
        return None
    try:
        return Cursor.decode(before)
    except InvalidCursor as exc:
        raise ChatValidationError("invalid_cursor", str(exc), "before") from None


def as_recording_ref(recording: RecordingRef | dict[str, Any] | Any) -> RecordingRef:
    if isinstance(recording, RecordingRef):
        return recording
    try:
        if isinstance(recording, dict):
            return RecordingRef.model_validate(recording)
        return RecordingRef.from_object(recording)
    except (ValueError, AttributeError, TypeError) as exc:
        raise ChatValidationError("invalid_recording", f"not a recording reference: {exc}", "recording") from None


@dataclass(frozen=True, slots=True)
class MeetingEvent:
    type: MeetingEventType
    meeting: Meeting
    peer_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "meeting": self.meeting.to_json()}
        if self.peer_id is not None:
            out["peerId"] = self.peer_id
        return out


@dataclass(frozen=True, slots=True)
class MeetingPage:
    meetings: list[Meeting]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"meetings": [m.to_json() for m in self.meetings], "nextCursor": self.next_cursor}


MeetingCallback = Callable[[MeetingEvent], "Awaitable[None] | None"]


async def _notify(callbacks: list[Callable[..., Any]], *args: Any) -> None:
    for callback in list(callbacks):
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 - a subscriber must not break the write path
            logger.opt(exception=True).error("chat/meeting subscriber {!r} failed", callback)


class MeetingService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._current: dict[str, str] = {}
        self._subscribers: list[MeetingCallback] = []

    # ---- subscribers

    def subscribe(self, callback: MeetingCallback) -> Callable[[], None]:
        """Call ``callback(event)`` after each acknowledged change; returns an unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def _emit(self, type_: MeetingEventType, meeting: Meeting, peer_id: str | None = None) -> None:
        if self._subscribers:
            await _notify(self._subscribers, MeetingEvent(type_, meeting, peer_id))

    def _lock(self, room_id: str) -> asyncio.Lock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[room_id] = lock
        return lock

    # ---- lifecycle

    def current_id(self, room_id: str) -> str | None:
        """The id of the room's open meeting, as this process knows it (no I/O)."""
        return self._current.get(room_id)

    async def recover(self) -> list[Meeting]:
        """End the meetings left open by a previous run (see the module docstring)."""
        ended = []
        try:
            for meeting in await self.store.meetings.open_meetings():
                if meeting.room_id in self._current:
                    continue
                done = await self.store.meetings.end_meeting(meeting.meeting_id, now())
                if done is not None:
                    ended.append(done)
                    logger.bind(room=meeting.room_id).warning(
                        "meeting {} was left open by a previous run; ended it", meeting.meeting_id
                    )
                    await self._emit("meeting.ended", done)
        except StoreError as exc:
            raise ChatUnavailable(str(exc)) from exc
        return ended

    async def ensure_open(self, room_id: str) -> Meeting:
        """The room's open meeting, opened now if its first join is still on its way
        (joins are recorded asynchronously; a recording started right after the
        first join needs the meeting id already)."""
        room_id = room_id_or_error(room_id)
        async with self._lock(room_id):
            try:
                return await self._open(room_id)
            except StoreError as exc:
                raise ChatUnavailable(str(exc)) from exc

    async def _open(self, room_id: str) -> Meeting:
        """The room's open meeting, opened if there is none (``meeting.started``);
        under the room's lock."""
        started = False
        meeting = await self.store.meetings.current_meeting(room_id)
        if meeting is None:
            meeting_id = new_id()
            meeting = await self.store.meetings.open_meeting(room_id, meeting_id=meeting_id, started_at=now())
            started = meeting.meeting_id == meeting_id
        self._current[room_id] = meeting.meeting_id
        if started:
            await self._emit("meeting.started", meeting)
        return meeting

    async def join(self, room_id: str, peer_id: str, display_name: str, email: str | None = None) -> Meeting:
        """Record that ``peer_id`` joined the room; opens the meeting on the first join.
        Joining again while still in is a no-op."""
        room_id = room_id_or_error(room_id)
        peer_id = _peer_id_or_error(peer_id)
        display_name = validate_display_name(display_name)
        email = validate_email(email)
        async with self._lock(room_id):
            try:
                meeting = await self._open(room_id)
                if any(p.peer_id == peer_id for p in meeting.active_participants):
                    return meeting
                updated = await self.store.meetings.add_participant(
                    meeting.meeting_id,
                    Participant(peer_id=peer_id, display_name=display_name, email=email, joined_at=now()),
                )
            except StoreError as exc:
                raise ChatUnavailable(str(exc)) from exc
            if updated is None:  # deleted under us: should not happen
                raise ChatUnavailable(f"meeting {meeting.meeting_id} disappeared")
            await self._emit("participant.joined", updated, peer_id)
            return updated

    async def leave(self, room_id: str, peer_id: str) -> tuple[Meeting | None, bool]:
        """Record that ``peer_id`` left; ends the meeting when nobody is left.
        Returns ``(meeting, ended)``; ``(None, False)`` if the room has no meeting."""
        room_id = room_id_or_error(room_id)
        peer_id = _peer_id_or_error(peer_id)
        async with self._lock(room_id):
            try:
                meeting = await self.store.meetings.current_meeting(room_id)
                if meeting is None:
                    self._current.pop(room_id, None)
                    return None, False
                if any(p.peer_id == peer_id for p in meeting.active_participants):
                    meeting = await self.store.meetings.participant_left(meeting.meeting_id, peer_id, now()) or meeting
                    await self._emit("participant.left", meeting, peer_id)
                if meeting.active_participants:
                    return meeting, False
                ended = await self.store.meetings.end_meeting(meeting.meeting_id, now()) or meeting
            except StoreError as exc:
                raise ChatUnavailable(str(exc)) from exc
            self._current.pop(room_id, None)
            await self._emit("meeting.ended", ended)
            return ended, True

    async def end(self, room_id: str) -> Meeting | None:
        """End the room's meeting now (the room was closed); everyone still in leaves."""
        room_id = room_id_or_error(room_id)
        async with self._lock(room_id):
            try:
                meeting = await self.store.meetings.current_meeting(room_id)
                self._current.pop(room_id, None)
                if meeting is None:
                    return None
                ended = await self.store.meetings.end_meeting(meeting.meeting_id, now())
            except StoreError as exc:
                raise ChatUnavailable(str(exc)) from exc
            if ended is not None:
                await self._emit("meeting.ended", ended)
            return ended

    async def add_recording(self, meeting_id: str, recording: RecordingRef | dict[str, Any] | Any) -> Meeting:
        """Attach a recording's object reference to a meeting (idempotent per bucket+key).
        ``recording``: a :class:`RecordingRef`, its JSON (camelCase) or a storage
        ``ObjectRef`` (see :meth:`RecordingRef.from_object`)."""
        try:
            meeting_id = validate_id(meeting_id, "meetingId")
        except InvalidId as exc:
            raise ChatValidationError.from_invalid_id(exc) from None
        recording = as_recording_ref(recording)
        try:
            meeting = await self.store.meetings.add_recording(meeting_id, recording)
        except StoreError as exc:
            raise ChatUnavailable(str(exc)) from exc
        if meeting is None:
            raise ChatNotFound("not_found", f"no meeting {meeting_id}", "meetingId")
        await self._emit("recording.added", meeting)
        return meeting

    # ---- reads

    async def current(self, room_id: str) -> Meeting | None:
        room_id = room_id_or_error(room_id)
        try:
            return await self.store.meetings.current_meeting(room_id)
        except StoreError as exc:
            raise ChatUnavailable(str(exc)) from exc

    async def get(self, meeting_id: str) -> Meeting | None:
        try:
            meeting_id = validate_id(meeting_id, "meetingId")
        except InvalidId as exc:
            raise ChatValidationError.from_invalid_id(exc) from None
        try:
            return await self.store.meetings.get_meeting(meeting_id)
        except StoreError as exc:
            raise ChatUnavailable(str(exc)) from exc

    async def list(self, room_id: str, limit: Any = None, before: str | None = None) -> MeetingPage:
        """The room's meetings, newest first, ``limit`` (default 50, max 200) per page."""
        room_id = room_id_or_error(room_id)
        n = parse_limit(limit)
        cursor = decode_cursor(before)
        try:
            meetings = await self.store.meetings.list_meetings(room_id, limit=n + 1, before=cursor)
        except StoreError as exc:
            raise ChatUnavailable(str(exc)) from exc
        more = len(meetings) > n
        meetings = meetings[:n]
        return MeetingPage(meetings, meetings[-1].cursor.encode() if more else None)

"""Meetings: a room's life from its first join to its last leave, written as it happens.

The signaling layer reports joins and leaves (through :class:`ChatService`, which
also posts the matching system messages); the recording layer adds recordings.
Each call is one acknowledged write, so a crash loses at most the write in flight.
Calls for one room are serialized (a per-room lock), so two peers joining an empty
room at once open one meeting, not two.

When the database is away (MongoDB down at start, or lost mid-meeting) and the
service has a :class:`~control.chat.journal.MeetingJournal`, a change is not lost
and not an error: it is written to the journal (on disk) and applied, in order,
when the database is back; meanwhile the service decides from its own view of
the open meetings (who is in, when the last one leaves). Once something is in the
journal, every later change goes there too until it is empty, so the database
sees them in the order they happened. Without a journal (the embedded SQLite
store, which is never "away") a failed write is :class:`ChatUnavailable`.

On start-up :meth:`MeetingService.start` ends the meetings a crashed process left
open (``endedAt`` = recovery time, and ``leftAt`` of whoever was still in): rooms
live in this process's memory, so after a restart nobody is in them. If the
database is away then, that waits until it is back (after what the journal kept
from the previous run is applied, so those changes keep their times).

Subscribers (``subscribe(callback)``) receive a :class:`MeetingEvent` after each
change the database acknowledged (a journaled one when it is applied):
``meeting.started``, ``participant.joined``, ``participant.left``,
``meeting.ended``, ``recording.added`` -- for the event bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from loguru import logger

from control.chat.journal import MeetingChange, MeetingJournal
from control.chat.validation import (
    ChatError,
    ChatNotFound,
    ChatValidationError,
    parse_limit,
    validate_display_name,
    validate_email,
)
from control.errors import Unavailable
from control.retry import backoff_delays
from control.store.base import Store
from control.store.errors import StoreError, StoreUnavailable
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
    """The store did not acknowledge the write/read (HTTP 503 ``store_unavailable``);
    the client may retry. The message is the client's; the store's own (which names
    the database server) goes to the log."""

    status = 503

    def __init__(self, message: str = "chat storage is unavailable; try again") -> None:
        super().__init__("store_unavailable", message)


def unavailable(error: StoreError, what: str, room_id: str | None = None) -> ChatUnavailable:
    """The client's error for a store failure; the failure itself is logged."""
    logger.bind(room=room_id).warning("{} failed: {}", what, error)
    return ChatUnavailable(f"storage is unavailable ({what}); try again")


#: The event a meeting change gives once the database has it.
_EVENTS: dict[str, MeetingEventType] = {
    "open": "meeting.started",
    "join": "participant.joined",
    "leave": "participant.left",
    "end": "meeting.ended",
    "recording": "recording.added",
}
#: Backoff of the journal's retries while the database is away (seconds).
_RETRY_INITIAL = 0.25
_RETRY_MAX = 5.0


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
    def __init__(self, store: Store, journal: MeetingJournal | None = None) -> None:
        self.store = store
        self.journal = journal
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        #: The open meeting of each room as this service knows it (room id -> meeting).
        self._open: dict[str, Meeting] = {}
        self._subscribers: list[MeetingCallback] = []
        #: Changes in the journal not applied yet (counted before they are written,
        #: so the switch back to direct writes never overtakes one).
        self._pending = 0
        #: Whether the meetings left open by an earlier run were ended.
        self._recovered = True
        self._wake = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        #: Journaled changes the database refused for good (logged as errors).
        self.dropped = 0

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
        meeting = self._open.get(room_id)
        return meeting.meeting_id if meeting is not None else None

    @property
    def pending(self) -> int:
        """Changes waiting in the journal for the database."""
        return self._pending

    async def start(self) -> None:
        """Open the journal (if any); end the meetings an earlier run left open, now
        if the database answers and the journal is empty, else once the journal is
        applied (in the background)."""
        if self.journal is None:
            await self.recover()
            return
        await self.journal.open()
        self._pending = await self.journal.count()
        if self._pending:
            logger.warning(
                "{} meeting change(s) from an earlier run wait in {}; applying them",
                self._pending,
                self.journal.describe(),
            )
            self._recovered = False
        else:
            try:
                await self.recover()
            except ChatUnavailable:
                self._recovered = False
                logger.warning("meetings left open by an earlier run are ended once the database is back")
        if not self._recovered or self._pending:
            self._start_drainer()

    async def close(self) -> None:
        """Stop applying the journal (what is left stays on disk for the next start)."""
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.cancel()
            with contextlib.suppress(BaseException):
                await drainer
        if self.journal is not None:
            await self.journal.close()

    async def recover(self) -> list[Meeting]:
        """End the meetings left open by a previous run (see the module docstring)."""
        try:
            return await self._recover()
        except StoreError as exc:
            raise unavailable(exc, "ending the meetings of an earlier run") from exc

    async def _recover(self) -> list[Meeting]:
        ended = []
        mine = {m.meeting_id for m in self._open.values()}
        for meeting in await self.store.meetings.open_meetings():
            if meeting.room_id in self._open or meeting.meeting_id in mine:
                continue
            done = await self.store.meetings.end_meeting(meeting.meeting_id, now())
            if done is not None:
                ended.append(done)
                logger.bind(room=meeting.room_id).warning(
                    "meeting {} was left open by a previous run; ended it", meeting.meeting_id
                )
                await self._emit("meeting.ended", done)
        return ended

    # ---- writing: now, or through the journal

    @property
    def _direct(self) -> bool:
        """Write to the database now (nothing waits in the journal before it)."""
        return self.journal is None or (self._pending == 0 and self._recovered)

    def _away(self, error: StoreUnavailable, room_id: str | None) -> None:
        """The database did not answer a direct write or read: journal from now on
        (or fail, without a journal)."""
        if self.journal is None:
            raise unavailable(error, "meeting change", room_id) from error
        logger.bind(room=room_id).warning("database away ({}); meeting changes go to the journal", error)

    async def _change(self, change: MeetingChange, current: Meeting | None) -> Meeting | None:
        """Apply ``change`` now and emit its event, or journal it; the meeting after
        it (as the database has it, or as this service sees it when journaled)."""
        if self._direct:
            try:
                applied = await change.apply(self.store)
            except StoreUnavailable as exc:
                self._away(exc, change.room_id)
            except StoreError as exc:
                raise unavailable(exc, "meeting change", change.room_id) from exc
            else:
                if applied is not None:
                    await self._emit(_EVENTS[change.kind], applied, change.peer_id or _joined(change))
                return applied
        await self._journal(change)
        return change.applied_to(current)

    async def _journal(self, change: MeetingChange) -> None:
        assert self.journal is not None
        self._pending += 1
        try:
            await self.journal.add(change)
        except Exception as exc:
            self._pending -= 1
            logger.bind(room=change.room_id).error("meeting change not journaled: {}: {}", change.describe(), exc)
            raise ChatUnavailable("storage is unavailable (meeting journal); try again") from exc
        logger.bind(room=change.room_id).info("journaled until the database is back: {}", change.describe())
        self._start_drainer()
        self._wake.set()

    def _start_drainer(self) -> None:
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="meeting-journal")

    async def _drain(self) -> None:
        """Apply the journal in order whenever the database answers; then end what an
        earlier run left open; then go back to direct writes."""
        assert self.journal is not None
        delays = backoff_delays(_RETRY_INITIAL, _RETRY_MAX)
        while True:
            if self._direct:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                entries = await self.journal.oldest(100) if self._pending else []
                if self._pending and not entries:  # an add still on its way to the disk
                    self._wake.clear()
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                    continue
                for entry in entries:
                    await self._apply(entry.seq, entry.change)
                if not self._pending and not self._recovered:
                    await self._recover()
                    self._recovered = True
                    logger.info("meetings: the journal is applied; writing to the database directly again")
                delays = backoff_delays(_RETRY_INITIAL, _RETRY_MAX)
            except (StoreUnavailable, TimeoutError) as exc:
                if isinstance(exc, StoreUnavailable):
                    logger.debug("meeting journal: database still away: {}", exc)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_RETRY_MAX * 6):
                            await self.store.wait_available()
                await asyncio.sleep(next(delays))
            except StoreError as exc:  # a read the database refused: try again later
                logger.error("meeting journal: {}", exc)
                await asyncio.sleep(next(delays))

    async def _apply(self, seq: int, change: MeetingChange) -> None:
        assert self.journal is not None
        try:
            applied = await change.apply(self.store)
        except StoreUnavailable:
            with contextlib.suppress(Exception):
                await self.journal.record_failure(seq, "database unavailable")
            raise
        except StoreError as exc:  # refused: it would be refused again
            applied = None
            logger.bind(room=change.room_id).error(
                "meeting change refused by the database: {}: {}", change.describe(), exc
            )
        if applied is None:
            self.dropped += 1
            logger.bind(room=change.room_id).error("meeting change dropped: {} (no such meeting)", change.describe())
        await self.journal.remove(seq)
        self._pending -= 1
        if applied is not None:
            await self._emit(_EVENTS[change.kind], applied, change.peer_id or _joined(change))

    # ---- the open meeting of a room

    async def _opened(self, room_id: str) -> Meeting:
        """The room's open meeting, opened if there is none (``meeting.started``);
        under the room's lock."""
        if self._direct:
            try:
                return await self._open_in_store(room_id)
            except StoreUnavailable as exc:
                self._away(exc, room_id)
            except StoreError as exc:
                raise unavailable(exc, "opening the meeting", room_id) from exc
        meeting = self._open.get(room_id)
        if meeting is None:
            change = MeetingChange("open", room_id, new_id(), now())
            await self._journal(change)
            meeting = change.applied_to(None)
            assert meeting is not None
            self._open[room_id] = meeting
        return meeting

    async def _open_in_store(self, room_id: str) -> Meeting:
        started = False
        meeting = await self.store.meetings.current_meeting(room_id)
        if meeting is None:
            meeting_id = new_id()
            meeting = await self.store.meetings.open_meeting(room_id, meeting_id=meeting_id, started_at=now())
            started = meeting.meeting_id == meeting_id
        self._open[room_id] = meeting
        if started:
            await self._emit("meeting.started", meeting)
        return meeting

    async def _current_meeting(self, room_id: str) -> Meeting | None:
        """The room's open meeting for a leave or an end: the database's, or this
        service's view while changes are journaled."""
        if self._direct:
            try:
                return await self.store.meetings.current_meeting(room_id)
            except StoreUnavailable as exc:
                self._away(exc, room_id)
            except StoreError as exc:
                raise unavailable(exc, "reading the meeting", room_id) from exc
        return self._open.get(room_id)

    async def ensure_open(self, room_id: str) -> Meeting:
        """The room's open meeting, opened now if its first join is still on its way
        (joins are recorded asynchronously; a recording started right after the
        first join needs the meeting id already)."""
        room_id = room_id_or_error(room_id)
        async with self._lock(room_id):
            return await self._opened(room_id)

    async def join(self, room_id: str, peer_id: str, display_name: str, email: str | None = None) -> Meeting:
        """Record that ``peer_id`` joined the room; opens the meeting on the first join.
        Joining again while still in is a no-op."""
        room_id = room_id_or_error(room_id)
        peer_id = _peer_id_or_error(peer_id)
        display_name = validate_display_name(display_name)
        email = validate_email(email)
        async with self._lock(room_id):
            meeting = await self._opened(room_id)
            if any(p.peer_id == peer_id for p in meeting.active_participants):
                return meeting
            participant = Participant(peer_id=peer_id, display_name=display_name, email=email, joined_at=now())
            change = MeetingChange("join", room_id, meeting.meeting_id, participant.joined_at, participant=participant)
            updated = await self._change(change, meeting)
            if updated is None:  # deleted under us: should not happen
                raise ChatUnavailable(f"meeting {meeting.meeting_id} disappeared")
            self._open[room_id] = updated
            return updated

    async def leave(self, room_id: str, peer_id: str) -> tuple[Meeting | None, bool]:
        """Record that ``peer_id`` left; ends the meeting when nobody is left.
        Returns ``(meeting, ended)``; ``(None, False)`` if the room has no meeting."""
        room_id = room_id_or_error(room_id)
        peer_id = _peer_id_or_error(peer_id)
        async with self._lock(room_id):
            meeting = await self._current_meeting(room_id)
            if meeting is None:
                self._open.pop(room_id, None)
                return None, False
            if any(p.peer_id == peer_id for p in meeting.active_participants):
                change = MeetingChange("leave", room_id, meeting.meeting_id, now(), peer_id=peer_id)
                meeting = await self._change(change, meeting) or meeting
            if meeting.active_participants:
                self._open[room_id] = meeting
                return meeting, False
            end = MeetingChange("end", room_id, meeting.meeting_id, now())
            ended = await self._change(end, meeting) or meeting
            self._open.pop(room_id, None)
            return ended, True

    async def end(self, room_id: str) -> Meeting | None:
        """End the room's meeting now (the room was closed); everyone still in leaves."""
        room_id = room_id_or_error(room_id)
        async with self._lock(room_id):
            meeting = await self._current_meeting(room_id)
            self._open.pop(room_id, None)
            if meeting is None:
                return None
            return await self._change(MeetingChange("end", room_id, meeting.meeting_id, now()), meeting)

    async def add_recording(self, meeting_id: str, recording: RecordingRef | dict[str, Any] | Any) -> Meeting | None:
        """Attach a recording's object reference to a meeting (idempotent per bucket+key).
        ``recording``: a :class:`RecordingRef`, its JSON (camelCase) or a storage
        ``ObjectRef`` (see :meth:`RecordingRef.from_object`). While the database is
        away the change is journaled; the answer is then this service's view of the
        meeting (``None`` for one it does not follow, e.g. already ended)."""
        try:
            meeting_id = validate_id(meeting_id, "meetingId")
        except InvalidId as exc:
            raise ChatValidationError.from_invalid_id(exc) from None
        ref = as_recording_ref(recording)
        known = next((m for m in self._open.values() if m.meeting_id == meeting_id), None)
        room_id = known.room_id if known is not None else "-"
        change = MeetingChange("recording", room_id, meeting_id, now(), recording=ref)
        direct = self._direct
        meeting = await self._change(change, known)
        if meeting is None and direct and self._direct:
            raise ChatNotFound("not_found", f"no meeting {meeting_id}", "meetingId")
        if meeting is not None and known is not None and self._open.get(known.room_id) is known:
            self._open[known.room_id] = meeting
        return meeting

    # ---- reads

    async def current(self, room_id: str) -> Meeting | None:
        room_id = room_id_or_error(room_id)
        try:
            return await self.store.meetings.current_meeting(room_id)
        except StoreError as exc:
            raise unavailable(exc, "reading the meeting", room_id) from exc

    async def get(self, meeting_id: str) -> Meeting | None:
        try:
            meeting_id = validate_id(meeting_id, "meetingId")
        except InvalidId as exc:
            raise ChatValidationError.from_invalid_id(exc) from None
        try:
            return await self.store.meetings.get_meeting(meeting_id)
        except StoreError as exc:
            raise unavailable(exc, "reading the meeting") from exc

    async def list(self, room_id: str, limit: Any = None, before: str | None = None) -> MeetingPage:
        """The room's meetings, newest first, ``limit`` (default 50, max 200) per page."""
        room_id = room_id_or_error(room_id)
        n = parse_limit(limit)
        cursor = decode_cursor(before)
        try:
            meetings = await self.store.meetings.list_meetings(room_id, limit=n + 1, before=cursor)
        except StoreError as exc:
            raise unavailable(exc, "listing meetings", room_id) from exc
        more = len(meetings) > n
        meetings = meetings[:n]
        return MeetingPage(meetings, meetings[-1].cursor.encode() if more else None)


def _joined(change: MeetingChange) -> str | None:
    return change.participant.peer_id if change.participant is not None else None

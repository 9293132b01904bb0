"""The chat service: what the signaling layer, the REST API and the recorder call.

    chat = ChatService(store, max_text_length=4000)
    chat.subscribe(broadcast)                       # called with each stored message
    msg = await chat.send(room_id, sender, {"type": "text", "text": "hi"})
    page = await chat.history(room_id, limit=50, before=None)   # .messages, .next_cursor
    await chat.participant_joined(room_id, peer_id, display_name)   # meeting + "Ada joined"
    await chat.participant_left(room_id, peer_id)                    # meeting + "Ada left"
    await chat.recording_started(room_id); await chat.recording_stopped(room_id, recording=ref)
    await chat.system_message(room_id, "Ada shares her screen", event="screen.started")

A message is validated (:mod:`control.chat.validation`), given a server id and time
(a ULID and its millisecond timestamp, so ids and times sort together), written,
and only once the store acknowledged it handed to the subscribers and returned.
Refused input raises :class:`~control.chat.validation.ChatValidationError` (nothing
stored); a store that does not acknowledge raises
:class:`~control.chat.meetings.ChatUnavailable` (the client should resend). Both are
:class:`~control.chat.validation.ChatError` with ``to_json()`` for the error response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from control.chat.journal import FILE_NAME as JOURNAL_FILE
from control.chat.journal import MeetingJournal
from control.chat.meetings import (
    ChatUnavailable,
    MeetingService,
    _notify,
    as_recording_ref,
    decode_cursor,
    room_id_or_error,
    unavailable,
)
from control.chat.validation import (
    DEFAULT_MAX_TEXT_LENGTH,
    MAX_FILE_SIZE,
    ChatLimits,
    ChatValidationError,
    check_text,
    parse_limit,
    validate_content,
    validate_event,
    validate_sender,
)
from control.store.base import Store
from control.store.errors import StoreError
from control.store.ids import ms_to_datetime, new_id_ms
from control.store.models import ChatMessage, Meeting, RecordingRef, Sender

__all__ = ["ChatService", "ClearedCallback", "HistoryPage", "MessageCallback"]

MessageCallback = Callable[[ChatMessage], "Awaitable[None] | None"]
ClearedCallback = Callable[[str, int], "Awaitable[None] | None"]

#: System message events the server posts itself.
PARTICIPANT_JOINED = "participant.joined"
PARTICIPANT_LEFT = "participant.left"
RECORDING_STARTED = "recording.started"
RECORDING_STOPPED = "recording.stopped"


@dataclass(frozen=True, slots=True)
class HistoryPage:
    #: Newest first.
    messages: list[ChatMessage]
    #: Pass as ``before`` for the next (older) page; ``None`` on the last page.
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"messages": [m.to_json() for m in self.messages], "nextCursor": self.next_cursor}


class ChatService:
    def __init__(
        self,
        store: Store,
        *,
        meetings: MeetingService | None = None,
        max_text_length: int = DEFAULT_MAX_TEXT_LENGTH,
        max_file_size: int = MAX_FILE_SIZE,
        delete_on_meeting_end: bool = False,
    ) -> None:
        self.store = store
        self.meetings = meetings or MeetingService(store)
        self.limits = ChatLimits(max_text_length=max_text_length, max_file_size=max_file_size)
        self.delete_on_meeting_end = delete_on_meeting_end
        self._on_message: list[MessageCallback] = []
        self._on_cleared: list[ClearedCallback] = []

    @classmethod
    def from_settings(cls, store: Store, settings: Any) -> ChatService:
        """With a MongoDB store, meeting changes the database cannot take yet go to
        the journal ``DATA_DIR/meeting-journal.sqlite3`` (:mod:`control.chat.journal`)."""
        file_mb = getattr(settings, "chat_file_max_mb", None)
        journal = None
        if store.backend == "mongodb":
            journal = MeetingJournal(Path(settings.data_dir) / JOURNAL_FILE)
        return cls(
            store,
            meetings=MeetingService(store, journal),
            max_text_length=getattr(settings, "chat_max_text_length", DEFAULT_MAX_TEXT_LENGTH),
            max_file_size=file_mb * 1024 * 1024 if file_mb else MAX_FILE_SIZE,
            delete_on_meeting_end=getattr(settings, "chat_delete_on_meeting_end", False),
        )

    async def start(self) -> None:
        """Start-up work: end meetings a crashed run left open (once the database
        answers, when the meetings have a journal)."""
        await self.meetings.start()

    async def close(self) -> None:
        await self.meetings.close()

    # ---- subscribers

    def subscribe(self, on_message: MessageCallback, on_cleared: ClearedCallback | None = None) -> Callable[[], None]:
        """``on_message(message)`` after each stored message (participants' and
        system ones), ``on_cleared(room_id, deleted)`` after a room's history was
        deleted. Callbacks may be sync or async; their exceptions are logged, not
        raised. Returns a function that unsubscribes."""
        self._on_message.append(on_message)
        if on_cleared is not None:
            self._on_cleared.append(on_cleared)

        def unsubscribe() -> None:
            if on_message in self._on_message:
                self._on_message.remove(on_message)
            if on_cleared is not None and on_cleared in self._on_cleared:
                self._on_cleared.remove(on_cleared)

        return unsubscribe

    # ---- messages

    async def _store(self, message: ChatMessage) -> ChatMessage:
        try:
            await self.store.chat.insert_message(message)
        except StoreError as exc:
            logger.bind(room=message.room_id).error("chat message {} not stored: {}", message.id, exc)
            raise ChatUnavailable("the message could not be stored; send it again") from exc
        if self._on_message:
            await _notify(self._on_message, message)
        return message

    def _new_message(self, room_id: str, meeting_id: str | None = None, **fields: Any) -> ChatMessage:
        ms, message_id = new_id_ms()
        return ChatMessage(
            id=message_id,
            room_id=room_id,
            meeting_id=meeting_id or self.meetings.current_id(room_id),
            created_at=ms_to_datetime(ms),
            **fields,
        )

    async def send(self, room_id: str, sender: Sender | dict[str, Any] | Any, payload: Any) -> ChatMessage:
        """Validate and store a participant's message; returns it as stored (with
        ``id``, ``createdAt``, ``meetingId``) after the subscribers saw it.

        ``sender``: a :class:`Sender`, ``{"peerId", "displayName"}``, or an object
        with ``peer_id``/``display_name``. ``payload``: ``{"type": "text", "text": ...}``
        or ``{"type": "file", "file": {bucket, key, name, size, mimeType}, "text"?}`` where
        ``key`` is one of this room's chat uploads (``chat/<roomId>/<fileId>/<name>``)."""
        room_id = room_id_or_error(room_id)
        who = validate_sender(sender)
        content = validate_content(payload, self.limits, room_id)
        message = self._new_message(room_id, type=content.type, sender=who, text=content.text, file=content.file)
        return await self._store(message)

    async def system_message(
        self,
        room_id: str,
        text: str,
        *,
        event: str = "room.event",
        data: dict[str, Any] | None = None,
        meeting_id: str | None = None,
    ) -> ChatMessage:
        """Store and broadcast a server message (``type: "system"``, no sender).
        ``event`` names what happened (``participant.joined``...) so clients can
        render or translate it; ``data`` holds its details (JSON values);
        ``meeting_id`` defaults to the room's current meeting."""
        room_id = room_id_or_error(room_id)
        checked = check_text(text, max_length=self.limits.max_text_length)
        message = self._new_message(
            room_id, meeting_id, type="system", text=checked, event=validate_event(event), data=data or None
        )
        return await self._store(message)

    async def history(self, room_id: str, limit: Any = None, before: str | None = None) -> HistoryPage:
        """A page of the room's messages, newest first: ``limit`` (default 50, max
        200), older than the opaque cursor ``before`` (a previous ``next_cursor``).
        Pages stay stable while messages arrive (they are newer than any cursor)."""
        room_id = room_id_or_error(room_id)
        n = parse_limit(limit)
        cursor = decode_cursor(before)
        try:
            messages = await self.store.chat.history(room_id, limit=n + 1, before=cursor)
        except StoreError as exc:
            raise unavailable(exc, "reading the chat history", room_id) from exc
        more = len(messages) > n
        messages = messages[:n]
        return HistoryPage(messages, messages[-1].cursor.encode() if more else None)

    async def delete_room_messages(self, room_id: str) -> int:
        """Delete the room's whole history (admin; or at meeting end by configuration)."""
        room_id = room_id_or_error(room_id)
        try:
            deleted = await self.store.chat.delete_room_messages(room_id)
        except StoreError as exc:
            raise unavailable(exc, "deleting the chat history", room_id) from exc
        logger.bind(room=room_id).info("deleted {} chat message(s)", deleted)
        if self._on_cleared:
            await _notify(self._on_cleared, room_id, deleted)
        return deleted

    # ---- room events: meeting records + system messages

    async def _announce(
        self, room_id: str, text: str, *, event: str, data: dict[str, Any], meeting_id: str | None
    ) -> ChatMessage | None:
        """A system message about a meeting change; while the database is away it is
        skipped (logged): the change itself is journaled by the meetings."""
        if not self.store.available:
            logger.bind(room=room_id).warning("database away: system message {!r} not posted", text)
            return None
        try:
            return await self.system_message(room_id, text, event=event, data=data, meeting_id=meeting_id)
        except ChatUnavailable:
            logger.bind(room=room_id).warning("database away: system message {!r} not posted", text)
            return None

    async def participant_joined(
        self, room_id: str, peer_id: str, display_name: str, email: str | None = None
    ) -> ChatMessage | None:
        """The signaling layer reports a join: the meeting records it (opening the
        meeting on the first join) and "<name> joined" is posted (not while the
        database is away: ``None`` then)."""
        meeting = await self.meetings.join(room_id, peer_id, display_name, email)
        name = next((p.display_name for p in reversed(meeting.participants) if p.peer_id == peer_id), display_name)
        return await self._announce(
            room_id,
            f"{name} joined",
            event=PARTICIPANT_JOINED,
            data={"peerId": peer_id, "displayName": name},
            meeting_id=meeting.meeting_id,
        )

    async def participant_left(self, room_id: str, peer_id: str) -> ChatMessage | None:
        """The signaling layer reports a leave: the meeting records it (ending the
        meeting when nobody is left) and "<name> left" is posted. ``None`` if the
        peer was not in the room's meeting."""
        meeting, ended = await self.meetings.leave(room_id, peer_id)
        entry = None
        if meeting is not None:
            entry = next((p for p in reversed(meeting.participants) if p.peer_id == peer_id), None)
        message = None
        if entry is not None:
            message = await self._announce(
                room_id,
                f"{entry.display_name} left",
                event=PARTICIPANT_LEFT,
                data={"peerId": peer_id, "displayName": entry.display_name},
                meeting_id=meeting.meeting_id if meeting is not None else None,
            )
        if ended and self.delete_on_meeting_end:
            await self.delete_room_messages(room_id)
        return message

    async def room_closed(self, room_id: str) -> Meeting | None:
        """The room was closed with peers in it: end its meeting (and delete its
        history if configured)."""
        meeting = await self.meetings.end(room_id)
        if meeting is not None and self.delete_on_meeting_end:
            await self.delete_room_messages(room_id)
        return meeting

    async def recording_started(
        self, room_id: str, *, recording_id: str | None = None, by: Sender | dict[str, Any] | None = None
    ) -> ChatMessage:
        """Post "Recording started" (called by the recording layer)."""
        data: dict[str, Any] = {}
        if recording_id:
            data["recordingId"] = recording_id
        if by is not None:
            who = validate_sender(by)
            data.update(peerId=who.peer_id, displayName=who.display_name)
        text = f"{data['displayName']} started recording" if "displayName" in data else "Recording started"
        return await self.system_message(room_id, text, event=RECORDING_STARTED, data=data)

    async def recording_stopped(
        self,
        room_id: str,
        *,
        recording_id: str | None = None,
        recording: RecordingRef | dict[str, Any] | Any | None = None,
        meeting_id: str | None = None,
    ) -> ChatMessage:
        """Post "Recording stopped"; with ``recording`` (a :class:`RecordingRef`, its
        JSON, or the storage layer's ``ObjectRef``) also attach it to the meeting
        (``meeting_id``, default the room's current one)."""
        data: dict[str, Any] = {}
        if recording_id:
            data["recordingId"] = recording_id
        if recording is not None:
            target = meeting_id or self.meetings.current_id(room_id_or_error(room_id))
            if target is None:
                current = await self.meetings.current(room_id)
                target = current.meeting_id if current else None
            if target is None:
                raise ChatValidationError("no_meeting", f"room {room_id} has no meeting to attach the recording to")
            ref = as_recording_ref(recording)
            await self.meetings.add_recording(target, ref)
            data.update(meetingId=target, recording=ref.to_json())
        return await self.system_message(
            room_id, "Recording stopped", event=RECORDING_STOPPED, data=data, meeting_id=data.get("meetingId")
        )

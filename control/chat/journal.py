"""The meeting journal: meeting changes the database could not take yet, kept on disk.

When MongoDB is away, a join, a leave, a meeting's end or a recording attached to
it is not lost and not a failure: :class:`~control.chat.meetings.MeetingService`
writes it here and applies it when the database is back, in the order it happened
(the outbox pattern of :mod:`control.events.outbox`). A change is removed only once
the database acknowledged it; every change is idempotent in the store (a participation
is keyed by peer and join time, a recording by bucket and key, an end keeps the
first end time), so a crash between applying and removing applies it twice, harmlessly.

One SQLite file, ``DATA_DIR/meeting-journal.sqlite3`` (mode 0600: display names
and e-mail addresses are personal data), ``synchronous=FULL``: a change is on disk
when :meth:`MeetingJournal.add` returns. sqlite3 blocks, so one dedicated thread
owns the connection.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from control.private_files import create_private_sqlite
from control.store.base import Store
from control.store.ids import datetime_to_ms, ms_to_datetime
from control.store.models import Meeting, Participant, RecordingRef

__all__ = ["FILE_NAME", "ChangeKind", "JournalEntry", "MeetingChange", "MeetingJournal"]

T = TypeVar("T")

FILE_NAME = "meeting-journal.sqlite3"

ChangeKind = Literal["open", "join", "leave", "end", "recording"]


@dataclass(frozen=True, slots=True)
class MeetingChange:
    """One change of one meeting, with everything needed to apply it later."""

    kind: ChangeKind
    room_id: str
    meeting_id: str
    #: When it happened (the meeting's start, the leave, the end).
    at: datetime
    participant: Participant | None = None
    peer_id: str | None = None
    recording: RecordingRef | None = None

    # ---- applying

    async def apply(self, store: Store) -> Meeting | None:
        """Write the change (idempotent); the meeting as the store has it after."""
        meetings = store.meetings
        if self.kind == "open":
            meeting = await meetings.open_meeting(self.room_id, meeting_id=self.meeting_id, started_at=self.at)
            if meeting.meeting_id != self.meeting_id:
                # A meeting a crashed run left open in this room: it ended when ours began.
                await meetings.end_meeting(meeting.meeting_id, self.at)
                meeting = await meetings.open_meeting(self.room_id, meeting_id=self.meeting_id, started_at=self.at)
            return meeting if meeting.meeting_id == self.meeting_id else None
        if self.kind == "join":
            assert self.participant is not None
            return await meetings.add_participant(self.meeting_id, self.participant)
        if self.kind == "leave":
            assert self.peer_id is not None
            return await meetings.participant_left(self.meeting_id, self.peer_id, self.at)
        if self.kind == "end":
            return await meetings.end_meeting(self.meeting_id, self.at)
        assert self.recording is not None
        return await meetings.add_recording(self.meeting_id, self.recording)

    def applied_to(self, meeting: Meeting | None) -> Meeting | None:
        """What the change makes of ``meeting`` (the same rules as the stores): the
        service's own view while the database is away."""
        if self.kind == "open":
            return Meeting(meeting_id=self.meeting_id, room_id=self.room_id, started_at=self.at)
        if meeting is None:
            return None
        if self.kind == "join":
            assert self.participant is not None
            p = self.participant
            if any(x.peer_id == p.peer_id and x.joined_at == p.joined_at for x in meeting.participants):
                return meeting
            return meeting.model_copy(update={"participants": [*meeting.participants, p]})
        if self.kind == "leave":
            return meeting.model_copy(
                update={
                    "participants": [
                        x.model_copy(update={"left_at": self.at})
                        if x.peer_id == self.peer_id and x.left_at is None
                        else x
                        for x in meeting.participants
                    ]
                }
            )
        if self.kind == "end":
            if meeting.ended_at is not None:
                return meeting
            ended = self.at
            return meeting.model_copy(
                update={
                    "ended_at": ended,
                    "participants": [
                        x if x.left_at is not None else x.model_copy(update={"left_at": ended})
                        for x in meeting.participants
                    ],
                }
            )
        assert self.recording is not None
        r = self.recording
        if any(x.bucket == r.bucket and x.key == r.key for x in meeting.recordings):
            return meeting
        return meeting.model_copy(update={"recordings": [*meeting.recordings, r]})

    # ---- (de)serializing

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "kind": self.kind,
            "roomId": self.room_id,
            "meetingId": self.meeting_id,
            "at": datetime_to_ms(self.at),
        }
        if self.participant is not None:
            body["participant"] = self.participant.model_dump(by_alias=True, mode="json")
        if self.peer_id is not None:
            body["peerId"] = self.peer_id
        if self.recording is not None:
            body["recording"] = self.recording.model_dump(by_alias=True, mode="json", exclude_none=True)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> MeetingChange:
        body = json.loads(text)
        participant = body.get("participant")
        recording = body.get("recording")
        return cls(
            kind=body["kind"],
            room_id=body["roomId"],
            meeting_id=body["meetingId"],
            at=ms_to_datetime(body["at"]),
            participant=Participant.model_validate(participant) if participant is not None else None,
            peer_id=body.get("peerId"),
            recording=RecordingRef.model_validate(recording) if recording is not None else None,
        )

    def describe(self) -> str:
        who = self.peer_id or (self.participant.peer_id if self.participant else None)
        what = f"{self.kind} {who}" if who else self.kind
        if self.recording is not None:
            what += f" {self.recording.key}"
        return f"{what} (meeting {self.meeting_id}, room {self.room_id})"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    change: MeetingChange
    attempts: int


class MeetingJournal:
    """The journal file (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("the meeting journal is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    def _open_sync(self) -> None:
        create_private_sqlite(self.path)  # joins carry participants' e-mails
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a change is on disk when add() returns
        conn.execute("""CREATE TABLE IF NOT EXISTS meeting_changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            change TEXT NOT NULL,
            created_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT)""")
        self._conn = conn

    async def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-meeting-journal")
            try:
                await self._call(self._open_sync)
            except BaseException:
                self._executor.shutdown(wait=False)
                self._executor = None
                raise

    async def add(self, change: MeetingChange) -> int:
        """Store durably; its sequence number."""
        text = change.to_json()

        def insert() -> int:
            cur = self._db().execute(
                "INSERT INTO meeting_changes (change, created_at) VALUES (?, ?)", (text, time.time())
            )
            return int(cur.lastrowid or 0)

        return await self._call(insert)

    async def oldest(self, limit: int = 100) -> list[JournalEntry]:
        def select() -> list[tuple[int, str, int]]:
            return (
                self._db()
                .execute("SELECT seq, change, attempts FROM meeting_changes ORDER BY seq LIMIT ?", (int(limit),))
                .fetchall()
            )

        return [
            JournalEntry(seq, MeetingChange.from_json(text), attempts)
            for seq, text, attempts in await self._call(select)
        ]

    async def remove(self, seq: int) -> None:
        await self._call(lambda: self._db().execute("DELETE FROM meeting_changes WHERE seq = ?", (seq,)))

    async def record_failure(self, seq: int, error: str) -> None:
        await self._call(
            lambda: self._db().execute(
                "UPDATE meeting_changes SET attempts = attempts + 1, last_error = ? WHERE seq = ?", (error[:1000], seq)
            )
        )

    async def count(self) -> int:
        return int(await self._call(lambda: self._db().execute("SELECT COUNT(*) FROM meeting_changes").fetchone()[0]))

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return

        def close_conn() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(executor, close_conn)
        executor.shutdown(wait=True)

    def describe(self) -> str:
        return f"SQLite {self.path}"

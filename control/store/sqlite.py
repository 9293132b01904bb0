"""The embedded backend: one SQLite file (stdlib ``sqlite3``), WAL, off the event loop.

- One writer thread owns the only writing connection. Writes are queued to it and
  **group-committed**: the thread takes every write waiting in the queue, runs each
  in its own SAVEPOINT (one failing write does not fail its neighbours), commits them
  in one transaction, and only then resolves the callers' futures. With
  ``synchronous=FULL`` an acknowledged write is on disk; concurrent writers share
  the fsync instead of queuing behind one each.
- Reads run on a small thread pool, each thread with its own read-only connection
  (WAL lets them read while the writer writes).
- History is served by the index ``chat_messages_room_time (room_id, created_at DESC,
  id DESC)``, forced with ``INDEXED BY`` so a page never scans the room, and the
  cursor is a row-value comparison ``(created_at, id) < (?, ?)``.

Times are stored as integer milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger

from control.store.base import DEFAULT_PAGE, ChatStore, MeetingStore, Store
from control.store.errors import StoreError, StoreUnavailable
from control.store.ids import datetime_to_ms, ms_to_datetime
from control.store.models import ChatMessage, Cursor, FileRef, Meeting, Participant, RecordingRef, Sender

__all__ = ["HISTORY_INDEX", "SCHEMA_VERSION", "SQLiteStore", "history_sql"]

T = TypeVar("T")

SCHEMA_VERSION = 1
HISTORY_INDEX = "chat_messages_room_time"
#: Most writes committed in one transaction.
MAX_GROUP_COMMIT = 512

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS chat_messages (
    id                  TEXT PRIMARY KEY,
    room_id             TEXT NOT NULL,
    meeting_id          TEXT,
    created_at          INTEGER NOT NULL,
    type                TEXT NOT NULL CHECK (type IN ('text', 'system', 'file')),
    sender_peer_id      TEXT,
    sender_display_name TEXT,
    text                TEXT,
    file                TEXT,
    event               TEXT,
    data                TEXT
);
CREATE INDEX IF NOT EXISTS {HISTORY_INDEX}
    ON chat_messages (room_id, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS meetings (
    meeting_id TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at   INTEGER
);
CREATE INDEX IF NOT EXISTS meetings_room_started
    ON meetings (room_id, started_at DESC, meeting_id DESC);
CREATE UNIQUE INDEX IF NOT EXISTS meetings_open_room
    ON meetings (room_id) WHERE ended_at IS NULL;

CREATE TABLE IF NOT EXISTS meeting_participants (
    seq          INTEGER PRIMARY KEY,
    meeting_id   TEXT NOT NULL REFERENCES meetings (meeting_id) ON DELETE CASCADE,
    peer_id      TEXT NOT NULL,
    display_name TEXT NOT NULL,
    email        TEXT,
    joined_at    INTEGER NOT NULL,
    left_at      INTEGER
);
CREATE INDEX IF NOT EXISTS meeting_participants_meeting
    ON meeting_participants (meeting_id, peer_id);

CREATE TABLE IF NOT EXISTS meeting_recordings (
    seq        INTEGER PRIMARY KEY,
    meeting_id TEXT NOT NULL REFERENCES meetings (meeting_id) ON DELETE CASCADE,
    bucket     TEXT NOT NULL,
    key        TEXT NOT NULL,
    recording  TEXT NOT NULL,
    UNIQUE (meeting_id, bucket, key)
);
"""

_MESSAGE_COLUMNS = (
    "id, room_id, meeting_id, created_at, type, sender_peer_id, sender_display_name, text, file, event, data"
)


def history_sql(*, with_cursor: bool) -> str:
    """The history query (exposed so tests can EXPLAIN it)."""
    where = "room_id = ? AND (created_at, id) < (?, ?)" if with_cursor else "room_id = ?"
    return (
        f"SELECT {_MESSAGE_COLUMNS} FROM chat_messages INDEXED BY {HISTORY_INDEX} "
        f"WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?"
    )


# --------------------------------------------------------------------------- rows


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _message_row(m: ChatMessage) -> tuple[Any, ...]:
    return (
        m.id,
        m.room_id,
        m.meeting_id,
        datetime_to_ms(m.created_at),
        m.type,
        m.sender.peer_id if m.sender else None,
        m.sender.display_name if m.sender else None,
        m.text,
        _dumps(m.file.model_dump(by_alias=True)) if m.file else None,
        m.event,
        _dumps(m.data),
    )


def _row_message(row: sqlite3.Row | tuple[Any, ...]) -> ChatMessage:
    (mid, room_id, meeting_id, created_at, type_, peer_id, display_name, text, file, event, data) = row
    return ChatMessage(
        id=mid,
        room_id=room_id,
        meeting_id=meeting_id,
        type=type_,
        sender=Sender(peer_id=peer_id, display_name=display_name) if peer_id is not None else None,
        text=text,
        file=FileRef.model_validate(json.loads(file)) if file else None,
        event=event,
        data=json.loads(data) if data else None,
        created_at=ms_to_datetime(created_at),
    )


def _opt_ms(value: datetime | None) -> int | None:
    return None if value is None else datetime_to_ms(value)


def _opt_dt(value: int | None) -> datetime | None:
    return None if value is None else ms_to_datetime(value)


def _load_meetings(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[Meeting]:
    """Meetings for ``(meeting_id, room_id, started_at, ended_at)`` rows, in order."""
    if not rows:
        return []
    ids = [r[0] for r in rows]
    marks = ",".join("?" * len(ids))
    participants: dict[str, list[Participant]] = {i: [] for i in ids}
    for mid, peer_id, name, email, joined, left in conn.execute(
        "SELECT meeting_id, peer_id, display_name, email, joined_at, left_at "
        f"FROM meeting_participants WHERE meeting_id IN ({marks}) ORDER BY seq",
        ids,
    ):
        participants[mid].append(
            Participant(
                peer_id=peer_id,
                display_name=name,
                email=email,
                joined_at=ms_to_datetime(joined),
                left_at=_opt_dt(left),
            )
        )
    recordings: dict[str, list[RecordingRef]] = {i: [] for i in ids}
    for mid, rec in conn.execute(
        f"SELECT meeting_id, recording FROM meeting_recordings WHERE meeting_id IN ({marks}) ORDER BY seq",
        ids,
    ):
        recordings[mid].append(RecordingRef.model_validate(json.loads(rec)))
    return [
        Meeting(
            meeting_id=mid,
            room_id=room_id,
            started_at=ms_to_datetime(started),
            ended_at=_opt_dt(ended),
            participants=participants[mid],
            recordings=recordings[mid],
        )
        for mid, room_id, started, ended in rows
    ]


def _meeting(conn: sqlite3.Connection, meeting_id: str) -> Meeting | None:
    rows = conn.execute(
        "SELECT meeting_id, room_id, started_at, ended_at FROM meetings WHERE meeting_id = ?",
        (meeting_id,),
    ).fetchall()
    found = _load_meetings(conn, rows)
    return found[0] if found else None


def _open_meeting_row(conn: sqlite3.Connection, room_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT meeting_id, room_id, started_at, ended_at FROM meetings WHERE room_id = ? AND ended_at IS NULL",
        (room_id,),
    ).fetchall()


# --------------------------------------------------------------------------- threads


class _Job:
    __slots__ = ("args", "fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn, self.args, self.loop, self.future = fn, args, loop, future


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller was cancelled; the write happened anyway
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


_STOP = object()


class _Database:
    """The SQLite file: one group-committing writer thread, a pool of readers."""

    def __init__(self, path: Path, *, readers: int = 4, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self._readers_count = readers
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_conns_lock = threading.Lock()
        self._closed = False

    # ---- lifecycle

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout_ms / 1000,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        return conn

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect(readonly=False)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"SQLite {self.path}: cannot switch to WAL (journal_mode={mode})")
            # FULL: an acknowledged message survives a power cut, not just a crash.
            conn.execute("PRAGMA synchronous = FULL")
            # The file is shared (the event outbox keeps its table here too), so the
            # schema version lives in a row of our own, not in PRAGMA user_version.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS parley_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
                )
                row = conn.execute("SELECT version FROM parley_schema WHERE component = 'chat'").fetchone()
                if row is not None and row[0] > SCHEMA_VERSION:
                    raise StoreUnavailable(
                        f"SQLite {self.path} has chat schema version {row[0]}, newer than this "
                        f"Parley's ({SCHEMA_VERSION}); upgrade Parley or use another DATA_DIR"
                    )
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO parley_schema (component, version) VALUES ('chat', ?) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (SCHEMA_VERSION,),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        self._write_conn = conn

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self._open_sync)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite {self.path}: cannot open: {exc}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"SQLite {self.path}: cannot create its directory: {exc}") from exc
        self._writer = threading.Thread(target=self._write_loop, name="parley-sqlite-writer", daemon=True)
        self._writer.start()
        self._readers = ThreadPoolExecutor(max_workers=self._readers_count, thread_name_prefix="parley-sqlite-reader")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._writer.join)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown, True)
        # In a thread: PRAGMA optimize and the last connection's close (a WAL checkpoint,
        # with its fsyncs) are file I/O that held the event loop for tens of milliseconds.
        await asyncio.to_thread(self._close_connections)

    def _close_connections(self) -> None:
        with self._read_conns_lock:
            conns, self._read_conns = self._read_conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        if self._write_conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._write_conn.execute("PRAGMA optimize")
                self._write_conn.close()
            self._write_conn = None

    # ---- writes

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the writer's next transaction; return once committed."""
        if self._closed or self._writer is None:
            raise StoreError("the SQLite store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, args, loop, future))
        return await future

    def _write_loop(self) -> None:
        conn = self._write_conn
        assert conn is not None
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < MAX_GROUP_COMMIT:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._commit(conn, batch)

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            err = StoreError(f"SQLite: cannot begin a write transaction: {exc}")
            for job in batch:
                job.loop.call_soon_threadsafe(_resolve, job.future, False, err)
            return
        for job in batch:
            try:
                conn.execute("SAVEPOINT job")
                value = job.fn(conn, *job.args)
                conn.execute("RELEASE job")
                results.append((True, value))
            except Exception as exc:  # noqa: BLE001 - delivered to the caller
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                if isinstance(exc, sqlite3.Error):
                    exc = StoreError(f"SQLite: {exc}")
                results.append((False, exc))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            err = StoreError(f"SQLite: commit failed, nothing written: {exc}")
            results = [(False, err)] * len(batch)
        for job, (ok, value) in zip(batch, results, strict=True):
            try:
                job.loop.call_soon_threadsafe(_resolve, job.future, ok, value)
            except RuntimeError:  # the caller's loop is closed
                pass

    # ---- reads

    def _reader_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._local.conn = conn
            with self._read_conns_lock:
                self._read_conns.append(conn)
        return conn

    def _read_job(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(self._reader_conn(), *args)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite: {exc}") from exc

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a reader thread's read-only connection."""
        if self._closed or self._readers is None:
            raise StoreError("the SQLite store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read_job, fn, args)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# --------------------------------------------------------------------------- stores


class SQLiteChatStore(ChatStore):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def insert_message(self, message: ChatMessage) -> None:
        row = _message_row(message)
        await self._db.write(
            lambda c: c.execute(
                f"INSERT INTO chat_messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row
            )
        )

    async def insert_messages(self, messages: Sequence[ChatMessage]) -> None:
        rows = [_message_row(m) for m in messages]
        if rows:
            await self._db.write(
                lambda c: c.executemany(
                    f"INSERT INTO chat_messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
            )

    async def history(
        self, room_id: str, *, limit: int = DEFAULT_PAGE, before: Cursor | None = None
    ) -> list[ChatMessage]:
        params: tuple[str | int, ...]
        if before is None:
            sql, params = history_sql(with_cursor=False), (room_id, limit)
        else:
            sql, params = history_sql(with_cursor=True), (room_id, before.ms, before.id, limit)

        def run(conn: sqlite3.Connection) -> list[ChatMessage]:
            return [_row_message(r) for r in conn.execute(sql, params)]

        return await self._db.read(run)

    async def get_message(self, message_id: str) -> ChatMessage | None:
        def run(conn: sqlite3.Connection) -> ChatMessage | None:
            row = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM chat_messages WHERE id = ?", (message_id,)).fetchone()
            return _row_message(row) if row else None

        return await self._db.read(run)

    async def count_messages(self, room_id: str) -> int:
        return await self._db.read(
            lambda c: c.execute("SELECT count(*) FROM chat_messages WHERE room_id = ?", (room_id,)).fetchone()[0]
        )

    async def delete_room_messages(self, room_id: str) -> int:
        return await self._db.write(
            lambda c: c.execute("DELETE FROM chat_messages WHERE room_id = ?", (room_id,)).rowcount
        )


class SQLiteMeetingStore(MeetingStore):
    def __init__(self, db: _Database) -> None:
        self._db = db

    async def open_meeting(self, room_id: str, *, meeting_id: str, started_at: datetime) -> Meeting:
        def run(conn: sqlite3.Connection) -> Meeting:
            rows = _open_meeting_row(conn, room_id)
            if not rows:
                conn.execute(
                    "INSERT INTO meetings (meeting_id, room_id, started_at, ended_at) VALUES (?, ?, ?, NULL)",
                    (meeting_id, room_id, datetime_to_ms(started_at)),
                )
                rows = _open_meeting_row(conn, room_id)
            return _load_meetings(conn, rows)[0]

        return await self._db.write(run)

    async def current_meeting(self, room_id: str) -> Meeting | None:
        def run(conn: sqlite3.Connection) -> Meeting | None:
            found = _load_meetings(conn, _open_meeting_row(conn, room_id))
            return found[0] if found else None

        return await self._db.read(run)

    async def add_participant(self, meeting_id: str, participant: Participant) -> Meeting | None:
        p = participant
        joined = datetime_to_ms(p.joined_at)

        def run(conn: sqlite3.Connection) -> Meeting | None:
            if conn.execute("SELECT 1 FROM meetings WHERE meeting_id = ?", (meeting_id,)).fetchone() is None:
                return None
            exists = conn.execute(
                "SELECT 1 FROM meeting_participants WHERE meeting_id = ? AND peer_id = ? AND joined_at = ?",
                (meeting_id, p.peer_id, joined),
            ).fetchone()
            if exists is None:
                conn.execute(
                    "INSERT INTO meeting_participants (meeting_id, peer_id, display_name, email, joined_at, left_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (meeting_id, p.peer_id, p.display_name, p.email, joined, _opt_ms(p.left_at)),
                )
            return _meeting(conn, meeting_id)

        return await self._db.write(run)

    async def participant_left(self, meeting_id: str, peer_id: str, left_at: datetime) -> Meeting | None:
        left = datetime_to_ms(left_at)

        def run(conn: sqlite3.Connection) -> Meeting | None:
            conn.execute(
                "UPDATE meeting_participants SET left_at = ? WHERE meeting_id = ? AND peer_id = ? AND left_at IS NULL",
                (left, meeting_id, peer_id),
            )
            return _meeting(conn, meeting_id)

        return await self._db.write(run)

    async def end_meeting(self, meeting_id: str, ended_at: datetime) -> Meeting | None:
        ended = datetime_to_ms(ended_at)

        def run(conn: sqlite3.Connection) -> Meeting | None:
            cur = conn.execute(
                "UPDATE meetings SET ended_at = ? WHERE meeting_id = ? AND ended_at IS NULL",
                (ended, meeting_id),
            )
            if cur.rowcount:
                conn.execute(
                    "UPDATE meeting_participants SET left_at = ? WHERE meeting_id = ? AND left_at IS NULL",
                    (ended, meeting_id),
                )
            return _meeting(conn, meeting_id)

        return await self._db.write(run)

    async def add_recording(self, meeting_id: str, recording: RecordingRef) -> Meeting | None:
        doc = _dumps(recording.model_dump(by_alias=True, mode="json", exclude_none=True))

        def run(conn: sqlite3.Connection) -> Meeting | None:
            if conn.execute("SELECT 1 FROM meetings WHERE meeting_id = ?", (meeting_id,)).fetchone() is None:
                return None
            conn.execute(
                "INSERT OR IGNORE INTO meeting_recordings (meeting_id, bucket, key, recording) VALUES (?, ?, ?, ?)",
                (meeting_id, recording.bucket, recording.key, doc),
            )
            return _meeting(conn, meeting_id)

        return await self._db.write(run)

    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        return await self._db.read(_meeting, meeting_id)

    async def list_meetings(
        self, room_id: str, *, limit: int = DEFAULT_PAGE, before: Cursor | None = None
    ) -> list[Meeting]:
        cols = "meeting_id, room_id, started_at, ended_at"
        if before is None:
            sql = (
                f"SELECT {cols} FROM meetings INDEXED BY meetings_room_started WHERE room_id = ? "
                "ORDER BY started_at DESC, meeting_id DESC LIMIT ?"
            )
            params: tuple[Any, ...] = (room_id, limit)
        else:
            sql = (
                f"SELECT {cols} FROM meetings INDEXED BY meetings_room_started "
                "WHERE room_id = ? AND (started_at, meeting_id) < (?, ?) "
                "ORDER BY started_at DESC, meeting_id DESC LIMIT ?"
            )
            params = (room_id, before.ms, before.id, limit)

        def run(conn: sqlite3.Connection) -> list[Meeting]:
            return _load_meetings(conn, conn.execute(sql, params).fetchall())

        return await self._db.read(run)

    async def open_meetings(self) -> list[Meeting]:
        def run(conn: sqlite3.Connection) -> list[Meeting]:
            rows = conn.execute(
                "SELECT meeting_id, room_id, started_at, ended_at FROM meetings "
                "WHERE ended_at IS NULL ORDER BY started_at"
            ).fetchall()
            return _load_meetings(conn, rows)

        return await self._db.read(run)


class SQLiteStore(Store):
    """Chat and meetings in one SQLite file (``Settings.sqlite_path``)."""

    backend = "sqlite"

    def __init__(self, path: str | Path, *, readers: int = 4) -> None:
        self.path = Path(path)
        self._db = _Database(self.path, readers=readers)
        self.chat = SQLiteChatStore(self._db)
        self.meetings = SQLiteMeetingStore(self._db)
        self._started = False

    async def start(self, *, require_reachable: bool = True) -> None:
        if self._started:
            return
        await self._db.open()
        self._started = True
        logger.debug("SQLite store open at {}", self.path)

    async def close(self) -> None:
        await self._db.close()

    def describe(self) -> str:
        return f"embedded SQLite {self.path}"

    async def explain_history(self, room_id: str, before: Cursor | None = None, limit: int = DEFAULT_PAGE) -> list[str]:
        """``EXPLAIN QUERY PLAN`` of the history query (tests, the benchmark)."""
        params: tuple[str | int, ...]
        if before is None:
            sql, params = history_sql(with_cursor=False), (room_id, limit)
        else:
            sql, params = history_sql(with_cursor=True), (room_id, before.ms, before.id, limit)
        return await self._db.read(lambda c: [str(r[3]) for r in c.execute("EXPLAIN QUERY PLAN " + sql, params)])

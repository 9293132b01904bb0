"""The durable event outbox: every event is stored here first, and removed only
after the broker confirmed it.

Two backends with one contract, in the same store as chat:

- :class:`SQLiteOutbox` -- table ``event_outbox`` in ``DATA_DIR/parley.sqlite3``
  (WAL, ``synchronous=FULL``), used when ``MONGODB_URI`` is unset. sqlite3 is
  blocking: one dedicated thread owns the connection and runs every statement.
- :class:`MongoOutbox` -- collection ``event_outbox`` in the URI's database
  (default ``parley``), via pymongo's native asyncio client.

Entries keep their insertion order (``seq``), the JSON body exactly as it will be
sent, and delivery bookkeeping (``attempts``, ``last_attempt_at``, ``last_error``)
for the admin view. Adding an event id twice is a no-op (returns False).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger

from control.logging import redact_text
from control.private_files import create_private_sqlite

__all__ = ["MongoOutbox", "Outbox", "OutboxEntry", "SQLiteOutbox", "open_outbox"]

T = TypeVar("T")
TABLE = "event_outbox"


@dataclass
class OutboxEntry:
    event_id: str
    routing_key: str
    body: str  # the JSON envelope, as published
    created_at: float = 0.0
    attempts: int = 0
    last_attempt_at: float | None = None
    last_error: str | None = None
    seq: int | None = None


class Outbox(ABC):
    """The contract both backends implement (all coroutines, none blocks the loop)."""

    backend: str

    @abstractmethod
    async def open(self) -> None:
        """Create the table/collection and indexes if needed (idempotent)."""

    @abstractmethod
    async def add(self, entry: OutboxEntry) -> bool:
        """Store durably; False if an entry with this event id is already there."""

    @abstractmethod
    async def oldest(self, limit: int = 100) -> list[OutboxEntry]:
        """Up to ``limit`` entries in insertion order."""

    @abstractmethod
    async def remove(self, event_ids: Sequence[str]) -> int:
        """Delete delivered entries; returns how many were removed."""

    @abstractmethod
    async def record_failure(self, event_ids: Sequence[str], error: str) -> None:
        """Count a failed delivery attempt for these entries."""

    @abstractmethod
    async def count(self) -> int:
        """Entries waiting."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connection (idempotent)."""

    def describe(self) -> str:
        return self.backend


# --------------------------------------------------------------------------- SQLite


class SQLiteOutbox(Outbox):
    backend = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("the SQLite outbox is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    def _open_sync(self) -> None:
        create_private_sqlite(self.path)  # events carry participants' integrations
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an event is on disk when add() returns
        conn.execute("PRAGMA busy_timeout=30000")  # the chat store shares the file
        conn.execute(f"""CREATE TABLE IF NOT EXISTS {TABLE} (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            routing_key TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_attempt_at REAL,
            last_error TEXT)""")
        self._conn = conn

    async def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-outbox")
            try:
                await self._call(self._open_sync)
            except BaseException:
                self._executor.shutdown(wait=False)
                self._executor = None
                raise

    async def add(self, entry: OutboxEntry) -> bool:
        def insert() -> bool:
            cur = self._db().execute(
                f"INSERT OR IGNORE INTO {TABLE} (event_id, routing_key, body, created_at) VALUES (?, ?, ?, ?)",
                (entry.event_id, entry.routing_key, entry.body, entry.created_at or time.time()),
            )
            return cur.rowcount == 1

        return await self._call(insert)

    async def oldest(self, limit: int = 100) -> list[OutboxEntry]:
        def select() -> list[OutboxEntry]:
            rows = (
                self._db()
                .execute(
                    f"SELECT event_id, routing_key, body, created_at, attempts, last_attempt_at, "
                    f"last_error, seq FROM {TABLE} ORDER BY seq LIMIT ?",
                    (int(limit),),
                )
                .fetchall()
            )
            return [OutboxEntry(*row) for row in rows]

        return await self._call(select)

    async def remove(self, event_ids: Sequence[str]) -> int:
        ids = list(event_ids)

        def delete() -> int:
            removed = 0
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    cur = db.execute(f"DELETE FROM {TABLE} WHERE event_id IN ({','.join('?' * len(chunk))})", chunk)
                    removed += cur.rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return removed

        return await self._call(delete) if ids else 0

    async def record_failure(self, event_ids: Sequence[str], error: str) -> None:
        ids = list(event_ids)

        def update() -> None:
            now = time.time()
            db = self._db()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                db.execute(
                    f"UPDATE {TABLE} SET attempts = attempts + 1, last_attempt_at = ?, "
                    f"last_error = ? WHERE event_id IN ({','.join('?' * len(chunk))})",
                    [now, error[:1000], *chunk],
                )

        if ids:
            await self._call(update)

    async def count(self) -> int:
        return await self._call(lambda: self._db().execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0])

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
        return f"SQLite {self.path} (table {TABLE})"


# --------------------------------------------------------------------------- MongoDB

_seq_lock = threading.Lock()
_last_seq = 0


def _next_seq() -> int:
    """Increasing within the process, roughly time-ordered across processes."""
    global _last_seq
    with _seq_lock:
        _last_seq = max(time.time_ns(), _last_seq + 1)
        return _last_seq


class MongoOutbox(Outbox):
    backend = "mongodb"

    def __init__(
        self, uri: str, *, db_name: str | None = None, collection: str = TABLE, server_selection_timeout_ms: int = 5000
    ) -> None:
        self.uri = uri  # used exactly as given (auth mechanism, TLS... are in it)
        self.db_name = db_name
        self.collection_name = collection
        self._timeout_ms = server_selection_timeout_ms
        self._client: Any = None
        self._col: Any = None
        self._indexed = False

    async def open(self) -> None:
        if self._client is not None:
            return
        from pymongo import ASCENDING, AsyncMongoClient
        from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

        client: Any = AsyncMongoClient(self.uri, serverSelectionTimeoutMS=self._timeout_ms, appname="parley-events")
        try:
            db = client[self.db_name] if self.db_name else client.get_default_database("parley")
            col = db[self.collection_name]
            try:
                await col.create_index([("seq", ASCENDING)], name="seq_1")
            except (ServerSelectionTimeoutError, AutoReconnect) as exc:
                # MongoDB away at start: not fatal (media needs no database). Events
                # cannot be stored until it is back (publish raises meanwhile); the
                # index is made on the first use that reaches it.
                logger.warning("event outbox: MongoDB unreachable at start-up: {}", redact_text(str(exc))[:300])
                self._indexed = False
            else:
                self._indexed = True
        except BaseException:
            await client.close()
            raise
        self._client, self._col = client, col

    async def _ensure_index(self) -> None:
        if not self._indexed:
            from pymongo import ASCENDING

            await self._col.create_index([("seq", ASCENDING)], name="seq_1")
            self._indexed = True

    async def add(self, entry: OutboxEntry) -> bool:
        from pymongo.errors import DuplicateKeyError

        await self._ensure_index()
        try:
            await self._col.insert_one(
                {
                    "_id": entry.event_id,
                    "seq": entry.seq or _next_seq(),
                    "routing_key": entry.routing_key,
                    "body": entry.body,
                    "created_at": entry.created_at or time.time(),
                    "attempts": 0,
                    "last_attempt_at": None,
                    "last_error": None,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def oldest(self, limit: int = 100) -> list[OutboxEntry]:
        docs = await self._col.find().sort([("seq", 1)]).limit(int(limit)).to_list()
        return [
            OutboxEntry(
                event_id=d["_id"],
                routing_key=d["routing_key"],
                body=d["body"],
                created_at=d.get("created_at") or 0.0,
                attempts=d.get("attempts") or 0,
                last_attempt_at=d.get("last_attempt_at"),
                last_error=d.get("last_error"),
                seq=d.get("seq"),
            )
            for d in docs
        ]

    async def remove(self, event_ids: Sequence[str]) -> int:
        ids = list(event_ids)
        if not ids:
            return 0
        result = await self._col.delete_many({"_id": {"$in": ids}})
        return int(result.deleted_count)

    async def record_failure(self, event_ids: Sequence[str], error: str) -> None:
        ids = list(event_ids)
        if ids:
            await self._col.update_many(
                {"_id": {"$in": ids}},
                {"$inc": {"attempts": 1}, "$set": {"last_attempt_at": time.time(), "last_error": error[:1000]}},
            )

    async def count(self) -> int:
        return int(await self._col.count_documents({}))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def describe(self) -> str:
        name = self._col.database.name if self._col is not None else (self.db_name or "default")
        return f"MongoDB database {name} (collection {self.collection_name})"


def open_outbox(settings: Any) -> Outbox:
    """The outbox in the chat store's backend: MongoDB if ``MONGODB_URI``, else SQLite."""
    if settings.mongodb_uri:
        return MongoOutbox(
            settings.mongodb_uri, server_selection_timeout_ms=getattr(settings, "mongodb_timeout_ms", 5000)
        )
    return SQLiteOutbox(settings.sqlite_path)

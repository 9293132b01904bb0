"""The MongoDB backend: pymongo's ``AsyncMongoClient`` (``MONGODB_URI``).

Collections (in the URI's database, ``parley`` if it names none):

- ``chat_messages``: ``{_id: <ULID>, roomId, meetingId, type, sender: {peerId,
  displayName}, text, file: {bucket, key, name, size, mimeType}, event, data,
  createdAt: <date>}``; index ``room_time`` ``{roomId: 1, createdAt: -1, _id: -1}``
  serves history (the query names it with ``hint``, so a page is an index range scan
  of ``limit`` entries whatever the planner thinks).
- ``meetings``: ``{_id: <meetingId>, roomId, startedAt, endedAt}``, a document of
  constant size; indexes ``room_started`` ``{roomId: 1, startedAt: -1, _id: -1}``
  and ``open`` ``{endedAt: 1}``.
- ``meeting_participants``: one document per stay of a peer in a meeting, ``{_id:
  "<meetingId>:<joinedAt ms>:<peerId>", meetingId, peerId, displayName, email,
  joinedAt, leftAt}``; index ``meeting_joined`` ``{meetingId: 1, joinedAt: 1, _id: 1}``.
- ``meeting_recordings``: ``{_id: "<meetingId>:<bucket>/<key>", meetingId, seq,
  recording: {...}}``; index ``meeting_seq`` ``{meetingId: 1, seq: 1}``.

  A meeting is never one growing document (a ``$push`` per join reached MongoDB's
  16 MB document limit in a long meeting, and then every update of it failed, the
  recording's too). Meetings written by earlier versions, with ``participants`` and
  ``recordings`` arrays inside, are still read (and ended) as they are.

Indexes are created at start-up (idempotently; a same-named index with another
definition is a clear error). Writes use the client's write concern, which must be
acknowledged (``w >= 1``; ``MONGODB_WRITE_CONCERN`` overrides the URI's). Every
write is safe to retry (ids are generated here, ``$push`` is guarded), and
writes that hit a dropped connection (a server restart, a fail-over) are retried
until ``MONGODB_TIMEOUT_MS`` runs out; a retried insert that finds its own ``_id``
already there counts as done.

A server that cannot be reached is not fatal when the store is started with
``require_reachable=False`` (the app does: media needs no database): the store
starts, every operation answers :class:`StoreUnavailable` (503
``store_unavailable``) after at most ``MONGODB_TIMEOUT_MS`` while the server is
away, a background task reconnects (creating the indexes the first time) and
:meth:`MongoStore.wait_available` returns once it is back. Wrong credentials and
an unacknowledged write concern still stop start-up: they are configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import pymongo
from loguru import logger
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from control.logging import redact_text
from control.retry import backoff_delays
from control.store.base import DEFAULT_PAGE, ChatStore, MeetingStore, Store
from control.store.errors import StoreError, StoreUnavailable
from control.store.ids import datetime_to_ms
from control.store.models import ChatMessage, Cursor, Meeting, Participant, RecordingRef

__all__ = ["HISTORY_INDEX", "MEETINGS", "MESSAGES", "PARTICIPANTS", "RECORDINGS", "MongoStore", "history_filter"]

T = TypeVar("T")

MESSAGES = "chat_messages"
MEETINGS = "meetings"
PARTICIPANTS = "meeting_participants"
RECORDINGS = "meeting_recordings"
HISTORY_INDEX = "room_time"
MEETINGS_INDEX = "room_started"
DEFAULT_DATABASE = "parley"
#: MongoDB's error codes for failed authentication.
_AUTH_CODES = {18, 11}
_DUPLICATE_KEY = 11000

_MESSAGE_INDEXES = [
    IndexModel([("roomId", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)], name=HISTORY_INDEX),
]
_MEETING_INDEXES = [
    IndexModel([("roomId", ASCENDING), ("startedAt", DESCENDING), ("_id", DESCENDING)], name=MEETINGS_INDEX),
    IndexModel([("endedAt", ASCENDING)], name="open"),
]
_PARTICIPANT_INDEXES = [
    IndexModel([("meetingId", ASCENDING), ("joinedAt", ASCENDING), ("_id", ASCENDING)], name="meeting_joined"),
]
_RECORDING_INDEXES = [
    IndexModel([("meetingId", ASCENDING), ("seq", ASCENDING)], name="meeting_seq"),
]
_SORT_PARTICIPANTS = [("joinedAt", ASCENDING), ("_id", ASCENDING)]
#: How often the background reconnect pings a server that is away (seconds, backoff).
_RECONNECT_INITIAL = 0.25
_RECONNECT_MAX = 2.0
_SORT_MESSAGES = [("createdAt", DESCENDING), ("_id", DESCENDING)]
_SORT_MEETINGS = [("startedAt", DESCENDING), ("_id", DESCENDING)]


def history_filter(room_id: str, before: Cursor | None, time_field: str = "createdAt") -> dict[str, Any]:
    """Documents of the room strictly before ``before`` in (time, _id) order.

    Written as one range on the time (``$lte``) plus a residual on the (rare) ties,
    so the index bounds are ``roomId = r, time <= t``: the scan starts at the cursor.
    """
    if before is None:
        return {"roomId": room_id}
    t = before.time
    return {
        "roomId": room_id,
        time_field: {"$lte": t},
        "$nor": [{time_field: t, "_id": {"$gte": before.id}}],
    }


# --------------------------------------------------------------------------- docs


def _message_doc(m: ChatMessage) -> dict[str, Any]:
    doc = m.model_dump(by_alias=True, exclude_none=True)
    doc["_id"] = doc.pop("id")
    return doc


def _doc_message(doc: dict[str, Any]) -> ChatMessage:
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    return ChatMessage.model_validate(doc)


def _doc_meeting(
    doc: dict[str, Any] | None,
    participants: Sequence[dict[str, Any]] = (),
    recordings: Sequence[dict[str, Any]] = (),
) -> Meeting | None:
    """The meeting of a ``meetings`` document and its participation and recording
    documents (after the entries of a legacy document's own arrays, if any)."""
    if doc is None:
        return None
    doc = dict(doc)
    doc["meetingId"] = doc.pop("_id")
    doc["participants"] = [*doc.get("participants", ()), *(_entry(p) for p in participants)]
    doc["recordings"] = [*doc.get("recordings", ()), *(r["recording"] for r in recordings)]
    return Meeting.model_validate(doc)


def _entry(participation: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in participation.items() if k not in ("_id", "meetingId")}


def _participation_id(meeting_id: str, participant: Participant) -> str:
    """Unique per (meeting, peer, join time): a retried insert finds itself. The
    meeting id (a ULID) and the time have no ``:``, so any peer id fits after them."""
    return f"{meeting_id}:{datetime_to_ms(participant.joined_at)}:{participant.peer_id}"


class _Unreachable(StoreUnavailable):
    """No server answered (as opposed to refused credentials or a bad index)."""


def _is_auth_error(exc: OperationFailure) -> bool:
    """Authentication refused (code 18 on MongoDB; some wire servers send only the text)."""
    details = exc.details or {}
    return (
        exc.code in _AUTH_CODES
        or details.get("codeName") == "AuthenticationFailed"
        or "authentication failed" in str(details.get("errmsg") or exc).lower()
    )


def _redacted_uri(uri: str) -> str:
    return redact_text(uri)


def _uri_user(uri: str) -> str | None:
    try:
        return urllib.parse.unquote(urllib.parse.urlsplit(uri).username or "") or None
    except ValueError:
        return None


def parse_write_concern(value: str | int | None) -> int | str | None:
    """``"1"`` -> 1, ``"majority"`` -> ``"majority"``; ``0`` is refused (unacknowledged)."""
    if value is None or value == "":
        return None
    if isinstance(value, int) or str(value).strip().isdigit():
        w = int(value)
        if w < 1:
            raise ValueError("must be at least 1 (w=0 is unacknowledged: messages could be lost)")
        return w
    return str(value).strip()


# --------------------------------------------------------------------------- retries


class _Retrier:
    def __init__(self, store: MongoStore, where: str, timeout: float) -> None:
        self.store = store
        self.where = where
        self.timeout = timeout

    async def run(self, what: str, op: Callable[[int], Awaitable[T]]) -> T:
        """Run ``op(attempt)`` once the store is connected (indexes made); retry on a
        dropped connection until the timeout. The store learns from the outcome
        whether the server is away (it then reconnects in the background)."""
        try:
            await self.store.connect()
            result = await self._run(what, op)
        except _Unreachable as exc:
            self.store.lost(exc)
            raise
        self.store.reached()
        return result

    async def _run(self, what: str, op: Callable[[int], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                return await op(attempt)
            except ServerSelectionTimeoutError as exc:  # already waited the whole timeout
                raise _Unreachable(
                    f"MongoDB {self.where} is unreachable ({what}: no server answered "
                    f"within {self.timeout:g}s): {redact_text(str(exc).split(',', 1)[0])}"
                ) from exc
            except AutoReconnect as exc:
                attempt += 1
                if time.monotonic() >= deadline:
                    raise _Unreachable(
                        f"MongoDB {self.where}: {what} failed, connection lost and not back "
                        f"within {self.timeout:g}s: {redact_text(str(exc))}"
                    ) from exc
                logger.warning("MongoDB connection lost during {} ({}); retrying", what, redact_text(str(exc)))
                await asyncio.sleep(min(0.05 * 2**attempt, 0.5))
            except OperationFailure as exc:
                if _is_auth_error(exc):
                    raise StoreUnavailable(
                        f"MongoDB {self.where} refused the credentials: {exc.details.get('errmsg') if exc.details else exc}"
                    ) from exc
                raise StoreError(f"MongoDB: {what} failed: {redact_text(str(exc))}") from exc
            except PyMongoError as exc:
                raise StoreError(f"MongoDB: {what} failed: {redact_text(str(exc))}") from exc


# --------------------------------------------------------------------------- stores


class MongoChatStore(ChatStore):
    def __init__(self, store: MongoStore) -> None:
        self._s = store

    @property
    def _col(self) -> Any:
        return self._s.db[MESSAGES]

    async def insert_message(self, message: ChatMessage) -> None:
        doc = _message_doc(message)

        async def op(attempt: int) -> None:
            try:
                await self._col.insert_one(doc)
            except DuplicateKeyError:
                if attempt == 0:
                    raise StoreError(f"message id {message.id} already exists") from None
                # an earlier attempt was applied; its acknowledgement was lost

        await self._s.retry.run("insert message", op)

    async def insert_messages(self, messages: Sequence[ChatMessage]) -> None:
        docs = [_message_doc(m) for m in messages]
        if not docs:
            return

        async def op(attempt: int) -> None:
            try:
                await self._col.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if attempt == 0 or any(e.get("code") != _DUPLICATE_KEY for e in errors):
                    raise StoreError(f"MongoDB: insert of {len(docs)} messages failed: {errors[:3]}") from None

        await self._s.retry.run("insert messages", op)

    async def history(
        self, room_id: str, *, limit: int = DEFAULT_PAGE, before: Cursor | None = None
    ) -> list[ChatMessage]:
        async def op(_: int) -> list[ChatMessage]:
            cursor = (
                self._col.find(history_filter(room_id, before)).sort(_SORT_MESSAGES).hint(HISTORY_INDEX).limit(limit)
            )
            return [_doc_message(d) async for d in cursor]

        return await self._s.retry.run("read history", op)

    async def get_message(self, message_id: str) -> ChatMessage | None:
        async def op(_: int) -> ChatMessage | None:
            doc = await self._col.find_one({"_id": message_id})
            return _doc_message(doc) if doc else None

        return await self._s.retry.run("read message", op)

    async def count_messages(self, room_id: str) -> int:
        # The count command, not count_documents(): that one is an aggregation, which
        # some servers cap (mongoeco: 50,000 documents); count is answered from the
        # (roomId, ...) index by MongoDB.
        async def op(_: int) -> int:
            reply = await self._s.db.command("count", MESSAGES, query={"roomId": room_id})
            return int(reply["n"])

        return await self._s.retry.run("count messages", op)

    async def delete_room_messages(self, room_id: str) -> int:
        async def op(_: int) -> int:
            return (await self._col.delete_many({"roomId": room_id})).deleted_count

        return await self._s.retry.run("delete room messages", op)


class MongoMeetingStore(MeetingStore):
    """Meetings as three collections: the meeting, its participations, its recordings
    (see the module docstring); every write is idempotent, so retries are safe."""

    def __init__(self, store: MongoStore) -> None:
        self._s = store

    @property
    def _col(self) -> Any:
        return self._s.db[MEETINGS]

    @property
    def _participants(self) -> Any:
        return self._s.db[PARTICIPANTS]

    @property
    def _recordings(self) -> Any:
        return self._s.db[RECORDINGS]

    async def _load(self, docs: list[dict[str, Any]]) -> list[Meeting]:
        """The meetings of ``docs`` (in order) with their participants and recordings."""
        if not docs:
            return []
        ids = [d["_id"] for d in docs]
        participants: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        async for p in self._participants.find({"meetingId": {"$in": ids}}).sort(_SORT_PARTICIPANTS):
            participants[p["meetingId"]].append(p)
        recordings: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        async for r in self._recordings.find({"meetingId": {"$in": ids}}).sort([("seq", ASCENDING)]):
            recordings[r["meetingId"]].append(r)
        return [m for d in docs if (m := _doc_meeting(d, participants[d["_id"]], recordings[d["_id"]])) is not None]

    async def _get(self, meeting_id: str) -> Meeting | None:
        doc = await self._col.find_one({"_id": meeting_id})
        found = await self._load([doc] if doc is not None else [])
        return found[0] if found else None

    async def _exists(self, meeting_id: str) -> bool:
        return await self._col.find_one({"_id": meeting_id}, projection={"_id": 1}) is not None

    async def open_meeting(self, room_id: str, *, meeting_id: str, started_at: datetime) -> Meeting:
        async def op(_: int) -> Meeting:
            doc = await self._col.find_one_and_update(
                {"roomId": room_id, "endedAt": None},
                {"$setOnInsert": {"_id": meeting_id, "startedAt": started_at}},
                upsert=True,
                sort=_SORT_MEETINGS,
                return_document=ReturnDocument.AFTER,
            )
            [meeting] = await self._load([doc])
            return meeting

        return await self._s.retry.run("open meeting", op)

    async def current_meeting(self, room_id: str) -> Meeting | None:
        async def op(_: int) -> Meeting | None:
            doc = await self._col.find_one({"roomId": room_id, "endedAt": None}, sort=_SORT_MEETINGS)
            found = await self._load([doc] if doc is not None else [])
            return found[0] if found else None

        return await self._s.retry.run("read meeting", op)

    async def add_participant(self, meeting_id: str, participant: Participant) -> Meeting | None:
        doc = {
            "_id": _participation_id(meeting_id, participant),
            "meetingId": meeting_id,
            **participant.model_dump(by_alias=True),
        }

        async def op(_: int) -> Meeting | None:
            if not await self._exists(meeting_id):
                return None
            with contextlib.suppress(DuplicateKeyError):  # already there (a retry)
                await self._participants.insert_one(doc)
            return await self._get(meeting_id)

        return await self._s.retry.run("add participant", op)

    async def participant_left(self, meeting_id: str, peer_id: str, left_at: datetime) -> Meeting | None:
        async def op(_: int) -> Meeting | None:
            await self._participants.update_many(
                {"meetingId": meeting_id, "peerId": peer_id, "leftAt": None}, {"$set": {"leftAt": left_at}}
            )
            return await self._get(meeting_id)

        return await self._s.retry.run("participant left", op)

    async def end_meeting(self, meeting_id: str, ended_at: datetime) -> Meeting | None:
        async def op(_: int) -> Meeting | None:
            await self._col.update_one({"_id": meeting_id, "endedAt": None}, {"$set": {"endedAt": ended_at}})
            doc = await self._col.find_one({"_id": meeting_id})
            if doc is None:
                return None
            # Whoever is still in leaves when the meeting ends (also on a retry after
            # a crash between the two writes: the meeting's own end time is used).
            ended = doc["endedAt"]
            await self._participants.update_many({"meetingId": meeting_id, "leftAt": None}, {"$set": {"leftAt": ended}})
            if any(p.get("leftAt") is None for p in doc.get("participants", ())):  # a legacy document
                await self._col.update_one(
                    {"_id": meeting_id, "participants": {"$elemMatch": {"leftAt": None}}},
                    {"$set": {"participants.$[p].leftAt": ended}},
                    array_filters=[{"p.leftAt": None}],
                )
            return await self._get(meeting_id)

        return await self._s.retry.run("end meeting", op)

    async def add_recording(self, meeting_id: str, recording: RecordingRef) -> Meeting | None:
        doc = {
            "_id": f"{meeting_id}:{recording.bucket}/{recording.key}",
            "meetingId": meeting_id,
            "seq": time.time_ns(),
            "recording": recording.model_dump(by_alias=True, exclude_none=True),
        }

        async def op(_: int) -> Meeting | None:
            if not await self._exists(meeting_id):
                return None
            meeting = await self._get(meeting_id)
            if meeting is not None and any(
                r.bucket == recording.bucket and r.key == recording.key for r in meeting.recordings
            ):
                return meeting  # attached already (idempotent per bucket+key)
            with contextlib.suppress(DuplicateKeyError):
                await self._recordings.insert_one(doc)
            return await self._get(meeting_id)

        return await self._s.retry.run("add recording", op)

    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        async def op(_: int) -> Meeting | None:
            return await self._get(meeting_id)

        return await self._s.retry.run("read meeting", op)

    async def list_meetings(
        self, room_id: str, *, limit: int = DEFAULT_PAGE, before: Cursor | None = None
    ) -> list[Meeting]:
        async def op(_: int) -> list[Meeting]:
            cursor = (
                self._col.find(history_filter(room_id, before, "startedAt"))
                .sort(_SORT_MEETINGS)
                .hint(MEETINGS_INDEX)
                .limit(limit)
            )
            return await self._load([d async for d in cursor])

        return await self._s.retry.run("list meetings", op)

    async def open_meetings(self) -> list[Meeting]:
        async def op(_: int) -> list[Meeting]:
            cursor = self._col.find({"endedAt": None}).sort([("startedAt", ASCENDING)])
            return await self._load([d async for d in cursor])

        return await self._s.retry.run("list open meetings", op)


class MongoStore(Store):
    """Chat and meetings in MongoDB.

    ``uri`` is used as given (credentials, ``authSource``, ``authMechanism``, TLS...);
    ``database`` overrides the URI's database; ``write_concern`` (``1``, ``2``,
    ``"majority"``) overrides the URI's ``w``; ``timeout`` (seconds) bounds server
    selection, connecting, each socket operation, and write retries.
    """

    backend = "mongodb"

    def __init__(
        self,
        uri: str,
        *,
        database: str | None = None,
        write_concern: int | str | None = None,
        timeout: float = 5.0,
        **client_options: Any,
    ) -> None:
        self.uri = uri
        self.timeout = timeout
        self._database = database
        self._write_concern = parse_write_concern(write_concern)
        self._client_options = client_options
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self.db: Any = None
        self.retry = _Retrier(self, _redacted_uri(uri), timeout)
        self.chat = MongoChatStore(self)
        self.meetings = MongoMeetingStore(self)
        #: Set while the server answers (cleared when an operation found it away).
        self._up = asyncio.Event()
        #: The indexes exist (made once, on the first successful connection).
        self._indexed = False
        self._connecting = asyncio.Lock()
        self._reconnect: asyncio.Task[None] | None = None

    def describe(self) -> str:
        name = self.db.name if self.db is not None else (self._database or "?")
        return f"MongoDB {_redacted_uri(self.uri)} database {name}"

    @property
    def client(self) -> AsyncMongoClient[dict[str, Any]]:
        if self._client is None:
            raise StoreError("the MongoDB store is not started")
        return self._client

    @property
    def available(self) -> bool:
        return self._up.is_set()

    async def wait_available(self) -> None:
        await self._up.wait()

    async def start(self, *, require_reachable: bool = True) -> None:
        if self._client is not None:
            return
        where = _redacted_uri(self.uri)
        ms = int(self.timeout * 1000)
        options: dict[str, Any] = {
            "tz_aware": True,
            "tzinfo": UTC,
            "serverSelectionTimeoutMS": ms,
            "connectTimeoutMS": ms,
            "socketTimeoutMS": ms,
            "appname": "parley",
        }
        if self._write_concern is not None:
            options["w"] = self._write_concern
        options.update(self._client_options)
        try:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.uri, **options)
        except (ConfigurationError, ValueError, TypeError) as exc:
            raise StoreUnavailable(f"MONGODB_URI {where} is not usable: {redact_text(str(exc))}") from exc
        try:
            if not client.write_concern.acknowledged:
                raise StoreUnavailable(
                    f"MongoDB {where}: write concern w=0 is unacknowledged and could lose "
                    "messages; use w=1 or more (MONGODB_WRITE_CONCERN)"
                )
            db = client.get_default_database(default=self._database or DEFAULT_DATABASE)
            if self._database:
                db = client[self._database]
            self._client, self.db = client, db
            try:
                await self.connect()
            except _Unreachable as exc:
                if require_reachable:
                    raise
                logger.warning("{}; chat and meetings answer 503 until it is back (reconnecting)", exc)
                self.lost(exc)
        except BaseException:
            self._client, self.db = None, None
            await client.close()
            raise
        logger.debug("MongoDB store ready: {}", self.describe())

    async def connect(self) -> None:
        """Make sure the server answered once and the indexes exist; after that a
        no-op (operations find a lost server themselves). ``_Unreachable`` if no
        server answers, :class:`StoreUnavailable` for refused credentials."""
        if self._indexed:
            return
        async with self._connecting:
            if self._indexed:
                return
            await self._ping()
            await self.create_indexes()
            self._indexed = True
            self.reached()

    async def _ping(self) -> None:
        where = _redacted_uri(self.uri)
        try:
            await self.client.admin.command("ping")
        except ServerSelectionTimeoutError as exc:
            raise _Unreachable(
                f"MongoDB {where} is unreachable: no server answered within "
                f"{self.timeout:g}s ({redact_text(str(exc).split(',', 1)[0])})"
            ) from exc
        except AutoReconnect as exc:
            raise _Unreachable(f"MongoDB {where} is unreachable: {redact_text(str(exc))}") from exc
        except OperationFailure as exc:
            if _is_auth_error(exc):
                user = _uri_user(self.uri)
                raise StoreUnavailable(
                    f"MongoDB {where} refused the credentials"
                    + (f" of user {user!r}" if user else "")
                    + f": {exc.details.get('errmsg') if exc.details else exc} "
                    "(check the user, password, authSource and authMechanism in MONGODB_URI)"
                ) from exc
            raise StoreUnavailable(f"MongoDB {where}: ping failed: {redact_text(str(exc))}") from exc
        except PyMongoError as exc:
            raise StoreUnavailable(f"MongoDB {where}: {type(exc).__name__}: {redact_text(str(exc))}") from exc

    def reached(self) -> None:
        """An operation succeeded: the server is there."""
        if not self._up.is_set():
            self._up.set()
            logger.info("MongoDB {} reachable", _redacted_uri(self.uri))

    def lost(self, error: StoreUnavailable) -> None:
        """An operation found no server: reconnect in the background (once)."""
        if self._up.is_set():
            logger.warning("MongoDB lost: {}; reconnecting", error)
        self._up.clear()
        if self._client is not None and (self._reconnect is None or self._reconnect.done()):
            self._reconnect = asyncio.create_task(self._reconnect_loop(), name="mongodb-reconnect")

    async def _reconnect_loop(self) -> None:
        """Ping (short attempts) until the server answers; then make the indexes if
        they were never made and wake :meth:`wait_available`."""
        for delay in backoff_delays(_RECONNECT_INITIAL, _RECONNECT_MAX):
            await asyncio.sleep(delay)
            if self._client is None or self._up.is_set():
                return
            try:
                with pymongo.timeout(min(self.timeout, 1.0)):
                    await self._ping()
                await self.connect()
            except StoreUnavailable as exc:
                logger.debug("MongoDB still away: {}", exc)
                continue
            except PyMongoError as exc:  # a timeout of the short attempt
                logger.debug("MongoDB still away: {}", redact_text(str(exc)))
                continue
            self.reached()
            return

    async def create_indexes(self) -> None:
        """Create the indexes history and meetings need (idempotent)."""
        for name, models in (
            (MESSAGES, _MESSAGE_INDEXES),
            (MEETINGS, _MEETING_INDEXES),
            (PARTICIPANTS, _PARTICIPANT_INDEXES),
            (RECORDINGS, _RECORDING_INDEXES),
        ):
            try:
                await self.db[name].create_indexes(models)
            except (ServerSelectionTimeoutError, AutoReconnect) as exc:
                raise _Unreachable(f"MongoDB: creating indexes on {name} failed: {redact_text(str(exc))}") from exc
            except OperationFailure as exc:
                raise StoreUnavailable(
                    f"MongoDB: cannot create the indexes of {self.db.name}.{name}: "
                    f"{redact_text(str(exc))} (an index with the same name but another "
                    "definition must be dropped first)"
                ) from exc
            except PyMongoError as exc:
                raise StoreUnavailable(f"MongoDB: creating indexes on {name} failed: {redact_text(str(exc))}") from exc

    async def close(self) -> None:
        reconnect, self._reconnect = self._reconnect, None
        if reconnect is not None:
            reconnect.cancel()
            with contextlib.suppress(BaseException):
                await reconnect
        client, self._client = self._client, None
        if client is not None:
            await client.close()

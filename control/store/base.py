"""The store interface: a chat store and a meeting store behind one ``Store``.

Two backends implement it (the same contract tests run against both):

- :class:`control.store.mongo.MongoStore`: MongoDB through pymongo's
  ``AsyncMongoClient`` (``MONGODB_URI``);
- :class:`control.store.sqlite.SQLiteStore`: an embedded SQLite file (stdlib
  ``sqlite3``, WAL, off the event loop), the default.

:func:`control.store.create_store` picks one from the settings. A store is started
(``await store.start()``: connect, create schema/indexes, fail clearly when the
backend is unreachable) and closed (``await store.close()``); ``async with`` does both.

Every write returns only once the backend acknowledged it (MongoDB write concern
w>=1, SQLite commit with ``synchronous=FULL``), so what a caller was told is stored
survives a crash of this process or of the database server.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType

from control.store.models import ChatMessage, Cursor, Meeting, Participant, RecordingRef

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "ChatStore", "MeetingStore", "Store"]

#: History/meeting list page size when none is given, and the largest allowed.
DEFAULT_PAGE = 50
MAX_PAGE = 200


class ChatStore(ABC):
    """Chat messages, per room, read newest first."""

    @abstractmethod
    async def insert_message(self, message: ChatMessage) -> None:
        """Store one message (its id and createdAt are set by the caller)."""

    @abstractmethod
    async def insert_messages(self, messages: Sequence[ChatMessage]) -> None:
        """Store many messages at once (imports, benchmarks)."""

    @abstractmethod
    async def history(
        self, room_id: str, *, limit: int = DEFAULT_PAGE, before: Cursor | None = None
    ) -> list[ChatMessage]:
        """Up to ``limit`` messages of the room older than ``before`` (all if None),
        newest first, ordered by (createdAt, id) descending; served by the
        (roomId, createdAt desc, id desc) index."""

    @abstractmethod
    async def get_message(self, message_id: str) -> ChatMessage | None: ...

    @abstractmethod
    async def count_messages(self, room_id: str) -> int: ...

    @abstractmethod
    async def delete_room_messages(self, room_id: str) -> int:
        """Delete every message of the room; returns how many were deleted."""


class MeetingStore(ABC):
    """Meetings: one record per room life, updated as things happen."""

    @abstractmethod
    async def open_meeting(self, room_id: str, *, meeting_id: str, started_at: datetime) -> Meeting:
        """The room's open meeting (``endedAt`` unset); created with ``meeting_id``
        and ``started_at`` if there is none."""

    @abstractmethod
    async def current_meeting(self, room_id: str) -> Meeting | None:
        """The room's open meeting, if any."""

    @abstractmethod
    async def add_participant(self, meeting_id: str, participant: Participant) -> Meeting | None:
        """Append a participant entry (idempotent for the same peerId+joinedAt);
        ``None`` if there is no such meeting."""

    @abstractmethod
    async def participant_left(self, meeting_id: str, peer_id: str, left_at: datetime) -> Meeting | None:
        """Set ``leftAt`` on the peer's entries that have none."""

    @abstractmethod
    async def end_meeting(self, meeting_id: str, ended_at: datetime) -> Meeting | None:
        """Set ``endedAt`` (if unset) and ``leftAt`` of everyone still in."""

    @abstractmethod
    async def add_recording(self, meeting_id: str, recording: RecordingRef) -> Meeting | None:
        """Append a recording reference (idempotent for the same bucket+key)."""

    @abstractmethod
    async def get_meeting(self, meeting_id: str) -> Meeting | None: ...

    @abstractmethod
    async def list_meetings(
        self, room_id: str, *, limit: int = DEFAULT_PAGE, before: Cursor | None = None
    ) -> list[Meeting]:
        """The room's meetings, newest (startedAt, meetingId) first."""

    @abstractmethod
    async def open_meetings(self) -> list[Meeting]:
        """Every meeting without ``endedAt`` (start-up recovery after a crash)."""


class Store(ABC):
    """A started backend: ``.chat`` and ``.meetings``."""

    #: ``"sqlite"`` or ``"mongodb"``.
    backend: str
    chat: ChatStore
    meetings: MeetingStore

    @abstractmethod
    async def start(self, *, require_reachable: bool = True) -> None:
        """Connect, check the backend answers, create the schema/indexes (idempotent).
        Raises :class:`~control.store.errors.StoreUnavailable` with a clear message.

        ``require_reachable=False``: a database server that does not answer yet is
        not an error (configuration errors still are): the store starts, its
        operations raise ``StoreUnavailable`` until the server is back, and it
        reconnects by itself (:meth:`wait_available`)."""

    @property
    def available(self) -> bool:
        """Whether the backend answered last time (an embedded one always does)."""
        return True

    async def wait_available(self) -> None:  # noqa: B027 - embedded backends are always there
        """Return once the backend answers (at once for an embedded one)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections/threads (idempotent)."""

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, credentials masked (for logs)."""

    async def __aenter__(self) -> Store:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

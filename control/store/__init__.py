"""Chat and meeting storage: one small interface, two backends.

    store = create_store(settings)        # MongoDB if MONGODB_URI is set, else SQLite
    await store.start()                   # connect, create indexes; StoreUnavailable if not
    await store.chat.insert_message(msg)
    page = await store.chat.history(room_id, limit=50, before=cursor)
    meeting = await store.meetings.open_meeting(room_id, meeting_id=new_id(), started_at=now)
    await store.close()

See :mod:`control.store.base` for the contract, :mod:`control.store.models` for the
records, :mod:`control.store.ids` for ids and id validation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from control.store.base import DEFAULT_PAGE, MAX_PAGE, ChatStore, MeetingStore, Store
from control.store.errors import StoreError, StoreUnavailable
from control.store.ids import InvalidId, new_id, validate_peer_id, validate_room_id
from control.store.models import (
    ChatMessage,
    Cursor,
    FileRef,
    InvalidCursor,
    Meeting,
    Participant,
    RecordingRef,
    Sender,
)

if TYPE_CHECKING:
    from control.config import Settings

__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "ChatMessage",
    "ChatStore",
    "Cursor",
    "FileRef",
    "InvalidCursor",
    "InvalidId",
    "Meeting",
    "MeetingStore",
    "Participant",
    "RecordingRef",
    "Sender",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "create_store",
    "new_id",
    "validate_peer_id",
    "validate_room_id",
]


def create_store(settings: Settings) -> Store:
    """The backend the settings choose (not started): MongoDB when ``MONGODB_URI``
    is set, else the SQLite file ``settings.sqlite_path``."""
    if settings.mongodb_uri:
        from control.store.mongo import MongoStore

        return MongoStore(
            settings.mongodb_uri,
            write_concern=getattr(settings, "mongodb_write_concern", None),
            timeout=getattr(settings, "mongodb_timeout_ms", 5000) / 1000,
        )
    from control.store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path)

"""Typed ``web.AppKey``s: how the aiohttp application holds its shared objects.

Use ``app[SETTINGS]`` / ``request.app[WORKER_POOL]`` instead of module globals;
type checkers see the value's type. Each subsystem that starts something in a
``cleanup_ctx`` stores it under a key declared here (or in its own module,
next to its cleanup_ctx, when it is private to that subsystem).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import web

from control.config import Settings

if TYPE_CHECKING:  # keep this module importable without the native worker layer
    from control.chat.meetings import MeetingService
    from control.chat.service import ChatService
    from control.events.bus import EventBus
    from control.rooms.manager import RoomManager
    from control.storage.base import ObjectStore
    from control.storage.uploads import UploadQueue
    from control.store.base import Store
    from workers.worker_pool import WorkerPool

#: The validated configuration the app was created with.
SETTINGS: Final[web.AppKey[Settings]] = web.AppKey("settings", Settings)

#: The running mediasoup worker pool (set by ``control.app.worker_pool_ctx``).
WORKER_POOL: Final[web.AppKey[WorkerPool]] = web.AppKey("worker_pool")

# Naming: the *database* (``control/store``: chat messages and meetings, MongoDB or
# SQLite) is ``DATABASE`` and a variable holding it is ``database``; the *object
# storage* (``control/storage``: recordings and chat files, S3 or a local directory)
# is ``OBJECTS`` and a variable holding it is ``objects``.

#: The object store, S3/MinIO or local directory (``control.storage.setup``).
OBJECTS: Final[web.AppKey[ObjectStore]] = web.AppKey("objects")

#: The durable upload queue over ``OBJECTS`` (``control.storage.setup``).
UPLOADS: Final[web.AppKey[UploadQueue]] = web.AppKey("uploads")

#: The event bus: outbox + RabbitMQ relay (``control.events.setup``).
EVENTS: Final[web.AppKey[EventBus]] = web.AppKey("events")

#: The chat + meetings database, MongoDB or SQLite (``control.chat.setup``).
DATABASE: Final[web.AppKey[Store]] = web.AppKey("database")

#: The chat service: send, history, system messages (``control.chat.setup``).
CHAT: Final[web.AppKey[ChatService]] = web.AppKey("chat")

#: Meetings: joins, leaves, recordings (``control.chat.setup``; also ``CHAT.meetings``).
MEETINGS: Final[web.AppKey[MeetingService]] = web.AppKey("meetings")

#: The rooms and their peers, plus one WebRtcServer per worker (``control.rooms.manager.rooms_ctx``).
ROOMS: Final[web.AppKey[RoomManager]] = web.AppKey("rooms")

__all__ = [
    "CHAT",
    "DATABASE",
    "EVENTS",
    "MEETINGS",
    "OBJECTS",
    "ROOMS",
    "SETTINGS",
    "UPLOADS",
    "WORKER_POOL",
]

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
    from control.store.base import Store
    from workers.worker_pool import WorkerPool

#: The validated configuration the app was created with.
SETTINGS: Final[web.AppKey[Settings]] = web.AppKey("settings", Settings)

#: The running mediasoup worker pool (set by ``control.app.worker_pool_ctx``).
WORKER_POOL: Final[web.AppKey[WorkerPool]] = web.AppKey("worker_pool")

#: The object store, S3/MinIO or local directory (``control.storage.service.storage_ctx``).
STORAGE: Final[web.AppKey[ObjectStore]] = web.AppKey("storage")

#: The event bus: outbox + RabbitMQ relay (``control.events.service.events_ctx``).
EVENTS: Final[web.AppKey[EventBus]] = web.AppKey("events")

#: The chat + meetings store, MongoDB or SQLite (``control.chat.chat_ctx``).
STORE: Final[web.AppKey[Store]] = web.AppKey("store")

#: The chat service: send, history, system messages (``control.chat.chat_ctx``).
CHAT: Final[web.AppKey[ChatService]] = web.AppKey("chat")

#: Meetings: joins, leaves, recordings (``control.chat.chat_ctx``; also ``CHAT.meetings``).
MEETINGS: Final[web.AppKey[MeetingService]] = web.AppKey("meetings")

#: The rooms and their peers, plus one WebRtcServer per worker (``control.rooms.manager.rooms_ctx``).
ROOMS: Final[web.AppKey[RoomManager]] = web.AppKey("rooms")

__all__ = ["CHAT", "EVENTS", "MEETINGS", "ROOMS", "SETTINGS", "STORAGE", "STORE", "WORKER_POOL"]

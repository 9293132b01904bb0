"""Composite recording of a room, wired to signaling, REST, chat, storage and events.

- :mod:`control.recording.service`: :class:`RecordingService` (``app[RECORDINGS]``),
  ``startRecording`` / ``stopRecording`` over signaling, the room's notifications,
  the upload and ``recording.completed``, recovery after a crash; the domain errors.
- :mod:`control.recording.routes`: ``POST/DELETE /api/rooms/{roomId}/recording`` (roomRecord or roomAdmin).
- :func:`setup`: its cleanup_ctx and routes.

The media side (PlainTransports, FFmpeg, segments, layout) is the top-level
``recording`` package, which knows nothing of ``control``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from loguru import logger

from control.chat.meetings import MeetingService
from control.chat.service import ChatService
from control.config import Settings
from control.recording import routes as _routes_module
from control.recording.service import (
    RECORDINGS,
    AlreadyRecording,
    NoDiskSpace,
    NothingToRecord,
    NotRecording,
    RecordingFailed,
    RecordingService,
)
from control.storage.uploads import UploadQueue

if TYPE_CHECKING:
    from control.events.bus import EventBus
    from control.rooms.manager import RoomManager

__all__ = [
    "RECORDINGS",
    "AlreadyRecording",
    "NoDiskSpace",
    "NotRecording",
    "NothingToRecord",
    "RecordingFailed",
    "RecordingService",
    "recording_ctx",
    "setup",
]


def recording_ctx(
    *,
    settings: web.AppKey[Settings],
    rooms: web.AppKey[RoomManager],
    uploads: web.AppKey[UploadQueue],
    chat: web.AppKey[ChatService] | None,
    meetings: web.AppKey[MeetingService] | None,
    events: web.AppKey[EventBus] | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup_ctx: registers the methods, finishes the recordings a previous
    process left (:meth:`RecordingService.recover`); on exit stops every recording
    cleanly (FFmpeg finishes its file) and hands them to the uploads."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        service = RecordingService(
            app[settings],
            app[rooms],
            app[uploads],
            chat=app[chat] if chat is not None else None,
            meetings=app[meetings] if meetings is not None else None,
            events=app[events] if events is not None else None,
        )
        service.attach()
        app[RECORDINGS] = service
        recovered = await service.recover()
        if recovered:
            logger.info("{} recording(s) left by a previous process finished and queued for upload", recovered)
        try:
            yield
        finally:
            await service.close()

    return ctx


def setup(
    app: web.Application,
    *,
    settings: web.AppKey[Settings],
    rooms: web.AppKey[RoomManager],
    uploads: web.AppKey[UploadQueue],
    chat: web.AppKey[ChatService] | None,
    meetings: web.AppKey[MeetingService] | None,
    events: web.AppKey[EventBus] | None,
) -> None:
    """Run the recordings (``app[RECORDINGS]``) and serve their admin routes. Every
    dependency's cleanup_ctx must come first: the service follows the rooms, and stops
    its recordings (queuing their uploads) before the rooms and the queue close."""
    app.cleanup_ctx.append(
        recording_ctx(settings=settings, rooms=rooms, uploads=uploads, chat=chat, meetings=meetings, events=events)
    )
    app.add_routes(_routes_module.routes)

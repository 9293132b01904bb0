"""In-meeting chat and meeting records.

- :class:`ChatService` (``app[CHAT]``): ``send``, ``history``, ``system_message``,
  ``delete_room_messages``, ``subscribe``; room events ``participant_joined``,
  ``participant_left``, ``room_closed``, ``recording_started``, ``recording_stopped``.
- :class:`MeetingService` (``app[MEETINGS]``, also ``chat.meetings``): ``join``,
  ``leave``, ``end``, ``add_recording``, ``get``, ``list``, ``current``, ``subscribe``.
- :func:`setup`: the database and both services, and the REST routes
  (:mod:`control.chat.routes`); :func:`setup_signaling`: ``chatMessage`` and
  ``getChatHistory`` over protoo (:mod:`control.chat.signaling`).

Errors are :class:`ChatError` (a :class:`~control.errors.ParleyError`: ``.status``,
``.code``, ``to_json()``): :class:`ChatValidationError` (400, nothing stored),
:class:`ChatNotFound` (404) and :class:`ChatUnavailable` (503, the store did not
acknowledge; resend).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from control.chat import routes as _routes_module
from control.chat.context import chat_ctx
from control.chat.meetings import ChatUnavailable, MeetingEvent, MeetingPage, MeetingService
from control.chat.service import ChatService, HistoryPage
from control.chat.signaling import chat_signaling_ctx
from control.chat.validation import ChatError, ChatLimits, ChatNotFound, ChatValidationError
from control.config import Settings
from control.keys import CHAT

if TYPE_CHECKING:
    from control.events.bus import EventBus
    from control.rooms.manager import RoomManager

__all__ = [
    "ChatError",
    "ChatLimits",
    "ChatNotFound",
    "ChatService",
    "ChatUnavailable",
    "ChatValidationError",
    "HistoryPage",
    "MeetingEvent",
    "MeetingPage",
    "MeetingService",
    "chat_ctx",
    "setup",
    "setup_signaling",
]


def setup(app: web.Application, *, settings: web.AppKey[Settings], events: web.AppKey[EventBus] | None) -> None:
    """Run the database, the chat and meetings (``DATABASE``, ``CHAT``, ``MEETINGS``) and
    serve their REST routes. ``events``: where meeting changes are published (its
    cleanup_ctx must come first), or ``None``."""
    app.cleanup_ctx.append(chat_ctx(settings=settings, events=events))
    app.add_routes(_routes_module.routes)


def setup_signaling(app: web.Application, *, rooms: web.AppKey[RoomManager]) -> None:
    """Chat over the signaling WebSocket. A second entry point because it sits on the
    other side of the rooms: the rooms need the chat running (joins and leaves are
    meeting records), and this needs the rooms running (it registers protoo methods
    on them); call it after the rooms' setup."""
    app.cleanup_ctx.append(chat_signaling_ctx(chat=CHAT, rooms=rooms))

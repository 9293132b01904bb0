"""In-meeting chat and meeting records.

- :class:`ChatService` (``app[CHAT]``): ``send``, ``history``, ``system_message``,
  ``delete_room_messages``, ``subscribe``; room events ``participant_joined``,
  ``participant_left``, ``room_closed``, ``recording_started``, ``recording_stopped``.
- :class:`MeetingService` (``app[MEETINGS]``, also ``chat.meetings``): ``join``,
  ``leave``, ``end``, ``add_recording``, ``get``, ``list``, ``current``, ``subscribe``.
- :func:`chat_ctx`: the app's ``cleanup_ctx`` entry that starts and stops them.

Errors are :class:`ChatError` (``.status``, ``.code``, ``to_json()``):
:class:`ChatValidationError` (400, nothing stored) and :class:`ChatUnavailable`
(503, the store did not acknowledge; resend).
"""

from __future__ import annotations

from control.chat.context import chat_ctx
from control.chat.meetings import ChatUnavailable, MeetingEvent, MeetingPage, MeetingService
from control.chat.service import ChatService, HistoryPage
from control.chat.validation import ChatError, ChatLimits, ChatValidationError

__all__ = [
    "ChatError",
    "ChatLimits",
    "ChatService",
    "ChatUnavailable",
    "ChatValidationError",
    "HistoryPage",
    "MeetingEvent",
    "MeetingPage",
    "MeetingService",
    "chat_ctx",
]


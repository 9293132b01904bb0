"""REST API route tables (``app.add_routes(...)`` in ``control/app.py``).

- :mod:`control.api.chat`: ``GET/DELETE /api/rooms/{roomId}/messages``
- :mod:`control.api.meetings`: ``GET /api/meetings/{meetingId}``,
  ``GET /api/rooms/{roomId}/meetings``

Errors are JSON ``{"error": <message>, "code": <code>, "field": <field>?}`` with the
status the error carries (400 invalid input, 401/403 admin, 404, 503 store down).
A ``{roomId}`` that breaks the room id rule (:mod:`control.ids`) is 400
``invalid_room_id`` on every route.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from control.chat.validation import ChatError
from control.ids import InvalidId, validate_room_id

__all__ = ["error_response", "chat_error_response", "invalid_room_id"]


def error_response(status: int, message: str, code: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message, "code": code}
    if field:
        body["field"] = field
    return web.json_response(body, status=status)


def chat_error_response(exc: ChatError) -> web.Response:
    status = 404 if exc.code == "not_found" else exc.status
    return error_response(status, exc.message, exc.code, exc.field)


def invalid_room_id(room_id: str) -> web.Response | None:
    """The 400 answer for a room id that breaks the room id rule, else ``None``."""
    try:
        validate_room_id(room_id)
    except InvalidId as exc:
        return error_response(400, exc.message, "invalid_room_id", exc.field)
    return None

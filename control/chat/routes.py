"""Chat history and meetings over REST.

``GET /api/rooms/{roomId}/messages?limit=&before=``
    200 ``{"messages": [...newest first], "nextCursor": "..." | null}``; ``limit``
    1-200 (default 50); ``before`` a ``nextCursor`` from an earlier page. Pages are
    stable while messages arrive. 400 for a bad room id, limit or cursor.

``DELETE /api/rooms/{roomId}/messages`` (admin, see ``require_admin``)
    200 ``{"roomId": ..., "deleted": <count>}``; connected clients' subscribers get
    ``on_cleared(room_id, deleted)``.

``GET /api/meetings/{meetingId}``
    200 the meeting ``{"meetingId", "roomId", "startedAt", "endedAt"?, "participants":
    [{"peerId", "displayName", "email"?, "joinedAt", "leftAt"?}], "recordings": [...]}``;
    404 if there is none; 400 for a malformed id.

``GET /api/rooms/{roomId}/meetings?limit=&before=``
    200 ``{"meetings": [...newest first], "nextCursor": "..." | null}``.

Errors are the chat's :class:`~control.chat.validation.ChatError`s (400
``invalid_room_id``, ``invalid_limit``, ``invalid_cursor``, ``invalid_meeting_id``,
``invalid_query``; 404 ``not_found``; 503 ``unavailable``) in the one REST error shape
(:mod:`control.http`).
"""

from __future__ import annotations

from aiohttp import web
from loguru import logger

from control.chat.meetings import MeetingService
from control.chat.service import ChatService
from control.chat.validation import ChatNotFound
from control.errors import BadRequest, Unavailable
from control.events.admin import require_admin
from control.keys import CHAT, MEETINGS

__all__ = ["routes"]

routes = web.RouteTableDef()

_NO_STORE = {"Cache-Control": "no-store"}


def _chat(request: web.Request) -> ChatService:
    chat = request.app.get(CHAT)
    if chat is None:
        raise Unavailable("chat is not running")
    return chat


def _meetings(request: web.Request) -> MeetingService:
    meetings = request.app.get(MEETINGS)
    if meetings is None:
        raise Unavailable("meetings are not running")
    return meetings


def _check_page_query(request: web.Request) -> None:
    if len(request.query.getall("before", [])) > 1 or len(request.query.getall("limit", [])) > 1:
        raise BadRequest("give limit and before at most once", code="invalid_query")


@routes.get("/api/rooms/{roomId}/messages")
async def get_messages(request: web.Request) -> web.Response:
    chat = _chat(request)
    _check_page_query(request)
    page = await chat.history(request.match_info["roomId"], request.query.get("limit"), request.query.get("before"))
    return web.json_response(page.to_json(), headers=_NO_STORE)


@routes.delete("/api/rooms/{roomId}/messages")
@require_admin
async def delete_messages(request: web.Request) -> web.Response:
    chat = _chat(request)
    room_id = request.match_info["roomId"]
    deleted = await chat.delete_room_messages(room_id)
    logger.bind(room=room_id).info("admin deleted the chat history of room {} ({} messages)", room_id, deleted)
    return web.json_response({"roomId": room_id, "deleted": deleted})


@routes.get("/api/meetings/{meetingId}")
async def get_meeting(request: web.Request) -> web.Response:
    meeting_id = request.match_info["meetingId"]
    meeting = await _meetings(request).get(meeting_id)
    if meeting is None:
        raise ChatNotFound("not_found", f"no meeting {meeting_id}", "meetingId")
    return web.json_response(meeting.to_json(), headers=_NO_STORE)


@routes.get("/api/rooms/{roomId}/meetings")
async def list_meetings(request: web.Request) -> web.Response:
    meetings = _meetings(request)
    _check_page_query(request)
    page = await meetings.list(request.match_info["roomId"], request.query.get("limit"), request.query.get("before"))
    return web.json_response(page.to_json(), headers=_NO_STORE)

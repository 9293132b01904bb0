"""Chat history and meetings over REST.

Access (``Authorization: Bearer``, checked by :mod:`control.auth` before anything
is read): the history is readable by the room's participants (a ``roomJoin`` token for
that room) and its admins; deleting it and the meetings (participants' e-mails) need
``roomAdmin`` for the room. A meeting by id needs ``roomAdmin`` for the meeting's room:
a caller with no ``roomAdmin`` at all is refused before the lookup (it cannot probe
ids); one for another room gets 403 ``wrong_room``.

``GET /api/rooms/{roomId}/messages?limit=&before=`` (``roomJoin`` or ``roomAdmin``)
    200 ``{"messages": [...newest first], "nextCursor": "..." | null}``; ``limit``
    1-200 (default 50); ``before`` a ``nextCursor`` from an earlier page. Pages are
    stable while messages arrive. 400 for a bad room id, limit or cursor.

``DELETE /api/rooms/{roomId}/messages`` (``roomAdmin``)
    200 ``{"roomId": ..., "deleted": <count>}``; connected clients' subscribers get
    ``on_cleared(room_id, deleted)``.

``GET /api/meetings/{meetingId}`` (``roomAdmin`` of its room)
    200 the meeting ``{"meetingId", "roomId", "startedAt", "endedAt"?, "participants":
    [{"peerId", "displayName", "email"?, "joinedAt", "leftAt"?}], "recordings": [...]}``;
    404 if there is none; 400 for a malformed id.

``GET /api/rooms/{roomId}/meetings?limit=&before=`` (``roomAdmin``)
    200 ``{"meetings": [...newest first], "nextCursor": "..." | null}``.

Errors are the chat's :class:`~control.chat.validation.ChatError`s (400
``invalid_room_id``, ``invalid_limit``, ``invalid_cursor``, ``invalid_meeting_id``,
``invalid_query``; 404 ``not_found``; 503 ``unavailable``) in the one REST error shape
(:mod:`control.http`).
"""

from __future__ import annotations

from aiohttp import web
from loguru import logger

from control.auth import Grant, principal_of, require_chat_read, require_room_admin
from control.chat.meetings import MeetingService
from control.chat.service import ChatService
from control.chat.validation import ChatNotFound
from control.errors import BadRequest, Forbidden, Unavailable
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
    require_chat_read(await principal_of(request), request.match_info["roomId"])
    chat = _chat(request)
    _check_page_query(request)
    page = await chat.history(request.match_info["roomId"], request.query.get("limit"), request.query.get("before"))
    return web.json_response(page.to_json(), headers=_NO_STORE)


@routes.delete("/api/rooms/{roomId}/messages")
async def delete_messages(request: web.Request) -> web.Response:
    room_id = request.match_info["roomId"]
    require_room_admin(await principal_of(request), room_id)
    chat = _chat(request)
    deleted = await chat.delete_room_messages(room_id)
    logger.bind(room=room_id).info("admin deleted the chat history of room {} ({} messages)", room_id, deleted)
    return web.json_response({"roomId": room_id, "deleted": deleted})


@routes.get("/api/meetings/{meetingId}")
async def get_meeting(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    if not principal.grants.allows(Grant.ADMIN):  # no room at all: refused before the lookup
        raise Forbidden(f"access token does not grant {Grant.ADMIN.value}", code="missing_grant")
    meeting_id = request.match_info["meetingId"]
    meeting = await _meetings(request).get(meeting_id)
    if meeting is None:
        raise ChatNotFound("not_found", f"no meeting {meeting_id}", "meetingId")
    require_room_admin(principal, meeting.room_id)
    return web.json_response(meeting.to_json(), headers=_NO_STORE)


@routes.get("/api/rooms/{roomId}/meetings")
async def list_meetings(request: web.Request) -> web.Response:
    require_room_admin(await principal_of(request), request.match_info["roomId"])
    meetings = _meetings(request)
    _check_page_query(request)
    page = await meetings.list(request.match_info["roomId"], request.query.get("limit"), request.query.get("before"))
    return web.json_response(page.to_json(), headers=_NO_STORE)

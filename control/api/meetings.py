"""Meetings over REST.

``GET /api/meetings/{meetingId}``
    200 the meeting ``{"meetingId", "roomId", "startedAt", "endedAt"?, "participants":
    [{"peerId", "displayName", "email"?, "joinedAt", "leftAt"?}], "recordings": [...]}``;
    404 if there is none; 400 for a malformed id.

``GET /api/rooms/{roomId}/meetings?limit=&before=``
    200 ``{"meetings": [...newest first], "nextCursor": "..." | null}``.
"""

from __future__ import annotations

from aiohttp import web

from control.api import chat_error_response, error_response
from control.chat.validation import ChatError
from control.keys import MEETINGS

__all__ = ["routes"]

routes = web.RouteTableDef()

_NO_STORE = {"Cache-Control": "no-store"}


def _meetings(request: web.Request):
    meetings = request.app.get(MEETINGS)
    if meetings is None:
        raise web.HTTPServiceUnavailable(
            text='{"error": "meetings are not running", "code": "unavailable"}', content_type="application/json"
        )
    return meetings


@routes.get("/api/meetings/{meetingId}")
async def get_meeting(request: web.Request) -> web.Response:
    meeting_id = request.match_info["meetingId"]
    try:
        meeting = await _meetings(request).get(meeting_id)
    except ChatError as exc:
        return chat_error_response(exc)
    if meeting is None:
        return error_response(404, f"no meeting {meeting_id}", "not_found", "meetingId")
    return web.json_response(meeting.to_json(), headers=_NO_STORE)


@routes.get("/api/rooms/{roomId}/meetings")
async def list_meetings(request: web.Request) -> web.Response:
    if len(request.query.getall("before", [])) > 1 or len(request.query.getall("limit", [])) > 1:
        return error_response(400, "give limit and before at most once", "invalid_query")
    try:
        page = await _meetings(request).list(
            request.match_info["roomId"], request.query.get("limit"), request.query.get("before")
        )
    except ChatError as exc:
        return chat_error_response(exc)
    return web.json_response(page.to_json(), headers=_NO_STORE)

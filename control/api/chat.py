"""Chat history over REST.

``GET /api/rooms/{roomId}/messages?limit=&before=``
    200 ``{"messages": [...newest first], "nextCursor": "..." | null}``; ``limit``
    1-200 (default 50); ``before`` a ``nextCursor`` from an earlier page. Pages are
    stable while messages arrive. 400 for a bad room id, limit or cursor.

``DELETE /api/rooms/{roomId}/messages`` (admin, see ``require_admin``)
    200 ``{"roomId": ..., "deleted": <count>}``; connected clients' subscribers get
    ``on_cleared(room_id, deleted)``.
"""

from __future__ import annotations

from aiohttp import web
from loguru import logger

from control.api import chat_error_response, error_response
from control.chat.validation import ChatError
from control.events.admin import require_admin
from control.keys import CHAT

__all__ = ["routes"]

routes = web.RouteTableDef()

_NO_STORE = {"Cache-Control": "no-store"}


def _chat(request: web.Request):
    chat = request.app.get(CHAT)
    if chat is None:
        raise web.HTTPServiceUnavailable(
            text='{"error": "chat is not running", "code": "unavailable"}', content_type="application/json"
        )
    return chat


@routes.get("/api/rooms/{roomId}/messages")
async def get_messages(request: web.Request) -> web.Response:
    chat = _chat(request)
    if len(request.query.getall("before", [])) > 1 or len(request.query.getall("limit", [])) > 1:
        return error_response(400, "give limit and before at most once", "invalid_query")
    try:
        page = await chat.history(
            request.match_info["roomId"], request.query.get("limit"), request.query.get("before")
        )
    except ChatError as exc:
        return chat_error_response(exc)
    return web.json_response(page.to_json(), headers=_NO_STORE)


@routes.delete("/api/rooms/{roomId}/messages")
@require_admin
async def delete_messages(request: web.Request) -> web.Response:
    chat = _chat(request)
    room_id = request.match_info["roomId"]
    try:
        deleted = await chat.delete_room_messages(room_id)
    except ChatError as exc:
        return chat_error_response(exc)
    logger.bind(room=room_id).info("admin deleted the chat history of room {} ({} messages)", room_id, deleted)
    return web.json_response({"roomId": room_id, "deleted": deleted})

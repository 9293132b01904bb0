"""Rooms over REST, for operators (admin routes, see ``require_admin``).

``GET /api/rooms``
    200 ``{"rooms": [{id, peers, broadcasters, workers, createdAt}]}``
``GET /api/rooms/{roomId}``
    200 the room: its routers (worker pid, consumer count), peers and
    broadcasters with their transports, producers, consumers and data
    producers/consumers (each with the worker it runs on), the dominant
    speaker; participant metadata only as the e-mail and the names of the
    aiSettings/integrations keys, never their values. 404 unknown room, 400
    ``invalid_room_id`` for an id no room can have (``control.ids``).

Both are admin routes: ``ADMIN_TOKEN`` as a bearer token, or direct loopback
clients when it is unset (``control.events.admin.require_admin``, to be
replaced by the auth module's check under the same name). Errors are the
application's one shape (:mod:`control.http`).
"""

from __future__ import annotations

from aiohttp import web

from control.errors import BadRequest, NotFound
from control.events.admin import require_admin
from control.ids import InvalidId, validate_room_id
from control.keys import ROOMS
from control.rooms.room import Room

__all__ = ["checked_room_id", "routes"]

routes = web.RouteTableDef()

_NO_STORE = {"Cache-Control": "no-store"}


def checked_room_id(request: web.Request) -> str:
    """The ``{roomId}`` of the path (400 ``invalid_room_id`` when it breaks the rule)."""
    try:
        return validate_room_id(request.match_info["roomId"])
    except InvalidId as error:
        raise BadRequest(error.message, code="invalid_room_id", field=error.field) from None


def open_room(request: web.Request) -> Room:
    """The open room of the path's ``{roomId}`` (400 bad id, 404 no such room)."""
    room_id = checked_room_id(request)
    manager = request.app.get(ROOMS)
    room = manager.get_room(room_id) if manager is not None else None
    if room is None:
        raise NotFound(f'room "{room_id}" not found', code="not_found")
    return room


@routes.get("/api/rooms")
@require_admin
async def list_rooms(request: web.Request) -> web.Response:
    manager = request.app.get(ROOMS)
    rooms = [room.summary() for room in manager.rooms.values() if not room.closed] if manager else []
    return web.json_response({"rooms": rooms}, headers=_NO_STORE)


@routes.get("/api/rooms/{roomId}")
@require_admin
async def get_room(request: web.Request) -> web.Response:
    return web.json_response(open_room(request).describe(), headers=_NO_STORE)

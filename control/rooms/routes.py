"""Rooms over REST, for operators.

``GET /api/rooms``
    200 ``{"rooms": [{id, peers, broadcasters, workers, createdAt}]}``; in a cluster
    (``REDIS_URL``) every node's rooms, each with ``nodes`` (the ids of its node(s))
``GET /api/rooms/{roomId}``
    200 the room: its routers (worker pid, consumer count), peers and
    broadcasters with their transports, producers, consumers and data
    producers/consumers (each with the worker it runs on), the dominant
    speaker; participant metadata only as the e-mail and the names of the
    aiSettings/integrations keys, never their values. 404 unknown room, 400
    ``invalid_room_id`` for an id no room can have (``control.ids``).

Access (``Authorization: Bearer``, checked by :mod:`control.auth`): the list is
a global route, ``roomList`` or a roomless ``roomAdmin``; a room's details need
``roomAdmin`` for that room (checked before the room is looked up, so a refused
caller cannot probe which rooms exist). Errors are the application's one shape
(:mod:`control.http`): 401 without a valid token, 403 ``missing_grant`` /
``wrong_room``.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from aiohttp import web

from control.auth import principal_of, require_room_admin, require_room_list
from control.errors import BadRequest, NotFound
from control.ids import InvalidId, validate_room_id
from control.keys import ROOMS
from control.rooms.room import Room

__all__ = ["CLUSTER_ROOMS", "ClusterRooms", "checked_room_id", "routes"]

routes = web.RouteTableDef()


class ClusterRooms(Protocol):
    """The rooms of every node of the cluster (``control.cluster``)."""

    async def cluster_rooms(self, local: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``local`` (this node's summaries) and the other nodes', each with ``nodes``."""
        ...


#: Set by ``control.cluster`` when the node is part of a cluster: the list is cluster-wide.
CLUSTER_ROOMS: Final[web.AppKey[ClusterRooms]] = web.AppKey("cluster_rooms")

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
async def list_rooms(request: web.Request) -> web.Response:
    require_room_list(await principal_of(request))
    manager = request.app.get(ROOMS)
    rooms = [room.summary() for room in manager.rooms.values() if not room.closed] if manager else []
    if (cluster := request.app.get(CLUSTER_ROOMS)) is not None:
        rooms = await cluster.cluster_rooms(rooms)  # every node's rooms, each with its node(s)
    return web.json_response({"rooms": rooms}, headers=_NO_STORE)


@routes.get("/api/rooms/{roomId}")
async def get_room(request: web.Request) -> web.Response:
    require_room_admin(await principal_of(request), checked_room_id(request))
    return web.json_response(open_room(request).describe(), headers=_NO_STORE)

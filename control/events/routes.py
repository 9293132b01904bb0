"""``GET /api/events/outbox``: the events waiting for delivery.

A global route: ``roomList`` or a roomless ``roomAdmin`` (:func:`control.auth.require_room_list`).

Query: ``limit`` (1-1000, default 100). Answer: the bus status (outbox backend,
broker connection, counters), ``pending`` (how many wait) and ``events``
(oldest first: ``eventId``, ``type``, ``createdAt``, ``attempts``,
``lastAttemptAt``, ``lastError`` and the ``event`` itself with every
``integrations`` value masked). 400 ``invalid_limit``, 503 ``unavailable`` in the
one REST error shape.
"""

from __future__ import annotations

from aiohttp import web

from control.auth import principal_of, require_room_list
from control.errors import BadRequest, Unavailable
from control.keys import EVENTS

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/api/events/outbox")
async def get_outbox(request: web.Request) -> web.Response:
    require_room_list(await principal_of(request))
    bus = request.app.get(EVENTS)
    if bus is None:
        raise Unavailable("the event bus is not running")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = -1
    if not 1 <= limit <= 1000:
        raise BadRequest("limit must be an integer from 1 to 1000", code="invalid_limit", field="limit")
    return web.json_response(await bus.outbox_view(limit))

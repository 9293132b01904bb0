"""Recording over REST, for operators (admin routes, see ``require_admin``).

``POST /api/rooms/{roomId}/recording``
    201 ``{recordingId, startedAt}``; 404 ``not_found`` (no such room), 409
    ``already_recording``, 400 ``nothing_to_record``, 507 ``insufficient_storage``,
    500 ``recording_failed``.
``DELETE /api/rooms/{roomId}/recording``
    200 ``{recordingId, key, duration, segments}``; 404 ``not_recording``, 500
    ``recording_failed``.

Both: 400 ``invalid_room_id`` for an id no room can have; errors in the one REST
error shape (:mod:`control.http`).
"""

from __future__ import annotations

from aiohttp import web

from control.events.admin import require_admin
from control.ids import validate_room_id
from control.recording.service import RECORDINGS, RecordingFailed
from recording import RecordingError

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.post("/api/rooms/{roomId}/recording")
@require_admin
async def start_recording(request: web.Request) -> web.Response:
    room_id = validate_room_id(request.match_info["roomId"])
    info = await request.app[RECORDINGS].start(room_id)
    return web.json_response(info, status=201)


@routes.delete("/api/rooms/{roomId}/recording")
@require_admin
async def stop_recording(request: web.Request) -> web.Response:
    room_id = validate_room_id(request.match_info["roomId"])
    try:
        info = await request.app[RECORDINGS].stop(room_id)
    except RecordingError as error:
        raise RecordingFailed(str(error)) from None
    return web.json_response(info)

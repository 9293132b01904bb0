"""Recording over REST, for operators and room admins.

``POST /api/rooms/{roomId}/recording``
    201 ``{recordingId, startedAt}``; 404 ``not_found`` (no such room), 409
    ``already_recording``, 400 ``nothing_to_record``, 507 ``insufficient_storage``,
    500 ``recording_failed``.
``DELETE /api/rooms/{roomId}/recording``
    200 ``{recordingId, key, duration, segments}``; 404 ``not_recording``, 500
    ``recording_failed``.

Access (``Authorization: Bearer``, :mod:`control.auth`): ``roomRecord`` or
``roomAdmin`` for that room (a roomless token of either: every room).
``roomRecord`` is what LiveKit's egress API asks for, so a recorder's token works
unchanged, and a participant holding it may already start and stop recordings
from inside the room (signaling); ``roomAdmin`` may do everything in the room.
Checked before the room id is even validated: a refused caller learns nothing.

Both: 400 ``invalid_room_id`` for an id no room can have; errors in the one REST
error shape (:mod:`control.http`).
"""

from __future__ import annotations

from aiohttp import web

from control.auth import Grant, principal_of, require_record, require_room_admin
from control.ids import validate_room_id
from control.recording.service import RECORDINGS, RecordingFailed
from recording import RecordingError

__all__ = ["routes"]

routes = web.RouteTableDef()


async def _require_recording_control(request: web.Request) -> str:
    """The room id of the path, once the caller may control its recordings (else 401/403)."""
    room_id = request.match_info["roomId"]
    principal = await principal_of(request)
    if principal.can(Grant.RECORD, room_id):
        pass
    elif principal.grants.allows(Grant.RECORD) and not principal.grants.allows(Grant.ADMIN):
        require_record(principal, room_id)  # roomRecord, for another room: 403 wrong_room
    else:
        require_room_admin(principal, room_id)  # the refusal names roomAdmin
    return validate_room_id(room_id)


@routes.post("/api/rooms/{roomId}/recording")
async def start_recording(request: web.Request) -> web.Response:
    room_id = await _require_recording_control(request)
    info = await request.app[RECORDINGS].start(room_id)
    return web.json_response(info, status=201)


@routes.delete("/api/rooms/{roomId}/recording")
async def stop_recording(request: web.Request) -> web.Response:
    room_id = await _require_recording_control(request)
    try:
        info = await request.app[RECORDINGS].stop(room_id)
    except RecordingError as error:
        raise RecordingFailed(str(error)) from None
    return web.json_response(info)

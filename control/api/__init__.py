"""Deprecated helpers of the old REST route modules, kept for :mod:`control.api.rooms`
until it moves into ``control/rooms/``.

Routes now live in their subsystem's package and raise
:class:`~control.errors.ParleyError` subclasses; :func:`control.http.error_middleware` gives
the one error shape ``{"error": {"code", "message", "field"?}}``. These wrappers
build that same shape.
"""

from __future__ import annotations

from aiohttp import web

from control.errors import ParleyError
from control.http import error_body
from control.ids import InvalidId, validate_room_id

__all__ = ["error_response", "invalid_room_id"]


def error_response(status: int, message: str, code: str, field: str | None = None) -> web.Response:
    """Deprecated: raise a :class:`~control.errors.ParleyError` instead."""
    return web.json_response(error_body(code, message, field), status=status)


def invalid_room_id(room_id: str) -> web.Response | None:
    """Deprecated: call :func:`control.ids.validate_room_id` and let its
    :class:`~control.ids.InvalidId` (400 ``invalid_room_id``) propagate."""
    try:
        validate_room_id(room_id)
    except InvalidId as exc:
        return _answer(exc)
    return None


def _answer(error: ParleyError) -> web.Response:
    return web.json_response({"error": error.to_json()}, status=error.status)

"""Watching signaling requests from outside (metrics), without touching the protocol code.

:data:`REQUEST_OBSERVER` is signaling's own ``web.AppKey``: whoever wants to know
about every protoo request a client sends (``control.metrics``) stores a
:data:`RequestObserver` there at start; the WebSocket handler wraps its request
handler with :func:`observed` when one is set, and nothing happens otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from control.errors import ParleyError
from control.signaling.protoo import ProtooError, RequestHandler

__all__ = ["OK", "REQUEST_OBSERVER", "RequestObserver", "observed", "outcome_of"]

#: ``observer(method, outcome, seconds)``: once per answered (or failed) request.
#: ``outcome`` is :data:`OK`, a ParleyError's ``code`` (``missing_grant``...), the
#: protoo error code of a ProtooError (``"403"``), ``internal_error`` or ``cancelled``.
RequestObserver = Callable[[str, str, float], None]

#: The observer of this app's signaling requests (unset: requests are not observed).
REQUEST_OBSERVER: Final[web.AppKey[RequestObserver]] = web.AppKey("signaling_request_observer")

#: The outcome of a request that was answered with data.
OK: Final = "ok"


def outcome_of(error: BaseException) -> str:
    """A short, bounded label for why a request failed."""
    if isinstance(error, ParleyError):
        return error.code
    if isinstance(error, ProtooError):
        return str(error.code)
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return "internal_error"


def observed(handler: RequestHandler, observer: RequestObserver) -> RequestHandler:
    """``handler``, timed: ``observer`` is told each request's method, outcome and duration."""

    async def timed(method: str, data: dict[str, Any]) -> Any:
        started = time.perf_counter()
        outcome = OK
        try:
            return await handler(method, data)
        except BaseException as error:
            outcome = outcome_of(error)
            raise
        finally:
            observer(method, outcome, time.perf_counter() - started)

    return timed

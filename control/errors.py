"""Domain errors: one base class, one stable ``code`` each, one HTTP status each.

Every subsystem of ``control/`` raises subclasses of :class:`ParleyError` for
what a user (or a client) caused or may retry. Two places turn them into
answers, and nothing else does:

- REST: :func:`control.http.error_middleware` answers
  ``{"error": {"code": ..., "message": ..., "field"?: ...}}`` with ``status``;
- signaling: :func:`protoo_error` gives the protoo error response's
  ``errorCode`` (the same number as the HTTP status: mediasoup-demo's clients
  read 403, 404, 409...) and ``errorReason`` (the message).

An exception that is not a ``ParleyError`` is a bug: REST answers 500 with an
error id (the log line carries the traceback and the same id), signaling
answers 500 ``internal error`` with the id. Exception text never reaches a client.

Messages must not echo secrets (tokens, keys, integration values): they are
sent to the client and logged.

Nothing here imports aiohttp or the rest of ``control``: every layer may use it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Gone",
    "InsufficientStorage",
    "NotFound",
    "ParleyError",
    "PayloadTooLarge",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "UpstreamTimeout",
    "protoo_error",
]


class ParleyError(Exception):
    """An error a client may see: a stable ``code``, an HTTP ``status``, a message.

    Subclasses set ``status`` and a default ``code``; a raise site may give a more
    precise ``code`` (``NotFound("...", code="room_not_found")``) and the request
    field it is about (``field="roomId"``).
    """

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field

    def to_json(self) -> dict[str, str]:
        """The ``error`` object of a REST answer."""
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return body

    def __str__(self) -> str:
        return self.message


class BadRequest(ParleyError):
    """Malformed or invalid input (400)."""

    status = 400
    default_code = "invalid_request"


class Unauthorized(ParleyError):
    """No credentials, or credentials that do not verify (401)."""

    status = 401
    default_code = "unauthorized"


class Forbidden(ParleyError):
    """Valid credentials that do not grant this (403)."""

    status = 403
    default_code = "forbidden"


class NotFound(ParleyError):
    status = 404
    default_code = "not_found"


class Conflict(ParleyError):
    """The request clashes with the current state (already joined, already recording) (409)."""

    status = 409
    default_code = "conflict"


class Gone(ParleyError):
    """The peer or room closed while the request was being handled (410)."""

    status = 410
    default_code = "gone"


class PayloadTooLarge(ParleyError):
    status = 413
    default_code = "payload_too_large"


class TooManyRequests(ParleyError):
    """A limit was reached; retry later (429). ``retry_after`` (whole seconds), when
    known, becomes the REST answer's ``Retry-After`` header."""

    status = 429
    default_code = "too_many_requests"

    def __init__(
        self, message: str, *, code: str | None = None, field: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message, code=code, field=field)
        self.retry_after = retry_after


class Unavailable(ParleyError):
    """A dependency (media worker, store, storage) cannot serve now; retry later (503)."""

    status = 503
    default_code = "unavailable"


class UpstreamTimeout(ParleyError):
    """A dependency (a media worker) did not answer in time (504)."""

    status = 504
    default_code = "timeout"


class InsufficientStorage(ParleyError):
    status = 507
    default_code = "insufficient_storage"


def protoo_error(error: ParleyError) -> tuple[int, str]:
    """``(errorCode, errorReason)`` of the protoo error response for ``error``."""
    return error.status, error.message

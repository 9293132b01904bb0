"""The one REST error shape, for every route of the application.

:func:`error_middleware` turns what a handler raises into one JSON body::

    {"error": {"code": "not_found", "message": "room \\"x\\" not found", "field": "roomId"}}

- a :class:`~control.errors.ParleyError`: its ``status``, ``code``, ``message``
  (and ``field``);
- an aiohttp ``HTTPException`` of status 400 and above (unknown route 404, wrong method
  405, body too large 413...): its status, a code derived from the status, its reason;
- anything else: 500 ``internal_error`` with an ``errorId`` that the log line with the
  traceback carries too; never the exception's text.

Handlers raise; they never build error responses themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from loguru import logger

from control.errors import ParleyError

__all__ = ["error_body", "error_middleware", "error_response"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    return {"error": error}


def error_response(error: ParleyError, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON answer for ``error`` (also for code outside a handler, e.g. a websocket refusal)."""
    return web.json_response({"error": error.to_json()}, status=error.status, headers=headers)


def _http_exception_response(exc: web.HTTPException) -> web.Response:
    code = _CODES_BY_STATUS.get(exc.status, "http_error")
    message = exc.text if exc.text and exc.content_type == "text/plain" else exc.reason
    if message.startswith(f"{exc.status}: "):  # aiohttp's default text is "404: Not Found"
        message = message[len(f"{exc.status}: ") :]
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate", "retry-after")}
    return web.json_response(error_body(code, message), status=exc.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ParleyError as error:
        if error.status >= 500:
            logger.warning("{} {}: {} ({})", request.method, request.path, error.message, error.code)
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return error_response(error, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and successes raised as exceptions pass through
        return _http_exception_response(exc)
    except Exception:  # noqa: BLE001 - any bug becomes a 500 with an id, never a traceback to the client
        error_id = uuid.uuid4().hex[:12]
        logger.opt(exception=True).error("{} {} failed (error id {})", request.method, request.path, error_id)
        body = error_body("internal_error", f"internal error (id {error_id})")
        body["error"]["errorId"] = error_id
        return web.json_response(body, status=500)

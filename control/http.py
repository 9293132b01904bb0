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

JSON bodies are checked before any handler parses them (Python's parser recurses):
a ``POST``/``PATCH``/``DELETE`` body of a JSON or text content type nested deeper
than ``SIGNALING_MAX_JSON_DEPTH`` is answered 400 ``json_too_deep``
(:func:`check_json_depth`); :func:`loads` parses a body with the same check. A
``RecursionError`` a handler still meets is answered 400 ``json_too_deep`` too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from loguru import logger

from control.errors import BadRequest, ParleyError, TooManyRequests
from control.keys import SETTINGS
from control.signaling.protoo import MAX_JSON_DEPTH, json_too_deep

__all__ = ["check_json_depth", "error_body", "error_middleware", "error_response", "loads"]

#: Bodies the depth check reads (JSON APIs); ``PUT`` is left alone (object uploads stream).
_CHECKED_METHODS = frozenset({"POST", "PATCH", "DELETE"})

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


def _max_depth(request: web.Request) -> int:
    settings = request.config_dict.get(SETTINGS)
    return settings.signaling_max_json_depth if settings is not None else MAX_JSON_DEPTH


def _too_deep(max_depth: int) -> BadRequest:
    return BadRequest(f"JSON nested too deeply (limit {max_depth} levels)", code="json_too_deep")


def loads(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` of a client's body, its depth checked first (BadRequest 400
    ``json_too_deep`` or ``invalid_json``)."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8 JSON", code="invalid_json") from None
    if json_too_deep(text, max_depth):
        raise _too_deep(max_depth)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest("request body is not JSON", code="invalid_json") from None


async def check_json_depth(request: web.Request) -> None:
    """Refuse (400 ``json_too_deep``) a JSON or text body nested too deeply, before a
    handler parses it (the body is read once and cached by aiohttp)."""
    if request.method not in _CHECKED_METHODS or not request.body_exists:
        return
    content_type = request.content_type
    if not (content_type == "application/json" or content_type.endswith("+json") or content_type.startswith("text/")):
        return
    raw = await request.read()
    max_depth = _max_depth(request)
    if json_too_deep(raw.decode(errors="replace"), max_depth):
        logger.warning("{} {}: JSON body nested deeper than {} levels refused", request.method, request.path, max_depth)
        raise _too_deep(max_depth)


def _error_headers(error: ParleyError) -> dict[str, str] | None:
    """``WWW-Authenticate`` on a 401, ``Retry-After`` on a 429 that knows when."""
    if error.status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(error, TooManyRequests) and error.retry_after is not None:
        return {"Retry-After": str(error.retry_after)}
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        await check_json_depth(request)
        return await handler(request)
    except ParleyError as error:
        if error.status >= 500:
            logger.warning("{} {}: {} ({})", request.method, request.path, error.message, error.code)
        return error_response(error, _error_headers(error))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and successes raised as exceptions pass through
        return _http_exception_response(exc)
    except RecursionError:  # a body parsed without loads(): client input, not a bug
        logger.warning("{} {}: input nested too deeply", request.method, request.path)
        return error_response(_too_deep(_max_depth(request)))
    except Exception:  # noqa: BLE001 - any bug becomes a 500 with an id, never a traceback to the client
        error_id = uuid.uuid4().hex[:12]
        logger.opt(exception=True).error("{} {} failed (error id {})", request.method, request.path, error_id)
        body = error_body("internal_error", f"internal error (id {error_id})")
        body["error"]["errorId"] = error_id
        return web.json_response(body, status=500)

"""protoo over an aiohttp WebSocket: the framing mediasoup-demo's clients speak.

Every message is one JSON text frame:

- request      ``{"request": true, "id": N, "method": M, "data": {...}}``
- success      ``{"response": true, "id": N, "ok": true, "data": {...}}``
- error        ``{"response": true, "id": N, "ok": false, "errorCode": C, "errorReason": "..."}``
- notification ``{"notification": true, "method": M, "data": {...}}``

Both sides send requests. :class:`ProtooConnection` reads frames, hands each
request to a handler (concurrently, a bounded number at a time), answers it
with the handler's result or :class:`ProtooError`, matches the client's
responses to our own requests, and writes everything through one queue so
that messages leave in the order they were sent.

Bad input never raises out of here: a request that is not valid gets an error
response (400, or 413 when over the soft size limit), a frame that is not JSON,
is nested deeper than its limit (checked before parsing: the parser is
recursive) or is binary closes the socket cleanly (1007 / 1003), one over the
hard limit is closed by aiohttp (1009); each is logged as a warning.

Limits per connection: ``MAX_IN_FLIGHT`` requests handled at once, and a token
bucket (:class:`RateLimit`: ``SIGNALING_REQUESTS_PER_SECOND`` sustained,
``SIGNALING_REQUEST_BURST`` at once); a request over either is answered 429.

An error response from a :class:`~control.errors.ParleyError` also carries its
stable ``code`` (``{"errorCode": 429, "errorReason": "...", "code": "rate_limited"}``);
protoo clients ignore the extra field.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from loguru import logger

from control.errors import ParleyError, protoo_error

__all__ = [
    "CLOSE_RECONNECT",
    "CLOSE_REPLACED",
    "ProtooConnection",
    "ProtooError",
    "RateLimit",
    "RequestHandler",
    "json_too_deep",
]

#: protoo-server closes with 4000; protoo-client does not reconnect after it.
CLOSE_REPLACED = 4000
#: Our "please reconnect" (media worker died, room rebuilt): any code but 4000
#: makes protoo-client reconnect on its own.
CLOSE_RECONNECT = 4002

#: Requests of one peer being handled at once; more get error 429.
MAX_IN_FLIGHT = 32
#: Messages waiting to be written to one slow client before it is dropped.
MAX_OUTGOING = 10_000

#: Default deepest nesting of a message (``SIGNALING_MAX_JSON_DEPTH``).
MAX_JSON_DEPTH = 32

_ID_RE = re.compile(rb'"id"\s*:\s*(\d{1,15})')
_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET_RE = re.compile(r"[\[\]{}]")


def json_too_deep(text: str, max_depth: int) -> bool:
    """Whether ``text`` nests arrays/objects deeper than ``max_depth``, found without
    parsing it (:func:`json.loads` recurses and fails near 1000 levels). Brackets
    inside strings do not count; malformed text is left to the parser."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for bracket in _BRACKET_RE.findall(_STRING_RE.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


class RateLimit:
    """A token bucket: ``rate`` requests a second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def allow(self) -> bool:
        """Take a token if there is one."""
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


_REQUEST_RE = re.compile(rb'"request"\s*:\s*true')


class ProtooError(Exception):
    """An error response: ``errorCode`` and ``errorReason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


RequestHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class ProtooConnection:
    """One protoo peer's WebSocket (server side)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        max_frame_bytes: int,
        request_timeout: float,
        rate: RateLimit | None = None,
        max_depth: int = MAX_JSON_DEPTH,
        log: Any = logger,
    ) -> None:
        self.ws = ws
        self.max_frame_bytes = max_frame_bytes
        self.rate = rate
        self.max_depth = max_depth
        self.request_timeout = request_timeout
        self.log = log
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        #: The client closed with a close frame (a deliberate leave), as opposed
        #: to a connection that dropped (no close frame, ping timeout) or one we closed.
        self.client_closed = False
        self._ids = itertools.count(random.randint(1, 5_000_000))
        self._pending: dict[int, asyncio.Future] = {}
        self._outgoing: asyncio.Queue[str | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._writer: asyncio.Task | None = None
        self._closed_event = asyncio.Event()

    # -- sending --------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        if self._outgoing.qsize() >= MAX_OUTGOING:
            self.log.warning("signaling: client does not read its messages ({} queued), closing", MAX_OUTGOING)
            self.close_soon(WSCloseCode.TRY_AGAIN_LATER, "too many messages waiting")
            return
        self._outgoing.put_nowait(json.dumps(message, separators=(",", ":")))

    def notify(self, method: str, data: dict[str, Any] | None = None) -> None:
        """Send a notification (queued; never raises)."""
        self._send({"notification": True, "method": method, "data": data if data is not None else {}})

    async def request(self, method: str, data: dict[str, Any] | None = None, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (a per-request timeout, as protoo)
        """Send a request and wait for the client's response data.

        Raises :class:`ProtooError` for an error response, ``asyncio.TimeoutError``
        when no answer comes in time, ``ConnectionError`` if the socket closes first.
        """
        if self.closed:
            raise ConnectionError("signaling connection closed")
        request_id = next(self._ids)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._send({"request": True, "id": request_id, "method": method, "data": data if data is not None else {}})
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.request_timeout):
                return await future
        finally:
            self._pending.pop(request_id, None)

    def _respond_ok(self, request_id: int, data: Any) -> None:
        self._send({"response": True, "id": request_id, "ok": True, "data": data if data is not None else {}})

    def _respond_error(self, request_id: int, code: int, reason: str, name: str | None = None) -> None:
        message: dict[str, Any] = {"response": True, "id": request_id, "ok": False, "errorCode": code}
        message["errorReason"] = reason
        if name is not None:
            message["code"] = name
        self._send(message)

    async def _write_loop(self) -> None:
        try:
            while True:
                text = await self._outgoing.get()
                if text is None:
                    return
                await self.ws.send_str(text)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass  # the socket went away; the read loop notices and ends

    # -- closing --------------------------------------------------------------------

    def close_soon(self, code: int = CLOSE_REPLACED, reason: str = "closed by server") -> None:
        """Close the socket (after what is already queued) from synchronous code."""
        if self.closed:
            return
        task = asyncio.ensure_future(self.close(code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, code: int = CLOSE_REPLACED, reason: str = "closed by server") -> None:
        """Flush queued messages, close the WebSocket with ``code``/``reason``."""
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_reason = code, reason
        self._outgoing.put_nowait(None)
        if self._writer is not None:
            try:
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self._writer)
            except TimeoutError:
                self._writer.cancel()
            except asyncio.CancelledError:
                if _being_cancelled():
                    raise  # this close was cancelled, not the writer: pass it on
        try:
            await self.ws.close(code=code, message=reason.encode()[:120])
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._fail_pending()
        self._closed_event.set()

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("signaling connection closed"))
        self._pending.clear()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    # -- receiving ------------------------------------------------------------------

    async def run(self, handler: RequestHandler) -> None:
        """Read until the socket closes; requests go to ``handler(method, data)``."""
        self._writer = asyncio.ensure_future(self._write_loop())
        try:
            while not self.closed:
                message = await self.ws.receive()
                if message.type == WSMsgType.TEXT:
                    self._on_text(message.data, handler)
                elif message.type == WSMsgType.BINARY:
                    self.log.warning("signaling: binary frame ({} bytes) refused, closing", len(message.data))
                    await self.close(WSCloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
                elif message.type == WSMsgType.CLOSE:
                    # The client said goodbye (a close frame it started, not the
                    # answer to ours): a deliberate leave.
                    self.client_closed = not self.closed
                    break
                elif message.type == WSMsgType.ERROR:
                    self.log.warning("signaling: WebSocket error: {}", self.ws.exception())
                    break
                elif message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
        finally:
            if not self.closed:
                self.closed = True
                self.close_code = self.ws.close_code
                self._outgoing.put_nowait(None)
            self._fail_pending()
            # Request handlers still running are left to finish (cancelling one
            # mid-request could orphan what the worker created); their answers
            # are dropped, and the room cleans up after a peer that is gone.
            if self._writer is not None and not self._writer.done():
                self._writer.cancel()
            self._closed_event.set()

    def _on_text(self, text: str, handler: RequestHandler) -> None:
        if len(text) > self.max_frame_bytes // 4 and len(text.encode()) > self.max_frame_bytes:
            self._on_oversize(text)
            return
        if json_too_deep(text, self.max_depth):
            self.log.warning("signaling: frame nested deeper than {} levels, closing", self.max_depth)
            self.close_soon(WSCloseCode.INVALID_TEXT, f"JSON nested too deeply (limit {self.max_depth})")
            return
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            self.log.warning("signaling: frame is not JSON ({} characters), closing", len(text))
            self.close_soon(WSCloseCode.INVALID_TEXT, "invalid JSON")
            return
        if not isinstance(message, dict):
            self.log.warning("signaling: JSON {} is not a protoo message, ignored", type(message).__name__)
            return
        if message.get("request") is True:
            self._on_request(message, handler)
        elif message.get("response") is True:
            self._on_response(message)
        elif message.get("notification") is True:
            self.log.debug("signaling: notification {!r} from client ignored", str(message.get("method"))[:64])
        else:
            self.log.warning("signaling: JSON object is not a protoo request, response or notification, ignored")

    def _on_oversize(self, text: str) -> None:
        head = text[:4096].encode()
        match = _ID_RE.search(head)
        if match and _REQUEST_RE.search(head):
            self.log.warning(
                "signaling: request of {} bytes over SIGNALING_MAX_FRAME_BYTES={}, refused",
                len(text.encode()),
                self.max_frame_bytes,
            )
            self._respond_error(
                int(match.group(1)),
                413,
                f"message too large (limit {self.max_frame_bytes} bytes, SIGNALING_MAX_FRAME_BYTES)",
                "payload_too_large",
            )
        else:
            self.log.warning("signaling: message of {} bytes over the limit, ignored", len(text.encode()))

    def _on_request(self, message: dict[str, Any], handler: RequestHandler) -> None:
        request_id = message.get("id")
        if type(request_id) is not int or request_id < 0:
            self.log.warning("signaling: request without a valid id, ignored")
            return
        method = message.get("method")
        data = message.get("data", {})
        if data is None:
            data = {}
        if not isinstance(method, str) or not method or len(method) > 64:
            self.log.warning("signaling: request {} without a valid method", request_id)
            self._respond_error(request_id, 400, "invalid request: method must be a non-empty string")
            return
        if not isinstance(data, dict):
            self.log.warning("signaling: request {} {!r}: data is not an object", request_id, method)
            self._respond_error(request_id, 400, "invalid request: data must be an object")
            return
        in_flight = sum(1 for t in self._tasks if not t.done())
        if in_flight >= MAX_IN_FLIGHT:
            self.log.warning("signaling: {} requests in flight, {!r} refused", in_flight, method)
            self._respond_error(request_id, 429, "too many requests in flight", "too_many_in_flight")
            return
        if self.rate is not None and not self.rate.allow():
            self.log.warning("signaling: over {:g} requests/s, {!r} refused", self.rate.rate, method)
            self._respond_error(
                request_id,
                429,
                f"too many requests (limit {self.rate.rate:g}/s, SIGNALING_REQUESTS_PER_SECOND)",
                "rate_limited",
            )
            return
        task = asyncio.ensure_future(self._handle(request_id, method, data, handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, request_id: int, method: str, data: dict[str, Any], handler: RequestHandler) -> None:
        try:
            result = await handler(method, data)
        except ProtooError as error:
            level = "WARNING" if error.code < 500 else "ERROR"
            self.log.log(level, "signaling: {} refused: {} {}", method, error.code, error.reason)
            self._respond_error(request_id, error.code, error.reason)
        except ParleyError as error:
            code, reason = protoo_error(error)
            level = "WARNING" if code < 500 else "ERROR"
            self.log.log(level, "signaling: {} refused: {} {}", method, code, reason)
            self._respond_error(request_id, code, reason, error.code)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - never let one request kill the connection
            # A bug: the traceback goes to the log under an id; the client gets the id only.
            error_id = uuid.uuid4().hex[:12]
            self.log.opt(exception=error).error("signaling: {} failed (error id {})", method, error_id)
            self._respond_error(request_id, 500, f"internal error (id {error_id})", "internal_error")
        else:
            self._respond_ok(request_id, result)

    def _on_response(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        future = self._pending.get(request_id) if type(request_id) is int else None
        if future is None or future.done():
            self.log.warning("signaling: response to unknown request {!r} ignored", request_id)
            return
        if message.get("ok") is True:
            data = message.get("data")
            future.set_result(data if data is not None else {})
        else:
            code = message.get("errorCode")
            reason = message.get("errorReason")
            future.set_exception(
                ProtooError(code if type(code) is int else 500, str(reason) if reason is not None else "error")
            )


def _being_cancelled() -> bool:
    """Is the running task itself being cancelled (not merely awaiting a cancelled task)?"""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0

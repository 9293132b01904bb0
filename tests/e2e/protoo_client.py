"""A small protoo client over aiohttp's WebSocket client (what protoo-client does).

- ``await ProtooClient.connect(url)`` opens the socket with subprotocol ``protoo``;
- ``await client.request(method, data)`` returns the response data or raises
  :class:`ProtooClientError` (``code``, ``reason``);
- server requests go to ``client.on_request`` (an async ``(method, data) ->
  data``; by default every one is accepted with ``{}``), and are recorded in
  ``client.server_requests``;
- notifications are recorded in ``client.notifications``;
  ``await client.wait_for(...)`` waits for a matching notification or request.

``send_raw``/``wait_response`` are for protocol tests that send malformed frames.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp


class ProtooClientError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


RequestHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]


async def _accept(method: str, data: dict[str, Any]) -> dict[str, Any]:
    return {}


class ProtooClient:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, own_session: bool) -> None:
        self.session = session
        self.ws = ws
        self._own_session = own_session
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        self.server_requests: list[tuple[str, dict[str, Any]]] = []
        self.on_request: RequestHandler = _accept
        self._changed = asyncio.Condition()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._reader = asyncio.ensure_future(self._read())
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    async def connect(
        cls,
        url: str,
        session: aiohttp.ClientSession | None = None,
        protocols: tuple[str, ...] = ("protoo",),
        **kwargs: Any,
    ) -> ProtooClient:
        own = session is None
        session = session or aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, protocols=protocols, max_msg_size=0, **kwargs)
        except BaseException:
            if own:
                await session.close()
            raise
        return cls(session, ws, own)

    # -- sending ----------------------------------------------------------------------

    async def send_raw(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            await self.ws.send_bytes(text)
        else:
            await self.ws.send_str(text)

    def next_id(self) -> int:
        return next(self._ids)

    async def wait_response(self, request_id: int, timeout: float = 10) -> dict[str, Any]:
        """The raw response message to ``request_id``."""
        future = self._pending.setdefault(request_id, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def request(self, method: str, data: dict[str, Any] | None = None, timeout: float = 15) -> Any:
        request_id = self.next_id()
        future = self._pending.setdefault(request_id, asyncio.get_running_loop().create_future())
        await self.ws.send_str(json.dumps({"request": True, "id": request_id, "method": method, "data": data or {}}))
        try:
            response = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)
        if response.get("ok"):
            return response.get("data")
        raise ProtooClientError(response.get("errorCode"), response.get("errorReason"))

    # -- receiving --------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    if message.type == aiohttp.WSMsgType.CLOSE:
                        self.close_reason = message.extra
                    break
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                body = json.loads(message.data)
                if body.get("response"):
                    future = self._pending.get(body.get("id"))
                    if future is None:
                        future = self._pending.setdefault(body.get("id"), asyncio.get_running_loop().create_future())
                    if not future.done():
                        future.set_result(body)
                elif body.get("request"):
                    self.server_requests.append((body["method"], body.get("data") or {}))
                    task = asyncio.ensure_future(self._answer(body))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif body.get("notification"):
                    self.notifications.append((body["method"], body.get("data") or {}))
                async with self._changed:
                    self._changed.notify_all()
        finally:
            if not self.ws.closed:
                await self.ws.close()
            self.close_code = self.ws.close_code
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))
            async with self._changed:
                self._changed.notify_all()

    async def _answer(self, body: dict[str, Any]) -> None:
        try:
            data = await self.on_request(body["method"], body.get("data") or {})
            reply = {"response": True, "id": body["id"], "ok": True, "data": data or {}}
        except ProtooClientError as error:
            reply = {
                "response": True,
                "id": body["id"],
                "ok": False,
                "errorCode": error.code,
                "errorReason": error.reason,
            }
        except Exception as error:
            reply = {"response": True, "id": body["id"], "ok": False, "errorCode": 500, "errorReason": str(error)}
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(reply))

    def _match(
        self, kind: str, method: str, where: Callable[[dict[str, Any]], bool] | None, start: int
    ) -> dict[str, Any] | None:
        items = self.notifications if kind == "notification" else self.server_requests
        for name, data in items[start:]:
            if name == method and (where is None or where(data)):
                return data
        return None

    async def wait_for(
        self,
        method: str,
        where: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 10,
        kind: str = "notification",
        start: int = 0,
    ) -> dict[str, Any]:
        """The first notification (or ``kind="request"``) ``method`` matching ``where``."""

        async def wait() -> dict[str, Any]:
            async with self._changed:
                while True:
                    found = self._match(kind, method, where, start)
                    if found is not None:
                        return found
                    if self.closed.is_set():
                        raise ConnectionError(f"closed before {kind} {method}")
                    await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout)

    def count(self, method: str, kind: str = "notification") -> int:
        items = self.notifications if kind == "notification" else self.server_requests
        return sum(1 for name, _ in items if name == method)

    async def drop(self) -> None:
        """Lose the connection without a close frame, as a network failure does."""
        self.ws._writer.transport.abort()  # aiohttp internals: the TCP transport
        await asyncio.wait_for(self.closed.wait(), 5)
        if self._own_session:
            await self.session.close()

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self.closed.wait(), 5)
        for task in list(self._tasks):
            task.cancel()
        if self._own_session:
            await self.session.close()

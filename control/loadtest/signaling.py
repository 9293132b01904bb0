"""A minimal protoo client (the signaling of mediasoup-demo, spoken by Parley) for the load tool."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

__all__ = ["ProtooClient", "SignalingError"]

ServerRequestHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
NotificationHandler = Callable[[str, dict[str, Any]], None]


class SignalingError(Exception):
    """An error response from the server (``code`` is protoo's errorCode, an HTTP status)."""

    def __init__(self, method: str, code: int | None, reason: str | None) -> None:
        super().__init__(f"{method}: {code} {reason}")
        self.code = code
        self.reason = reason


async def _accept(_method: str, _data: dict[str, Any]) -> dict[str, Any]:
    return {}


def _ignore(_method: str, _data: dict[str, Any]) -> None:
    return None


class ProtooClient:
    """One WebSocket (subprotocol ``protoo``): requests, the server's requests
    (``on_request``) and notifications (``on_notification``, ignored unless set)."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.on_request: ServerRequestHandler = _accept
        self.on_notification: NotificationHandler = _ignore
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, url: str, timeout: float) -> ProtooClient:  # noqa: ASYNC109 - one bound for connect + upgrade
        async with asyncio.timeout(timeout):
            ws = await session.ws_connect(url, protocols=("protoo",), max_msg_size=0)
        return cls(session, ws)

    async def request(self, method: str, data: dict[str, Any] | None = None, timeout: float = 20.0) -> Any:  # noqa: ASYNC109
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.ws.send_str(
                json.dumps({"request": True, "id": request_id, "method": method, "data": data or {}})
            )
            async with asyncio.timeout(timeout):
                response = await future
        finally:
            self._pending.pop(request_id, None)
        if response.get("ok"):
            return response.get("data")
        raise SignalingError(method, response.get("errorCode"), response.get("errorReason"))

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                body = json.loads(message.data)
                if body.get("response"):
                    future = self._pending.get(body.get("id", -1))
                    if future is not None and not future.done():
                        future.set_result(body)
                elif body.get("request"):
                    task = asyncio.ensure_future(self._answer(body))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif body.get("notification"):
                    self.on_notification(body.get("method", ""), body.get("data") or {})
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("signaling connection closed"))

    async def _answer(self, body: dict[str, Any]) -> None:
        try:
            data = await self.on_request(body.get("method", ""), body.get("data") or {})
            reply: dict[str, Any] = {"response": True, "id": body.get("id"), "ok": True, "data": data}
        except Exception as error:  # noqa: BLE001 - answered as an error, the server decides
            reply = {"response": True, "id": body.get("id"), "ok": False, "errorCode": 500, "errorReason": str(error)}
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_str(json.dumps(reply))

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader

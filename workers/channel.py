"""The pipe channel to one ``mediasoup-worker`` process.

Wire format (mediasoup's ``Channel``): every frame is a 4-byte little-endian
length followed by one ``FBS.Message.Message``. We write requests and
notifications to the worker's fd 3 and read responses, notifications and log
lines from its fd 4.

Reading is an asyncio ``Protocol`` on a non-blocking socket, so the event loop
never blocks however fast the worker talks; frames are parsed in place from one
receive buffer. Requests carry an id and wait in a pending map for their
response; each has a timeout, and closing the channel (the worker exited, or the
socket reached EOF) fails every pending request at once instead of letting them
time out.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, Callable

import flatbuffers
from loguru import logger

from workers.errors import (
    ChannelTimeoutError,
    InvalidStateError,
    MediasoupError,
    MediasoupTypeError,
    NotFoundError,
)
from workers.fbs import FBS  # noqa: F401  (puts the generated package on sys.path)

import FBS.Log.Log as FbsLog  # noqa: E402
import FBS.Message.Body as FbsMessageBody  # noqa: E402
import FBS.Message.Message as FbsMessage  # noqa: E402
import FBS.Notification.Notification as FbsNotification  # noqa: E402
import FBS.Request.Request as FbsRequest  # noqa: E402
import FBS.Request.Method as FbsMethod  # noqa: E402
import FBS.Response.Response as FbsResponse  # noqa: E402

MESSAGE_MAX_LEN = 8 * 1024 * 1024
PAYLOAD_MAX_LEN = MESSAGE_MAX_LEN - 4
DEFAULT_REQUEST_TIMEOUT = 15.0

_METHOD_NAMES = {
    value: name for name, value in vars(FbsMethod.Method).items() if not name.startswith("_")
}
_LEN = struct.Struct("<I")

NotificationHandler = Callable[[int, Any], None]


def method_name(method: int) -> str:
    return _METHOD_NAMES.get(method, str(method))


class _Reader(asyncio.Protocol):
    """Feeds bytes from the worker's fd 4 to the channel."""

    def __init__(self, channel: "Channel") -> None:
        self._channel = channel

    def data_received(self, data: bytes) -> None:
        self._channel._on_data(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel._on_reader_lost(exc)


class _Writer(asyncio.Protocol):
    """Holds the transport for the worker's fd 3; EOF here means the worker is gone."""

    def __init__(self, channel: "Channel") -> None:
        self._channel = channel

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel._on_reader_lost(exc)


class _Pending:
    __slots__ = ("future", "method", "timer")

    def __init__(self, future: asyncio.Future, method: int, timer: asyncio.TimerHandle) -> None:
        self.future = future
        self.method = method
        self.timer = timer


class Channel:
    """Request/response and notification channel to one worker process."""

    def __init__(self, pid: int, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.pid = pid
        self.request_timeout = request_timeout
        self.builder = flatbuffers.Builder(1024)
        self._closed = False
        self._next_id = 0
        self._pending: dict[int, _Pending] = {}
        self._handlers: dict[str, NotificationHandler] = {}
        self._recv = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: asyncio.WriteTransport | None = None
        self._reader: asyncio.ReadTransport | None = None
        self._log = logger.bind(worker_pid=pid)

    async def connect(self, write_sock: socket.socket, read_sock: socket.socket) -> None:
        """Attach to our ends of the two socket pairs (fd 3 and fd 4 of the worker)."""
        self._loop = asyncio.get_running_loop()
        self._writer, _ = await self._loop.create_unix_connection(
            lambda: _Writer(self), sock=write_sock
        )
        self._reader, _ = await self._loop.create_unix_connection(
            lambda: _Reader(self), sock=read_sock
        )

    @property
    def closed(self) -> bool:
        return self._closed

    # -- subscriptions ---------------------------------------------------------------

    def subscribe(self, handler_id: str, handler: NotificationHandler) -> None:
        """Route notifications whose handlerId is ``handler_id`` to ``handler(event, body)``."""
        self._handlers[handler_id] = handler

    def unsubscribe(self, handler_id: str) -> None:
        self._handlers.pop(handler_id, None)

    # -- sending ---------------------------------------------------------------------

    def _handler_offset(self, handler_id: str) -> int:
        return self.builder.CreateString(handler_id)

    def _send(self, message_offset: int) -> None:
        builder = self.builder
        builder.FinishSizePrefixed(message_offset)
        frame = builder.Output()
        builder.Clear()
        if len(frame) > MESSAGE_MAX_LEN:
            raise MediasoupError(f"message too big ({len(frame)} bytes)")
        assert self._writer is not None
        self._writer.write(frame)

    def request(
        self,
        method: int,
        body_type: int = 0,
        body_offset: int = 0,
        handler_id: str = "",
        timeout: float | None = None,
    ) -> asyncio.Future:
        """Send a request; the returned future resolves to the ``FBS.Response``.

        The body (if any) must already be built in ``self.builder``; building and
        sending happen without an ``await`` in between, so one builder serves
        every caller.
        """
        if self._closed:
            self.builder.Clear()
            raise InvalidStateError(f"Channel closed, cannot send request [method:{method_name(method)}]")
        self._next_id = self._next_id + 1 if self._next_id < 0xFFFFFFFF else 1
        request_id = self._next_id
        builder = self.builder
        handler = builder.CreateString(handler_id)
        FbsRequest.Start(builder)
        FbsRequest.AddId(builder, request_id)
        FbsRequest.AddMethod(builder, method)
        FbsRequest.AddHandlerId(builder, handler)
        if body_type:
            FbsRequest.AddBodyType(builder, body_type)
            FbsRequest.AddBody(builder, body_offset)
        request_offset = FbsRequest.End(builder)
        FbsMessage.Start(builder)
        FbsMessage.AddDataType(builder, FbsMessageBody.Body.Request)
        FbsMessage.AddData(builder, request_offset)
        try:
            self._send(FbsMessage.End(builder))
        except Exception:
            builder.Clear()
            raise
        assert self._loop is not None
        future = self._loop.create_future()
        timer = self._loop.call_later(
            timeout if timeout is not None else self.request_timeout, self._on_timeout, request_id
        )
        self._pending[request_id] = _Pending(future, method, timer)
        return future

    def notify(self, event: int, body_type: int = 0, body_offset: int = 0, handler_id: str = "") -> None:
        """Send a notification (no response expected)."""
        if self._closed:
            self.builder.Clear()
            raise InvalidStateError(f"Channel closed, cannot send notification [event:{event}]")
        builder = self.builder
        handler = builder.CreateString(handler_id)
        FbsNotification.Start(builder)
        FbsNotification.AddHandlerId(builder, handler)
        FbsNotification.AddEvent(builder, event)
        if body_type:
            FbsNotification.AddBodyType(builder, body_type)
            FbsNotification.AddBody(builder, body_offset)
        notification_offset = FbsNotification.End(builder)
        FbsMessage.Start(builder)
        FbsMessage.AddDataType(builder, FbsMessageBody.Body.Notification)
        FbsMessage.AddData(builder, notification_offset)
        try:
            self._send(FbsMessage.End(builder))
        except Exception as error:  # a notification is best effort, as in mediasoup
            builder.Clear()
            self._log.error("sending notification failed: {}", error)

    # -- receiving -------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        recv = self._recv
        recv += data
        if len(recv) > PAYLOAD_MAX_LEN and not self._complete_frame_available(recv):
            self._log.error("receiving buffer is full, discarding all data in it")
            recv.clear()
            return
        start = 0
        end = len(recv)
        view = memoryview(recv)
        try:
            while end - start >= 4:
                (length,) = _LEN.unpack_from(recv, start)
                if end - start - 4 < length:
                    break
                frame = bytes(view[start + 4 : start + 4 + length])
                start += 4 + length
                self._dispatch(frame)
        finally:
            view.release()
        if start:
            del recv[:start]

    @staticmethod
    def _complete_frame_available(recv: bytearray) -> bool:
        return len(recv) >= 4 and _LEN.unpack_from(recv, 0)[0] <= len(recv) - 4

    def _dispatch(self, frame: bytes) -> None:
        try:
            message = FbsMessage.Message.GetRootAs(frame, 0)
            body_type = message.DataType()
            table = message.Data()
            if body_type == FbsMessageBody.Body.Response:
                response = FbsResponse.Response()
                response.Init(table.Bytes, table.Pos)
                self._on_response(response)
            elif body_type == FbsMessageBody.Body.Notification:
                notification = FbsNotification.Notification()
                notification.Init(table.Bytes, table.Pos)
                self._on_notification(notification)
            elif body_type == FbsMessageBody.Body.Log:
                log = FbsLog.Log()
                log.Init(table.Bytes, table.Pos)
                self._on_log(log.Data().decode("utf-8", "replace"))
            else:
                self._log.warning("unexpected message from worker (body type {})", body_type)
        except Exception as error:  # never let a bad frame kill the reader
            self._log.exception("invalid message from the worker: {}", error)

    def _on_response(self, response: Any) -> None:
        pending = self._pending.pop(response.Id(), None)
        if pending is None:
            self._log.error("response {} does not match any sent request", response.Id())
            return
        pending.timer.cancel()
        if pending.future.done():
            return
        if response.Accepted():
            pending.future.set_result(response)
            return
        kind = (response.Error() or b"").decode()
        reason = (response.Reason() or b"").decode()
        self._log.warning("request failed [method:{}]: {}", method_name(pending.method), reason)
        if kind == "TypeError":
            pending.future.set_exception(MediasoupTypeError(reason))
        elif kind == "NotFoundError":
            pending.future.set_exception(NotFoundError(reason))
        else:
            pending.future.set_exception(MediasoupError(reason))

    def _on_notification(self, notification: Any) -> None:
        handler = self._handlers.get(notification.HandlerId().decode())
        if handler is None:
            return
        assert self._loop is not None
        self._loop.call_soon(self._run_handler, handler, notification)

    def _run_handler(self, handler: NotificationHandler, notification: Any) -> None:
        try:
            handler(notification.Event(), notification)
        except Exception:
            self._log.exception("notification handler failed")

    def _on_log(self, line: str) -> None:
        if not line:
            return
        level, text = line[0], line[1:]
        if level == "D":
            self._log.debug("[worker] {}", text)
        elif level == "W":
            self._log.warning("[worker] {}", text)
        elif level == "E":
            self._log.error("[worker] {}", text)
        else:  # 'X': dump output the worker prints on request
            self._log.info("[worker] {}", text)

    def _on_timeout(self, request_id: int) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(
                ChannelTimeoutError(f"request timed out [method:{method_name(pending.method)}, id:{request_id}]")
            )

    def _on_reader_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            self._log.debug("channel to worker lost: {}", exc)
            self.close()

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the sockets and fail every pending request immediately."""
        if self._closed:
            return
        self._closed = True
        pending, self._pending = self._pending, {}
        for request_id, entry in pending.items():
            entry.timer.cancel()
            if not entry.future.done():
                entry.future.set_exception(
                    InvalidStateError(
                        f"Channel closed, pending request aborted [method:{method_name(entry.method)}, id:{request_id}]"
                    )
                )
        self._handlers.clear()
        for transport in (self._writer, self._reader):
            if transport is not None:
                transport.close()

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

Every call of the API is at least one round trip, so the channel's own costs
are kept small. A frame's header (``Message`` + ``Request``/``Notification``)
comes from a template per method and handler-id length, with the id patched
in; the body is a fragment (``fbs_blob``) built by the caller, either with the
generated builder functions in ``self.builder`` (``request``) or written
directly (``request_fragment``). Incoming headers are read with ``struct``
(``fbs_reader``); only the body is left to the caller's parser.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from functools import cache
from typing import Any, NamedTuple

from loguru import logger

from workers.errors import (
    ChannelTimeoutError,
    InvalidStateError,
    MediasoupError,
    MediasoupTypeError,
    NotFoundError,
)
from workers.fbs import FBS  # noqa: F401  (puts the generated package on sys.path)
from workers.fbs_blob import PADDING, U32, Blob, Fragment, TableLayout, builder_fragment, table_layout
from workers.fbs_builder import FastBuilder
from workers.fbs_reader import deref, field_offsets, string

import FBS.Message.Body as FbsMessageBody
import FBS.Notification.Notification as FbsNotification
import FBS.Request.Method as FbsMethod
import FBS.Response.Response as FbsResponse

MESSAGE_MAX_LEN = 8 * 1024 * 1024
PAYLOAD_MAX_LEN = MESSAGE_MAX_LEN - 4
DEFAULT_REQUEST_TIMEOUT = 15.0

_METHOD_NAMES = {value: name for name, value in vars(FbsMethod.Method).items() if not name.startswith("_")}
_LEN = struct.Struct("<I")
_BODY_REQUEST = FbsMessageBody.Body.Request
_BODY_RESPONSE = FbsMessageBody.Body.Response
_BODY_NOTIFICATION = FbsMessageBody.Body.Notification
_BODY_LOG = FbsMessageBody.Body.Log

# Frame layouts (slot numbers from message.fbs, request.fbs, notification.fbs).
# The frame header is written directly (see ``_frame``): the generated builder
# functions cost ~100 us per request, a header template a few.
_MESSAGE = table_layout(((0, "u8"), (1, "ref")))  # data_type, data
_REQUEST = table_layout(((0, "u32"), (2, "ref"), (1, "u8")))  # id, handler_id, method
_REQUEST_WITH_BODY = table_layout(((0, "u32"), (2, "ref"), (4, "ref"), (1, "u8"), (3, "u8")))  # ..., body, body_type
_NOTIFICATION = table_layout(((0, "ref"), (1, "u8")))  # handler_id, event
_NOTIFICATION_WITH_BODY = table_layout(((0, "ref"), (3, "ref"), (1, "u8"), (2, "u8")))  # ..., body, body_type


#: What the worker's ``MS_THROW_ERROR``/``MS_THROW_TYPE_ERROR`` log (at its error level)
#: just before throwing: ``Class::Method() | throwing MediaSoupError: reason``.
_THROWN = (" | throwing MediaSoupError: ", " | throwing MediaSoupTypeError: ")


def is_thrown_error(text: str) -> bool:
    """Is this worker error line the one logged before a throw?

    Such a throw is caught by the worker: answered to the request that caused it (its
    caller here gets a :class:`~workers.errors.MediasoupError`: a client's bad request
    becomes its 4xx, a failure of ours is logged there), or reported by an error line
    of its own (a failed notification, a worker that cannot start). So this line is a
    warning; every other error line stays an error."""
    return any(marker in text for marker in _THROWN)


class _Header(NamedTuple):
    """A frame up to its body: size prefix, root offset, the ``Message`` table, the
    ``Request`` or ``Notification`` table and its handler id (zeroed), written
    parent first with ``fbs_blob``; what varies is patched in by ``_frame``."""

    data: bytes
    id_position: int  # the request id (-1: a notification)
    handler_position: int  # the handler id's bytes
    body_ref_position: int  # the reference to the body (-1: no body)


def _header(data_type: int, layout: TableLayout, values: tuple[Any, ...], handler_length: int) -> _Header:
    blob = Blob(bytearray(8))  # size prefix, then the root offset
    message = blob.table(_MESSAGE, (data_type, 0))
    blob.patch(4, message)
    inner = blob.table(layout, values)
    blob.patch(message + _MESSAGE.ref_positions[0], inner)
    refs = layout.ref_positions
    blob.patch(inner + refs[0], blob.utf8_string(bytes(handler_length)))
    handler_position = len(blob.data) - handler_length - 1
    id_position = inner + layout.field_positions[0] if data_type == _BODY_REQUEST else -1
    body_ref_position = inner + refs[1] if len(refs) > 1 else -1
    return _Header(bytes(blob.data), id_position, handler_position, body_ref_position)


@cache
def _request_header(method: int, body_type: int, handler_length: int) -> _Header:
    if body_type:
        return _header(_BODY_REQUEST, _REQUEST_WITH_BODY, (0, 0, 0, method, body_type), handler_length)
    return _header(_BODY_REQUEST, _REQUEST, (0, 0, method), handler_length)


@cache
def _notification_header(event: int, body_type: int, handler_length: int) -> _Header:
    if body_type:
        return _header(_BODY_NOTIFICATION, _NOTIFICATION_WITH_BODY, (0, 0, event, body_type), handler_length)
    return _header(_BODY_NOTIFICATION, _NOTIFICATION, (0, event), handler_length)


NotificationHandler = Callable[[int, Any], None]
#: ``hook(method, seconds)``: called once per answered request with the request's
#: ``FBS.Request.Method`` value and its round-trip time (see ``Channel.timing_hook``).
RequestTimingHook = Callable[[int, float], None]


def method_name(method: int) -> str:
    name: str = _METHOD_NAMES.get(method, str(method))
    return name


def _frame(header: _Header, request_id: int, handler_id: bytes, body: Fragment | None) -> bytearray:
    """A size-prefixed ``FBS.Message``: ``header`` with the request id and handler id
    patched in, then the body fragment (8-aligned, as ``fbs_blob`` writes it).
    The worker reads it like the builder's output (the same tables, laid out
    in another order)."""
    frame = bytearray(header.data)
    if header.id_position >= 0:
        U32.pack_into(frame, header.id_position, request_id)
    frame[header.handler_position : header.handler_position + len(handler_id)] = handler_id
    if body is not None:
        frame += PADDING[-len(frame) % 8]
        root = len(frame) + body[1]
        frame += body[0]
        U32.pack_into(frame, header.body_ref_position, root - header.body_ref_position)
    U32.pack_into(frame, 0, len(frame) - 4)
    return frame


class ChannelResponse(FbsResponse.Response):  # type: ignore[misc]  # flatc output is untyped (Any)
    """A worker response: the generated ``FBS.Response.Response``, plus where its
    body is, as the channel read it (``fbs_reader`` parsers start from there)."""

    __slots__ = ("body_position", "buffer")

    def __init__(self, buffer: bytes, table: int, body_position: int | None) -> None:
        self.Init(buffer, table)
        self.buffer = buffer
        self.body_position = body_position


class _Reader(asyncio.Protocol):
    """Feeds bytes from the worker's fd 4 to the channel."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def data_received(self, data: bytes) -> None:
        self._channel._on_data(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel._on_reader_lost(exc)


class _Writer(asyncio.Protocol):
    """Holds the transport for the worker's fd 3; EOF here means the worker is gone."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel._on_reader_lost(exc)


class _Pending:
    __slots__ = ("deadline", "future", "method", "sent")

    def __init__(self, future: asyncio.Future[Any], method: int, deadline: float, sent: float) -> None:
        self.future = future
        self.method = method
        self.deadline = deadline
        self.sent = sent


class Channel:
    """Request/response and notification channel to one worker process."""

    def __init__(self, pid: int, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.pid = pid
        self.request_timeout = request_timeout
        self.builder = FastBuilder(1024)
        self._closed = False
        self._next_id = 0
        self._pending: dict[int, _Pending] = {}
        # One timer for the earliest deadline of the pending requests, not one
        # per request (see ``_on_deadline``).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = 0.0
        self._handlers: dict[str, NotificationHandler] = {}
        self._recv = bytearray()
        #: Bytes read from the worker so far: the pool's health probe tells a busy
        #: worker (answering others while the probe waits in line) from a hung one.
        self.received_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: asyncio.WriteTransport | None = None
        self._reader: asyncio.ReadTransport | None = None
        self._log = logger.bind(worker_pid=pid)
        #: Told the round-trip time of every answered request (monitoring, e.g. a
        #: Prometheus histogram); ``None`` costs one attribute test per response.
        #: It must not raise (it runs in the reader) and should take microseconds.
        self.timing_hook: RequestTimingHook | None = None

    async def connect(self, write_sock: socket.socket, read_sock: socket.socket) -> None:
        """Attach to our ends of the two socket pairs (fd 3 and fd 4 of the worker)."""
        self._loop = asyncio.get_running_loop()
        self._writer, _ = await self._loop.create_unix_connection(lambda: _Writer(self), sock=write_sock)
        self._reader, _ = await self._loop.create_unix_connection(lambda: _Reader(self), sock=read_sock)

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

    def request(
        self,
        method: int,
        body_type: int = 0,
        body_offset: int = 0,
        handler_id: str = "",
        timeout: float | None = None,
    ) -> asyncio.Future[Any]:
        """Send a request; the returned future resolves to a ``ChannelResponse``.

        The body (if any) must already be built in ``self.builder``; building and
        sending happen without an ``await`` in between, so one builder serves
        every caller.
        """
        builder = self.builder
        body = builder_fragment(builder, body_offset) if body_type and not self._closed else None
        builder.Clear()
        return self.request_fragment(method, body_type, body, handler_id, timeout)

    def request_fragment(
        self,
        method: int,
        body_type: int = 0,
        body: Fragment | None = None,
        handler_id: str = "",
        timeout: float | None = None,
    ) -> asyncio.Future[Any]:
        """Send a request whose body is a ready ``fbs_blob`` fragment (or none)."""
        if self._closed:
            raise InvalidStateError(f"Channel closed, cannot send request [method:{method_name(method)}]")
        self._next_id = self._next_id + 1 if self._next_id < 0xFFFFFFFF else 1
        request_id = self._next_id
        if not body_type or body is None:
            body_type, body = 0, None
        handler = handler_id.encode()
        self._write(_frame(_request_header(method, body_type, len(handler)), request_id, handler, body))
        loop = self._loop
        assert loop is not None
        future = loop.create_future()
        sent = loop.time()
        deadline = sent + (timeout if timeout is not None else self.request_timeout)
        self._pending[request_id] = _Pending(future, method, deadline, sent)
        if self._timer is None or deadline < self._timer_deadline:
            self._arm_timer(deadline)
        return future

    def notify(self, event: int, body_type: int = 0, body_offset: int = 0, handler_id: str = "") -> None:
        """Send a notification (no response expected); the body as for ``request``."""
        builder = self.builder
        if self._closed:
            builder.Clear()
            raise InvalidStateError(f"Channel closed, cannot send notification [event:{event}]")
        body = builder_fragment(builder, body_offset) if body_type else None
        builder.Clear()
        handler = handler_id.encode()
        frame = _frame(_notification_header(event, body_type if body else 0, len(handler)), 0, handler, body)
        try:
            self._write(frame)
        except Exception as error:  # noqa: BLE001  (a notification is best effort, as in mediasoup)
            self._log.error("sending notification failed: {}", error)

    def _write(self, frame: bytearray) -> None:
        if len(frame) > MESSAGE_MAX_LEN:
            raise MediasoupError(f"message too big ({len(frame)} bytes)")
        assert self._writer is not None
        self._writer.write(frame)

    # -- receiving -------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        self.received_bytes += len(data)
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
        """Route one ``FBS.Message``, reading its header fields with ``struct``."""
        try:
            root = _LEN.unpack_from(frame, 0)[0]
            offsets = field_offsets(frame, root)
            body_type = frame[root + offsets[0]] if offsets and offsets[0] else 0
            if len(offsets) < 2 or not offsets[1]:
                self._log.warning("unexpected message from worker (no data)")
                return
            table = deref(frame, root + offsets[1])
            if body_type == _BODY_RESPONSE:
                self._on_response(frame, table)
            elif body_type == _BODY_NOTIFICATION:
                self._on_notification(frame, table)
            elif body_type == _BODY_LOG:
                log_offsets = field_offsets(frame, table)
                line = string(frame, table + log_offsets[0]) if log_offsets and log_offsets[0] else ""
                self._on_log(line)
            else:
                self._log.warning("unexpected message from worker (body type {})", body_type)
        except Exception as error:  # noqa: BLE001  (never let a bad frame kill the reader)
            self._log.exception("invalid message from the worker: {}", error)

    def _on_response(self, frame: bytes, table: int) -> None:
        # FBS.Response: id (0), accepted (1), body_type (2), body (3), error (4), reason (5).
        offsets = field_offsets(frame, table) + (0, 0, 0, 0, 0, 0)
        request_id = _LEN.unpack_from(frame, table + offsets[0])[0] if offsets[0] else 0
        pending = self._pending.pop(request_id, None)
        if pending is None:
            self._log.error("response {} does not match any sent request", request_id)
            return
        hook = self.timing_hook
        if hook is not None:
            hook(pending.method, self._loop.time() - pending.sent)  # type: ignore[union-attr]  # set by connect()
        if pending.future.done():
            return
        if offsets[1] and frame[table + offsets[1]]:
            body = deref(frame, table + offsets[3]) if offsets[3] else None
            pending.future.set_result(ChannelResponse(frame, table, body))
            return
        kind = string(frame, table + offsets[4]) if offsets[4] else ""
        reason = string(frame, table + offsets[5]) if offsets[5] else ""
        self._log.warning("request failed [method:{}]: {}", method_name(pending.method), reason)
        if kind == "TypeError":
            pending.future.set_exception(MediasoupTypeError(reason))
        elif kind == "NotFoundError":
            pending.future.set_exception(NotFoundError(reason))
        else:
            pending.future.set_exception(MediasoupError(reason))

    def _on_notification(self, frame: bytes, table: int) -> None:
        # FBS.Notification: handler_id (0), event (1), body_type (2), body (3).
        offsets = field_offsets(frame, table) + (0, 0)
        handler_id = string(frame, table + offsets[0]) if offsets[0] else ""
        event = frame[table + offsets[1]] if offsets[1] else 0
        notification = FbsNotification.Notification()
        notification.Init(frame, table)
        assert self._loop is not None
        self._loop.call_soon(self._run_handler, handler_id, event, notification)

    def _run_handler(self, handler_id: str, event: int, notification: Any) -> None:
        """Deliver one notification to the entity subscribed to ``handler_id`` *now*:
        an entity subscribes when the answer that creates it has woken its creator, so a
        notification read in the same chunk as that answer (a producer paused right
        after a consume: the consumer's ``producerpause`` follows the consume answer)
        must be looked up after that wake-up, which ``call_soon`` runs first, not when
        it was read (it was lost: the consumer kept ``producerPaused`` false)."""
        handler = self._handlers.get(handler_id)
        if handler is None:
            return
        try:
            handler(event, notification)
        except Exception:  # noqa: BLE001  (one entity's bad handler must not stop the others' notifications)
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
            (self._log.warning if is_thrown_error(text) else self._log.error)("[worker] {}", text)
        else:  # 'X': dump output the worker prints on request
            self._log.info("[worker] {}", text)

    def _arm_timer(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_at(deadline, self._on_deadline)
        self._timer_deadline = deadline

    def _on_deadline(self) -> None:
        """Time out the requests whose deadline has come, then wait for the next one.

        Answered requests leave no timer behind to cancel: a timer per request
        (create, then cancel on the response) was a visible share of a round
        trip's cost. The loop runs this exactly when it would have run the
        earliest request's own timer.
        """
        self._timer = None
        now = self._timer_deadline
        expired = [request_id for request_id, entry in self._pending.items() if entry.deadline <= now]
        for request_id in expired:
            self._on_timeout(request_id)
        if self._pending:
            self._arm_timer(min(entry.deadline for entry in self._pending.values()))

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for request_id, entry in pending.items():
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

"""Raw passthrough of a relayed connection: one WebSocket, end to end between the
client and the room's node, whose bytes cross this node unparsed.

The relay (:mod:`control.cluster.relay`) wrote the client's own upgrade to the room's
node and answers the client with that node's 101 verbatim (:class:`SplicedResponse`):
its ``Sec-WebSocket-Accept`` is computed from the client's own key, its subprotocol
and extensions are what the two ends agreed. From then on each chunk read on one
socket is written to the other (aiohttp's protocol still owns the client's socket;
the "parser" installed there takes its bytes; the room's node's socket is a
:class:`~control.cluster.links.Link`). Only the room's node's direction is followed
frame by frame, by header alone, to know whether it sent a close frame: if its
connection drops without one, this node sends the client a 4002 close ("reconnect")
itself. The room's node reads and checks every frame the client sends (size limits,
protoo), and the relay token still proves this node to it.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Final, Protocol

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

__all__ = ["Splice", "SplicedResponse", "close_frame"]

#: Bytes waiting in one socket's write buffer before the other socket stops being read.
HIGH_WATER: Final = 256 * 1024
_OP_CLOSE: Final = 0x8


class Socket(Protocol):
    """One side's asyncio protocol (aiohttp's server protocol, or a node link): its
    transport, and a wait for its write buffer to drain."""

    transport: asyncio.Transport | None

    async def _drain_helper(self) -> None: ...


def close_frame(code: int, reason: str) -> bytes:
    """An unmasked close frame (server to client)."""
    payload = struct.pack("!H", code) + reason.encode()[:120]
    return bytes((0x80 | _OP_CLOSE, len(payload))) + payload


class _Leg:
    """One socket of the splice: the "parser" aiohttp's protocol feeds its bytes to."""

    def __init__(self, splice: Splice, protocol: Socket) -> None:
        self.splice = splice
        self.protocol = protocol
        self.other: _Leg | None = None
        self.eof = False

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.protocol.transport

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        assert self.other is not None
        self.splice.forward(self, self.other, data)
        return False, b""

    def feed_eof(self) -> None:
        if not self.eof:
            self.eof = True
            self.splice.lost(self)


class _FrameWatch:
    """Follows the frame boundaries of unmasked server frames by their headers alone
    (payloads are skipped, not read): has a close frame gone through?"""

    def __init__(self) -> None:
        self.header = bytearray()
        self.skip = 0
        self.closed = False

    def feed(self, data: bytes) -> None:
        index, size = 0, len(data)
        while index < size and not self.closed:
            if self.skip:
                step = min(self.skip, size - index)
                self.skip -= step
                index += step
                continue
            length = self.header[1] & 0x7F if len(self.header) >= 2 else 0
            full = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            if len(self.header) < full:
                take = min(full - len(self.header), size - index)
                self.header += data[index : index + take]
                index += take
                continue
            if length >= 126:
                length = int.from_bytes(self.header[2:full], "big")
            self.closed = self.header[0] & 0x0F == _OP_CLOSE
            self.header.clear()
            self.skip = length


class Splice:
    """The two sockets of one relayed client, copied to each other until one closes."""

    def __init__(self, client: Socket, upstream: Socket, reconnect: bytes) -> None:
        self.client = _Leg(self, client)
        self.upstream = _Leg(self, upstream)
        self.client.other, self.upstream.other = self.upstream, self.client
        self.watch = _FrameWatch()
        self.reconnect = reconnect
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._resuming: set[asyncio.Task[None]] = set()

    def forward(self, source: _Leg, sink: _Leg, data: bytes) -> None:
        transport = sink.transport
        if transport is None or transport.is_closing():
            return
        if source is self.upstream:
            self.watch.feed(data)
        transport.write(data)
        if transport.get_write_buffer_size() > HIGH_WATER and source.transport is not None:
            source.transport.pause_reading()
            task = asyncio.ensure_future(self._resume(source, sink))
            self._resuming.add(task)
            task.add_done_callback(self._resuming.discard)

    async def _resume(self, source: _Leg, sink: _Leg) -> None:
        try:
            await sink.protocol._drain_helper()
        except ConnectionError:
            return
        if source.transport is not None and not source.transport.is_closing():
            source.transport.resume_reading()

    def lost(self, leg: _Leg) -> None:
        """One socket closed: close the other (the client hears 4002 if the room's node
        vanished without a close frame)."""
        other = leg.other
        assert other is not None
        transport = other.transport
        if transport is not None and not transport.is_closing():
            if leg is self.upstream and not self.watch.closed:
                transport.write(self.reconnect)
            transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def close(self, frame: bytes | None = None) -> None:
        """Stop both sockets (``frame``: a close frame for the client first)."""
        for leg in (self.client, self.upstream):
            transport = leg.transport
            if transport is not None and not transport.is_closing():
                if frame is not None and leg is self.client:
                    transport.write(frame)
                transport.close()


class SplicedResponse(web.StreamResponse):
    """The client's upgrade answered with the room's node's response head, verbatim
    (its 101: see the module doc); the bytes the client sends from then on go to the
    splice's client leg, unread by this node."""

    def __init__(self, head: bytes, leg: _Leg) -> None:
        super().__init__(status=101)
        self.head = head
        self.leg = leg
        self._started = False
        self._closed = False
        self._transport: asyncio.Transport | None = None

    @property
    def prepared(self) -> bool:
        return self._started

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._started:
            return None  # aiohttp prepares the handler's response again when it returns
        self._started = True
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed its connection during the upgrade")
        self._transport = transport
        transport.write(self.head)
        request.protocol.keep_alive(False)
        request.protocol.set_parser(self)  # type: ignore[arg-type]
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None  # the socket is the splice's

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        return self.leg.feed_data(data)

    def feed_eof(self) -> None:
        self.leg.feed_eof()

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """Close the client's socket with a close frame (this node is stopping)."""
        if self._closed:
            return False
        self._closed = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(close_frame(code, message.decode(errors="replace")))
            transport.close()
        return True

"""Raw passthrough of a relayed connection once both WebSocket handshakes are done.

The relay's two legs carry the same frames: the client masks what it sends (valid on
the leg to the room's node, where this node is the client), the room's node sends
unmasked frames (valid towards the client). With the same subprotocol and no extension
on either leg, the bytes need no parsing: each chunk read on one socket is written to
the other (aiohttp's own protocols still own the sockets; the "parsers" installed here
take their bytes). Only the room's node's direction is followed frame by frame, by
header alone, to know whether it sent a close frame: if its connection drops without
one, this node sends the client a 4002 close ("reconnect") itself. The room's node
still reads and checks every frame the client sends (size limits, protoo), and the
relay token still proves this node to it.
"""

from __future__ import annotations

import asyncio
import struct
from contextvars import ContextVar
from typing import Any, Final

import aiohttp
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol

__all__ = ["HOLD_BYTES", "Splice", "SplicedResponse", "UpstreamResponse"]

#: Bytes waiting in one socket's write buffer before the other socket stops being read.
HIGH_WATER: Final = 256 * 1024
_OP_CLOSE: Final = 0x8
#: Set by the relay around its ``ws_connect``: the room's node's bytes wait raw in an
#: :class:`UpstreamResponse` until the relay splices or parses them (task-local: the
#: cascade's links on the same session are parsed as usual).
HOLD_BYTES: ContextVar[bool] = ContextVar("parley_relay_hold_bytes", default=False)


def close_frame(code: int, reason: str) -> bytes:
    """An unmasked close frame (server to client)."""
    payload = struct.pack("!H", code) + reason.encode()[:120]
    return bytes((0x80 | _OP_CLOSE, len(payload))) + payload


class _Leg:
    """One socket of the splice: the "parser" aiohttp's protocol feeds its bytes to."""

    def __init__(self, splice: Splice, protocol: BaseProtocol) -> None:
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

    def __init__(self, client: BaseProtocol, upstream: BaseProtocol, reconnect: bytes) -> None:
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


class SplicedResponse(web.WebSocketResponse):
    """The client's upgrade, answered as usual, whose frames this node does not read:
    the bytes the client sends after its handshake go to a :class:`Splice` (held here
    until it exists: the client may speak as soon as it has the 101)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(heartbeat=None, compress=False, **kwargs)
        self.early = bytearray()
        self.eof = False
        self.leg: _Leg | None = None

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        self._ws_protocol = protocol
        self._writer = writer
        request.protocol.set_parser(self)  # type: ignore[arg-type]
        request.protocol.keep_alive(False)

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.leg is not None:
            return self.leg.feed_data(data)
        self.early += data
        return False, b""

    def feed_eof(self) -> None:
        if self.leg is not None:
            self.leg.feed_eof()
        self.eof = True

    def attach(self, leg: _Leg) -> None:
        """From now on the client's bytes go to ``leg`` (with those that came before)."""
        self.leg = leg
        if self.early:
            leg.feed_data(bytes(self.early))
            self.early.clear()
        if self.eof:
            leg.feed_eof()

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        """Close the client's socket with a close frame (a node shutting down; aiohttp
        calls this when the handler returns, after the splice closed the socket)."""
        if self._closed:
            return False
        self._closed = True
        transport = self._req.transport if self._req is not None else None
        if transport is not None and not transport.is_closing():
            transport.write(close_frame(code, message.decode(errors="replace")))
            transport.close()
        return True


class Hold:
    """What aiohttp's protocol feeds the room's node's bytes to, from the 101 on: kept
    raw until :meth:`attach` gives them to a splice leg or to aiohttp's frame parser
    (the room's node speaks first: its ``mediasoup-version`` notification may come with
    the 101, in the same read)."""

    def __init__(self, reader: Any) -> None:
        #: aiohttp's WebSocket frame parser (the frame relay's).
        self.reader = reader
        self.target: Any = None
        self.early = bytearray()
        self.eof = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.target is not None:
            result: tuple[bool, bytes] = self.target.feed_data(data)
            return result
        self.early += data
        return False, b""

    def feed_eof(self) -> None:
        if self.target is not None:
            self.target.feed_eof()
        self.eof = True

    def attach(self, target: Any) -> None:
        """From now on the bytes go to ``target`` (with those that came before)."""
        self.target = target
        if self.early:
            target.feed_data(bytes(self.early))
            self.early.clear()
        if self.eof:
            target.feed_eof()


class UpstreamResponse(aiohttp.ClientWebSocketResponse):
    """The relay session's WebSocket: while :data:`HOLD_BYTES` is set (the relay's own
    ``ws_connect``), the frame parser aiohttp gives it is wrapped in a :class:`Hold`
    (aiohttp hands the protocol ``ws_resp._parser`` right after setting it)."""

    hold: Hold | None = None
    _parser_value: Any = None

    @property
    def _parser(self) -> Any:
        return self._parser_value

    @_parser.setter
    def _parser(self, parser: Any) -> None:
        if parser is not None and HOLD_BYTES.get():
            self.hold = parser = Hold(parser)
        self._parser_value = parser

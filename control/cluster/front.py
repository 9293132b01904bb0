"""The front door: a client of a room on another node of this host is handed over before
this node does any HTTP work for it.

A node's TCP connections first meet :class:`FrontDoor`'s protocol. On the connection's
first bytes it decides, in the loop callback that read them: a complete signaling
upgrade (:func:`parse_upgrade`: strictly checked; anything unusual is not one) for a
room this node does not host and whose node, on this host, it remembers with a
handover link open (:meth:`ClusterNode.front_handover`) is handed over there at once
(:mod:`control.cluster.handover`: the request as the client wrote it plus the relay's
headers, the descriptor, nothing back) and this node closes its descriptor: no
aiohttp request, no middleware, no task, no wake-up after. Everything else (and
whatever cannot be sent) goes to aiohttp untouched, as if this protocol had never
been there: the connection's transport is handed to aiohttp's protocol with the bytes
read.

Nothing is skipped that the other node does not do: it runs the one access check,
the per-address limits (the handed-over client counts against its address there,
where it stays open) and the routing on the request, as it does on every handed-over
one; a client's own ``X-Parley-*`` header makes its request unusual (served here, as
any: its relay token is checked, a wrong one is refused). A connection that sends
nothing is closed after :data:`IDLE_SECONDS` (aiohttp's keep-alive timeout, which
guards its own connections from the start).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web
from loguru import logger
from yarl import URL

from control.cluster.handover import client_socket, handover_message

if TYPE_CHECKING:
    from control.cluster.node import ClusterNode

__all__ = ["FrontDoor", "FrontSite", "Upgrade", "parse_upgrade"]

#: A connection that has sent nothing is closed after this (aiohttp's default keep-alive timeout).
IDLE_SECONDS: Final = 75.0
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATHS: Final = frozenset({b"/", b"/ws"})  # signaling's (control.signaling.server, control.web)
_NOT_HERE: Final = frozenset({b"content-length", b"transfer-encoding"})


class Upgrade:
    """A signaling upgrade as it came: its head (up to and with its last header line),
    what followed the head, the room and peer it names."""

    __slots__ = ("head", "peer_id", "room_id", "tail")

    def __init__(self, head: bytes, tail: bytes, room_id: str, peer_id: str) -> None:
        self.head = head
        self.tail = tail
        self.room_id = room_id
        self.peer_id = peer_id


def parse_upgrade(data: bytes) -> Upgrade | None:
    """``data`` as a connection's first bytes: a complete ``GET / or /ws HTTP/1.1``
    WebSocket upgrade with a ``roomId`` in its query, or None. Strict: lines end with
    CRLF and nothing else has a CR or LF, header names are tokens, no header starts with
    ``X-Parley-`` (the relay's: only nodes write them), no body; anything else is None
    (aiohttp serves it here). The other node parses the same bytes with aiohttp again."""
    if not data.startswith(b"GET /"):
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[: end + 2]
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        return None
    lines = head[:-2].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return None
    path, _, query = parts[1].partition(b"?")
    if path not in _PATHS:
        return None
    upgrade = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            return None
        name = name.lower()
        if name.startswith(b"x-parley-") or name in _NOT_HERE:
            return None
        if name == b"upgrade":
            upgrade = value.strip().lower() == b"websocket"
    if not upgrade:
        return None
    try:
        params = URL.build(path="/", query_string=query.decode("ascii"), encoded=True).query
    except (UnicodeDecodeError, ValueError, TypeError):
        return None
    room_id = params.get("roomId", "")
    if not room_id:
        return None
    return Upgrade(head, data[end + 4 :], room_id, params.get("peerId", ""))


class FrontDoor:
    """The protocol factory a node listens with (see the module doc): ``server`` is
    aiohttp's (``runner.server``)."""

    def __init__(self, node: ClusterNode, server: Callable[[], asyncio.Protocol]) -> None:
        self.node = node
        self.server = server
        self.idle_seconds = IDLE_SECONDS
        #: Connections that have sent nothing yet (closed with the site).
        self.waiting: set[_Front] = set()
        self._headers = node.relay.handover_headers()

    def __call__(self) -> asyncio.Protocol:
        return _Front(self)

    def choose(self, transport: asyncio.Transport, data: bytes) -> _Handover | None:
        """The handover of this connection if ``data`` (its first bytes) is a client of
        a room of another node of this host; None: serve it here. Nothing is done yet."""
        node = self.node
        if node.handover is None or node.closed:
            return None
        upgrade = parse_upgrade(data)
        if upgrade is None:
            return None
        target = node.front_handover(upgrade.room_id)
        if target is None:
            return None
        raw = client_socket(transport)
        if raw is None:
            return None
        message = handover_message(upgrade.head + self._headers + b"\r\n", upgrade.tail)
        return _Handover(target[0], target[1], message, raw.fileno(), upgrade)

    def hand_over(self, transport: asyncio.Transport, handover: _Handover) -> bool:
        """Send it (True: the client is the other node's, this node's descriptor closed;
        False: nothing was sent, serve it here)."""
        node = self.node
        transport.pause_reading()
        if not node.relay.handover_links.send(handover.path, handover.node_id, handover.message, handover.fd):
            transport.resume_reading()
            return False
        remote = _remote(transport)
        transport.close()  # this process's descriptor only: no shutdown, no linger
        node.relay.handed_over += 1
        node.relay.handed_over_early += 1
        logger.bind(room=handover.upgrade.room_id, peer=handover.upgrade.peer_id).info(
            "cluster: connection from {} handed over to node {} (front door)", remote, handover.node_id
        )
        return True

    def close(self) -> None:
        for front in list(self.waiting):
            front.close()


class _Handover:
    __slots__ = ("fd", "message", "node_id", "path", "upgrade")

    def __init__(self, path: str, node_id: str, message: bytes, fd: int, upgrade: Upgrade) -> None:
        self.path = path
        self.node_id = node_id
        self.message = message
        self.fd = fd
        self.upgrade = upgrade


def _remote(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


class _Front(asyncio.Protocol):
    """One connection until its first bytes (then aiohttp's, or handed over)."""

    __slots__ = ("_door", "_inner", "_timer", "_transport")

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self._transport: asyncio.Transport | None = None
        self._inner: asyncio.Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if transport.get_extra_info("sslcontext") is not None:
            self._to_aiohttp(b"")  # TLS: never handed over
            return
        self._door.waiting.add(self)
        self._timer = asyncio.get_running_loop().call_later(self._door.idle_seconds, self.close)

    def _settle(self) -> None:
        self._door.waiting.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _to_aiohttp(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        inner = self._door.server()
        self._inner = inner
        transport.set_protocol(inner)
        inner.connection_made(transport)
        if data:
            inner.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
            return
        self._settle()
        transport = self._transport
        assert transport is not None
        door = self._door
        try:
            handover = door.choose(transport, data)
        except Exception:  # noqa: BLE001 - whatever it was, aiohttp serves the request
            logger.opt(exception=True).warning("cluster: front door: served here after an error")
            handover = None
        if handover is None or not door.hand_over(transport, handover):
            self._to_aiohttp(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        self._settle()
        return None  # nothing sent: closed

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def close(self) -> None:
        """Close a connection that has sent nothing (idle, or the node stopping)."""
        self._settle()
        if self._inner is None and self._transport is not None:
            self._transport.close()


class FrontSite(web.TCPSite):
    """aiohttp's ``TCPSite`` listening with ``factory`` (a :class:`FrontDoor`) instead of
    the runner's server (aiohttp 3.14's ``TCPSite.start``, with that one change)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int | None,
        *,
        factory: FrontDoor,
        ssl_context: object = None,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)  # type: ignore[arg-type]
        self.factory = factory

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            self.factory,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._server = server
        self._bound_port = server.sockets[0].getsockname()[1] if server.sockets else self._port

    async def stop(self) -> None:
        await super().stop()
        self.factory.close()

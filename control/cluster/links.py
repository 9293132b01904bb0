"""Raw TCP connections to the other nodes, opened ahead of need (the relay's upstream).

A relayed client's upgrade is written by this node itself on a plain socket to the
room's node (:mod:`control.cluster.relay`), no HTTP client machinery in between.
:class:`NodeLinks` keeps, per node, a few such connections open before they are
needed: each time a relay takes one (an idle one, or a new one), a spare is opened
:data:`SPARE_DELAY_SECONDS` later, up to :data:`IDLE_MAX` idle per node.

An idle connection carries nothing: the other node sends nothing on it until it has
a request. So anything it does while idle (bytes, end of stream, an error) means it
is no longer usable, and it is closed and dropped from the pool at once: a pooled
connection is one the kernel still says is open. One idle for
:data:`IDLE_SECONDS` is closed (a quiet cluster keeps none, and none outlives the
other node's own idle timeout). A pooled connection the other node closed just as
the upgrade went out on it yields nothing at all; the relay then retries once on a
new one (:attr:`LinkLost.received` tells). Everything closes with the node.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Final, Protocol, cast

from yarl import URL

from control.cluster.stopping import stop_tasks

__all__ = ["IDLE_MAX", "IDLE_SECONDS", "Link", "LinkLost", "NodeLinks", "ResponseTooLarge"]

#: Idle connections kept per node (a burst of relays opens more; they are not kept).
IDLE_MAX: Final = 8
#: An idle connection is closed after this long (under aiohttp's server keep-alive).
IDLE_SECONDS: Final = 20.0
#: A spare is opened this long after a relay took a connection: opened at once, the
#: connect competed with the relayed client's first requests on both nodes.
SPARE_DELAY_SECONDS: Final = 0.1
#: Opening a connection to a node that does not answer fails after this long.
CONNECT_TIMEOUT_SECONDS: Final = 5.0
#: The largest response head read from a node (its 101, or a refusal's head).
MAX_HEAD_BYTES: Final = 16 * 1024

_END_OF_HEAD: Final = b"\r\n\r\n"


class Sink(Protocol):
    """What a link's bytes go to once its response head is read (a splice leg)."""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...

    def feed_eof(self) -> None: ...


class LinkLost(ConnectionError):
    """The connection closed before its response head was complete."""

    def __init__(self, received: bool) -> None:
        super().__init__("the node closed the connection" + (" mid-response" if received else ""))
        #: Had any byte of the response come? (none: a pooled connection closed under it)
        self.received = received


class ResponseTooLarge(ConnectionError):
    """The node's response head exceeded :data:`MAX_HEAD_BYTES`."""


class Link(asyncio.Protocol):
    """One connection to a node: idle in its pool, then one relayed client's upstream:
    the request head goes out, the response head is read (:meth:`response`), then the
    bytes go to a :class:`Sink` (:meth:`attach`). Flow control as aiohttp's protocols
    (``_drain_helper``), for the splice."""

    def __init__(self, on_lost: Callable[[Link], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self._on_lost = on_lost
        self.idle = True
        self.lost = False
        self._buffer = bytearray()
        self._head: asyncio.Future[bytes] | None = None
        self._sink: Sink | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink.feed_data(data)
            return
        head = self._head
        if head is None or head.done():
            if self.idle:  # nothing is expected on an idle connection: not usable
                self.close()
                return
            self._buffer += data  # after the head, before attach (reading is paused)
            return
        self._buffer += data
        end = self._buffer.find(_END_OF_HEAD)
        if end >= 0:
            end += len(_END_OF_HEAD)
            result = bytes(self._buffer[:end])
            del self._buffer[:end]
            assert self.transport is not None
            self.transport.pause_reading()  # what follows waits in the kernel until attach
            head.set_result(result)
        elif len(self._buffer) > MAX_HEAD_BYTES:
            head.set_exception(ResponseTooLarge(f"response head over {MAX_HEAD_BYTES} bytes"))
            self.close()

    def eof_received(self) -> bool:
        return False  # the transport closes: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._expiry is not None:
            self._expiry.cancel()
        self._on_lost(self)
        head = self._head
        if head is not None and not head.done():
            head.set_exception(LinkLost(received=bool(self._buffer)))
        if self._sink is not None:
            self._sink.feed_eof()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)  # the waiter raises, seeing ``lost``

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def _drain_helper(self) -> None:
        """Until the write buffer is under its low-water mark (the splice's back-pressure)."""
        if self.lost:
            raise ConnectionResetError("connection lost")
        if not self._paused:
            return
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drain)
        if self.lost:
            raise ConnectionResetError("connection lost")

    # -- use --------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self.idle and not self.lost and self.transport is not None and not self.transport.is_closing()

    def expire_after(self, seconds: float) -> None:
        self._expiry = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        if self.idle:
            self.close()

    def take(self) -> None:
        """Out of the pool: this link is one relay's from now on."""
        self.idle = False
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    async def response(self, request: bytes) -> bytes:
        """Write ``request`` (a request head), then its response head (with its final
        CRLF CRLF); what follows stays unread until :meth:`attach`."""
        if self.lost or self.transport is None or self.transport.is_closing():
            raise LinkLost(received=False)
        self._head = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._head

    def attach(self, sink: Sink) -> None:
        """From now on the bytes after the response head go to ``sink``."""
        self._sink = sink
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            sink.feed_data(data)
        if self.lost:
            sink.feed_eof()
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def _key(url: URL) -> tuple[str, str, int]:
    host, port = url.raw_host, url.port
    if host is None or port is None or url.scheme not in ("http", "https"):
        raise ValueError(f"not a node URL: {url}")
    return url.scheme, host, port


class _Pool:
    def __init__(self) -> None:
        self.idle: list[Link] = []
        self.opening = 0


class NodeLinks:
    """This node's connections to the other nodes (see the module doc)."""

    def __init__(self, *, idle_max: int = IDLE_MAX, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_max = idle_max
        self.idle_seconds = idle_seconds
        self.closed = False
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tls: ssl.SSLContext | None = None
        self._open_links: set[Link] = set()

    def idle(self, url: URL) -> int:
        """Idle connections to the node at ``url`` (tests, metrics)."""
        pool = self._pools.get(_key(url))
        return 0 if pool is None else sum(link.usable for link in pool.idle)

    @property
    def open(self) -> int:
        """Connections open to any node: idle ones and those relays hold (tests, metrics)."""
        return len(self._open_links)

    async def take(self, url: URL, *, fresh: bool = False) -> tuple[Link, bool]:
        """A connection to the node at ``url``, and whether it was idle in the pool
        (else just opened; ``fresh``: a new one in any case). A spare follows."""
        key = _key(url)
        pool = self._pools.setdefault(key, _Pool())
        while pool.idle and not fresh:
            link = pool.idle.pop()  # the most recent: the least likely to be closing
            if link.usable:
                link.take()
                self._spare(key, pool)
                return link, True
            link.close()
        self._spare(key, pool)
        link = await self._open(key)
        link.take()
        return link, False

    async def _open(self, key: tuple[str, str, int]) -> Link:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        pool = self._pools[key]

        def lost(link: Link) -> None:
            self._open_links.discard(link)
            if link in pool.idle:
                pool.idle.remove(link)

        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            _, link = await loop.create_connection(
                lambda: Link(lost), host.strip("[]"), port, ssl=tls, server_hostname=host if tls else None
            )
        if not link.lost:
            self._open_links.add(link)
        return link

    def _spare(self, key: tuple[str, str, int], pool: _Pool) -> None:
        if self.closed or len(pool.idle) + pool.opening >= self.idle_max:
            return
        pool.opening += 1
        task = asyncio.ensure_future(self._open_spare(key, pool))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_spare(self, key: tuple[str, str, int], pool: _Pool) -> None:
        try:
            await asyncio.sleep(SPARE_DELAY_SECONDS)  # after the relayed client's first requests
            link = await self._open(key)
        except (OSError, TimeoutError):
            return  # the next relay opens its own connection
        finally:
            pool.opening -= 1
        if self.closed or not link.usable or len(pool.idle) >= self.idle_max:
            link.close()
            return
        link.expire_after(self.idle_seconds)
        pool.idle.append(link)

    async def close(self) -> None:
        """Close every idle connection (those taken belong to their relays)."""
        self.closed = True
        await stop_tasks(list(self._tasks), "cluster: opening node connections")
        for pool in self._pools.values():
            for link in pool.idle:
                link.close()
            pool.idle.clear()

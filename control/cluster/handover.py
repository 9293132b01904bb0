"""Socket handover: a client's TCP connection passed to the room's node on the same host.

When the node a client reached (A) and the room's node (B) run on one host (one
kernel: the registry entry's ``host``, ``/proc/sys/kernel/random/boot_id`` unless
``CLUSTER_HOST_ID`` says otherwise, and ``handover``, the path of B's Unix socket),
A does not relay (:mod:`control.cluster.relay`): it passes the client's socket
itself to B (``SCM_RIGHTS``) with the client's upgrade request (its head, the
client's own ``X-Parley-*`` headers dropped), the relay's headers (the relay token,
placement, origin, peer's node) plus :data:`HANDOVER_HEADER`, and any byte A had read
past the request head. B adopts the socket into its own aiohttp server
(``loop.connect_accepted_socket`` with the server as protocol factory, the request fed
to it as the connection is made) and runs it as any request of its own: its limits,
its access check, its routing; it answers the client's upgrade itself (its 101 or its
refusal) and A is out of the path (no copy, no wake-up). A closes its own descriptor
only: no shutdown, no linger (the socket stays open in B).

A keeps one Unix ``SOCK_SEQPACKET`` connection per node of its host
(:class:`HandoverLinks`), opened ahead of need (at the heartbeat that shows the node)
and checked once: B takes it only from a process of its own user (``SO_PEERCRED``),
with the cluster's relay token and B's own node id (another node's socket may sit at
that path in another mount namespace: containers of one host), and answers
:data:`ACCEPTED` or :data:`REFUSED` (A relays). A lost link is opened again. Each
handover is then one message (the bytes above and the descriptor) and nothing back:
once it has left A, the client is B's, A forgets it at once and never answers it.
B failing to adopt a client it received (a broken descriptor, B stopping with
messages unread: the kernel closes their descriptors) ends the client's connection:
it reconnects. A message that cannot be sent (no link, B's queue full, B gone) is a
relay instead: nothing left A.

A hands a client over either from its request handler (after its access check and
routing: the client's first join of a room, :func:`hand_over`), or, for a room whose
node it remembers, before any of its own HTTP handling (:mod:`control.cluster.front`:
the first bytes of the connection, a strictly checked upgrade request; B does the
whole of it).

B listens at ``<DATA_DIR>/cluster/handover.sock``: the directory 0700, the socket
0600. A falls back to the relay whenever handover is impossible: another host, a TLS
connection (an SSL transport's state cannot move), B's socket missing or refusing,
bytes waiting to be written to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import os
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from loguru import logger

from control.cluster.stopping import stop_tasks

__all__ = [
    "ACCEPTED",
    "HANDOVER_HEADER",
    "REFUSED",
    "HandedOver",
    "HandoverLinks",
    "HandoverServer",
    "client_head",
    "hand_over",
    "handover_message",
    "host_identity",
    "message_tail",
]

#: Sent with the relay token: the node that wrote this request is out of the path (the
#: receiving node may not answer 421: it places the room itself, see ``ClusterNode.route``).
HANDOVER_HEADER: Final = "X-Parley-Handover"
#: B's answers to a link's first message (one byte).
ACCEPTED: Final = b"\x01"
REFUSED: Final = b"\x00"
#: How long A waits for B's answer to a new link.
HELLO_TIMEOUT_SECONDS: Final = 5.0
#: After a link could not be opened, the heartbeat does not try again for this long
#: (a handover from a request handler still does).
RETRY_SECONDS: Final = 30.0
#: The largest handover message (aiohttp's request head limits are far below).
MAX_MESSAGE: Final = 256 * 1024
_HELLO_MAGIC: Final = b"PHL2"
_HELLO: Final = struct.Struct("!4sHH")  # magic, token length, node id length
_MAGIC: Final = b"PHO2"
_PREFIX: Final = struct.Struct("!4sI")  # magic, head length
_CREDENTIALS: Final = struct.Struct("3i")  # pid, uid, gid (SO_PEERCRED)
_BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")


def host_identity(configured: str | None = None) -> str:
    """This host's identity: ``configured`` (``CLUSTER_HOST_ID``), else the kernel's boot
    id and this process's mount namespace: two nodes with the same one share a kernel (a
    descriptor can pass between them) and see the same files (each other's Unix socket;
    containers of one host do not, unless an operator says so with ``CLUSTER_HOST_ID``
    and a shared volume)."""
    if configured:
        return configured
    try:
        return f"{_BOOT_ID.read_text().strip()}/{os.readlink('/proc/self/ns/mnt')}"
    except OSError:
        return f"host:{socket.gethostname()}/{os.getpid()}"  # no /proc: no handover to others


def message_tail(protocol: object) -> bytes:
    """The bytes aiohttp's server protocol read after the upgrade's head and keeps until a
    parser is set (``RequestHandler._message_tail``, aiohttp 3.14; the cluster's tests
    fail if it moves)."""
    tail = getattr(protocol, "_message_tail", None)
    if not isinstance(tail, bytes):
        raise RuntimeError("aiohttp's RequestHandler has no _message_tail: socket handover needs updating")
    return tail


def client_head(request: web.BaseRequest, headers: list[tuple[str, str]]) -> bytes:
    """The client's request head as ``request`` was parsed (its own ``X-Parley-*`` dropped),
    with ``headers`` added."""
    version = request.version
    head = bytearray(f"{request.method} {request.raw_path} HTTP/{version.major}.{version.minor}\r\n".encode())
    for name, value in request.raw_headers:
        if not name.lower().startswith(b"x-parley-"):
            head += name + b": " + value + b"\r\n"
    for header, text in headers:
        head += f"{header}: {text}\r\n".encode()
    head += b"\r\n"
    return bytes(head)


def handover_message(head: bytes, tail: bytes) -> bytes:
    """One handover: the request head B serves (ending with its blank line), then what
    the client sent after it."""
    return _PREFIX.pack(_MAGIC, len(head)) + head + tail


def client_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    """The TCP socket under ``transport`` if it can be handed over now (not TLS, nothing
    waiting to be written to the client), else None."""
    if transport.is_closing() or transport.get_extra_info("sslcontext") is not None:
        return None  # TLS terminated here: its state lives in this process
    if transport.get_extra_info("ssl_object") is not None:
        return None
    raw = transport.get_extra_info("socket")
    if raw is None or raw.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    waiting = getattr(transport, "get_write_buffer_size", None)  # uvloop's: not asyncio.Transport
    if waiting is not None and waiting():
        return None
    return raw


class _Discard:
    """The parser of a handed-over connection on A: nothing more is read there."""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        return False, b""

    def feed_eof(self) -> None:
        return None


class HandedOver(web.StreamResponse):
    """A's answer to a handed-over client: nothing (B answers it); aiohttp then closes
    A's transport, which closes A's descriptor only."""

    def __init__(self) -> None:
        super().__init__(status=101)
        self.force_close()
        self._started = False

    @property
    def prepared(self) -> bool:
        return self._started

    async def prepare(self, request: web.BaseRequest) -> None:
        if self._started:
            return
        self._started = True
        request.protocol.keep_alive(False)
        # aiohttp would parse what it read after the upgrade's head again: it went to B.
        request.protocol.set_parser(_Discard())  # type: ignore[arg-type]

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _answer(loop: asyncio.AbstractEventLoop, unix: socket.socket) -> bytes:
    """B's one-byte answer to a new link (b"" if its end closed first)."""
    fd = unix.fileno()
    async with asyncio.timeout(HELLO_TIMEOUT_SECONDS):
        while True:
            try:
                return unix.recv(1)
            except BlockingIOError:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(fd, _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(fd)


class HandoverLinks:
    """A's end: one open, accepted Unix connection per node of this host that takes
    handovers (see the module doc), keyed by (its socket's path, its node id)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._links: dict[tuple[str, str], socket.socket] = {}
        self._opening: dict[tuple[str, str], asyncio.Task[socket.socket | None]] = {}
        self._failed: dict[tuple[str, str], float] = {}
        self.closed = False
        #: Links opened so far (tests).
        self.opened = 0

    @property
    def open(self) -> int:
        return len(self._links)

    def ready(self, path: str, node_id: str) -> socket.socket | None:
        """The open link to that node, if there is one now (no waiting)."""
        return self._links.get((path, node_id))

    def warm(self, path: str, node_id: str) -> None:
        """Open a link to that node unless one is open, opening, or failed lately."""
        key = (path, node_id)
        if self.closed or key in self._links or key in self._opening:
            return
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed < RETRY_SECONDS:
            return
        self._start(key)

    async def get(self, path: str, node_id: str) -> socket.socket | None:
        """The open link to that node, opened now if needed; None: it cannot be (relay)."""
        key = (path, node_id)
        link = self._links.get(key)
        if link is not None or self.closed:
            return link
        task = self._opening.get(key) or self._start(key)
        return await asyncio.shield(task)

    def _start(self, key: tuple[str, str]) -> asyncio.Task[socket.socket | None]:
        task = asyncio.ensure_future(self._open(key))
        self._opening[key] = task
        task.add_done_callback(lambda _: self._opening.pop(key, None))
        return task

    async def _open(self, key: tuple[str, str]) -> socket.socket | None:
        path, node_id = key
        loop = asyncio.get_running_loop()
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            unix.setblocking(False)
            node = node_id.encode()
            unix.connect(path)  # local: at once, or refused (BlockingIOError: backlog full)
            unix.send(_HELLO.pack(_HELLO_MAGIC, len(self._token), len(node)) + self._token + node)
            answer = await _answer(loop, unix)
        except (OSError, TimeoutError) as error:
            unix.close()
            self._failed[key] = time.monotonic()
            logger.warning("cluster: handover link to {} impossible ({!r}): relayed", path, error)
            return None
        except BaseException:
            unix.close()
            raise
        if answer != ACCEPTED or self.closed:
            unix.close()
            self._failed[key] = time.monotonic()
            if answer != ACCEPTED:
                logger.warning("cluster: node {} at {} refuses handovers: relayed", node_id, path)
            return None
        self._failed.pop(key, None)
        self._links[key] = unix
        self.opened += 1
        loop.add_reader(unix.fileno(), self._check, key, unix)  # B closing it: dropped
        return unix

    def _check(self, key: tuple[str, str], unix: socket.socket) -> None:
        try:
            unix.recv(1)  # B sends nothing more: its end closed (b"") or broke
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._drop(key, unix)

    def _drop(self, key: tuple[str, str], unix: socket.socket) -> None:
        if self._links.get(key) is unix:
            del self._links[key]
        with contextlib.suppress(ValueError, OSError, RuntimeError):
            asyncio.get_running_loop().remove_reader(unix.fileno())
        unix.close()

    def send(self, path: str, node_id: str, message: bytes, fd: int) -> bool:
        """Pass ``fd`` with ``message`` on the open link to that node, without waiting.
        True: it left (the client is that node's now); False: nothing was sent."""
        key = (path, node_id)
        unix = self._links.get(key)
        if unix is None:
            return False
        try:
            socket.send_fds(unix, [message], [fd])
        except (BlockingIOError, InterruptedError):
            logger.warning("cluster: handover link to {} is full: relayed", path)
            return False
        except OSError as error:
            if error.errno != errno.EMSGSIZE:
                self._drop(key, unix)  # B gone: opened again at the next heartbeat
            logger.warning("cluster: handover to {} impossible ({!r}): relayed", path, error)
            return False
        return True

    async def close(self) -> None:
        self.closed = True
        await stop_tasks(list(self._opening.values()), "cluster: handover links")
        for key, unix in list(self._links.items()):
            self._drop(key, unix)


async def hand_over(request: web.BaseRequest, links: HandoverLinks, path: str, node_id: str, head: bytes) -> bool:
    """Pass the client's socket of ``request`` (a request handler's) to node ``node_id``
    listening at ``path`` with ``head`` (see the module doc). True: that node has it
    (answer :class:`HandedOver`); False: impossible now (TLS, no link, bytes waiting to
    be written): relay instead, nothing was lost."""
    transport = request.transport
    if transport is None or client_socket(transport) is None:
        return False
    if await links.get(path, node_id) is None:
        return False
    raw = client_socket(transport)  # again: time passed
    if raw is None:
        return False
    message = handover_message(head, message_tail(request.protocol))
    # From now on this process reads nothing from the client: what it sends after B's
    # 101 is B's (read by B's loop only).
    transport.pause_reading()
    if not links.send(path, node_id, message, raw.fileno()):
        transport.resume_reading()
        return False
    return True


class _Fed(asyncio.Protocol):
    """An adopted connection's first protocol: hands the transport to aiohttp's as it is
    made and feeds it the handed-over request in the same loop turn."""

    __slots__ = ("_data", "_inner")

    def __init__(self, inner: asyncio.Protocol, data: bytes) -> None:
        self._inner = inner
        self._data = data

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        inner = self._inner
        transport.set_protocol(inner)
        inner.connection_made(transport)
        inner.data_received(self._data)

    def connection_lost(self, exc: BaseException | None) -> None:  # before it was made: nothing to do
        return None


def _drive(coro: Coroutine[Any, Any, Any], client: socket.socket) -> None:
    """Run ``coro`` (``connect_accepted_socket``) up to its first wait now, the rest when
    what it waits for is done: no task, no loop turn before its transport exists."""
    try:
        awaited = coro.send(None)
    except StopIteration:
        return
    except (OSError, RuntimeError, ValueError, TypeError) as error:
        logger.warning("cluster: handed-over connection not adopted ({!r})", error)
        client.close()  # the client's connection ends (it reconnects)
        return
    if isinstance(awaited, asyncio.Future):
        awaited._asyncio_future_blocking = False
        awaited.add_done_callback(lambda _: _drive(coro, client))
    else:  # a bare yield: the next loop turn
        asyncio.get_running_loop().call_soon(_drive, coro, client)


class HandoverServer:
    """B's end: the Unix socket other nodes of this host hand clients over on; adopted
    connections go to aiohttp's server (:attr:`server`, set once the node serves:
    :func:`control.cluster.serve_handovers`); until then every link is refused."""

    def __init__(self, directory: Path, token: str, node_id: str) -> None:
        self.directory = directory
        #: Links name the node they are for (another node's socket may be at this path
        #: in another mount namespace).
        self.node_id = node_id.encode()
        self.path = directory / "handover.sock"
        self.token = token.encode()
        #: aiohttp's server of this node (its protocol factory).
        self.server: Callable[[], asyncio.Protocol] | None = None
        #: Connections adopted so far (tests, logs).
        self.adopted = 0
        self.closed = False
        self._listener: socket.socket | None = None
        self._pending: set[socket.socket] = set()  # connected, first message not read yet
        self._links: set[socket.socket] = set()  # accepted: handovers come on them

    @property
    def ready(self) -> bool:
        """Can it adopt a connection now? (else it is not advertised)"""
        return self.server is not None and self._listener is not None and not self.closed

    @property
    def links(self) -> int:
        """Other nodes' open links to this one (tests)."""
        return len(self._links)

    def start(self) -> None:
        """Listen (the directory 0700, the socket 0600; a stale socket file replaced)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.setblocking(False)
            old = os.umask(0o177)
            try:
                listener.bind(str(self.path))
            finally:
                os.umask(old)
            os.chmod(self.path, 0o600)
            listener.listen(128)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                logger.warning("cluster: handover socket: accept failed ({!r})", error)
                return
            conn.setblocking(False)
            uid = _CREDENTIALS.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))[1]
            if uid != os.getuid():
                logger.warning("cluster: handover from another user (uid {}) refused", uid)
                conn.close()
                continue
            self._pending.add(conn)
            if not self._hello(conn):
                asyncio.get_running_loop().add_reader(conn.fileno(), self._hello, conn)

    def _hello(self, conn: socket.socket) -> bool:
        """A link's first message: the relay token and this node's id (False: not there yet)."""
        try:
            data = conn.recv(1024)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(conn.fileno())
        self._pending.discard(conn)
        accepted = self._check_hello(data) and self.ready
        try:
            conn.send(ACCEPTED if accepted else REFUSED)
        except OSError:
            accepted = False
        if not accepted:
            conn.close()
            return True
        self._links.add(conn)
        loop.add_reader(conn.fileno(), self._receive, conn)
        return True

    def _check_hello(self, data: bytes) -> bool:
        if len(data) < _HELLO.size:
            return False
        magic, token_size, node_size = _HELLO.unpack_from(data)
        token = data[_HELLO.size : _HELLO.size + token_size]
        node = data[_HELLO.size + token_size :]
        if magic != _HELLO_MAGIC or len(node) != node_size or not hmac.compare_digest(token, self.token):
            logger.warning("cluster: handover link with a wrong relay token refused")
            return False
        if node != self.node_id:  # another node's socket at this path (another container)
            logger.warning("cluster: handover link meant for node {!r} refused", node.decode(errors="replace"))
            return False
        return True

    def _receive(self, conn: socket.socket) -> None:
        """Every handover waiting on ``conn``: each client adopted at once."""
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(conn, MAX_MESSAGE, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds, flags = b"", [], 0
            if not data and not fds:  # the other node closed its link (or it broke)
                self._drop(conn)
                return
            taken = self._take(data, fds, flags)
            if taken is not None:
                self._adopt(*taken)

    def _drop(self, conn: socket.socket) -> None:
        self._links.discard(conn)
        with contextlib.suppress(ValueError, OSError, RuntimeError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
        conn.close()

    def _take(self, data: bytes, fds: list[int], flags: int) -> tuple[socket.socket, bytes] | None:
        """The client's socket and the bytes to feed it, or None (dropped: every
        descriptor received closed, none shut down)."""
        client: socket.socket | None = None
        try:
            if fds:
                fd = fds[0]
                client = socket.socket(fileno=fd)  # fails on what is not a socket: closed below
                fds.pop(0)
            request = self._parse(data, fds, flags)
            if request is None or client is None or self.server is None or self.closed:
                logger.warning("cluster: a handover message without a client or a request: dropped")
                return None
            if client.type != socket.SOCK_STREAM or client.family not in (socket.AF_INET, socket.AF_INET6):
                logger.warning("cluster: a handed-over descriptor is not a TCP socket: dropped")
                return None
            client.setblocking(False)
            taken, client = (client, request), None
            return taken
        except OSError as error:
            logger.warning("cluster: handed-over connection dropped ({!r})", error)
            return None
        finally:
            if client is not None:
                client.close()
            for extra in fds:
                os.close(extra)

    @staticmethod
    def _parse(data: bytes, fds: list[int], flags: int) -> bytes | None:
        """The bytes to feed the adopted connection, or None."""
        if fds or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) < _PREFIX.size:
            return None
        magic, head_size = _PREFIX.unpack_from(data)
        if magic != _MAGIC or len(data) < _PREFIX.size + head_size:
            return None
        return data[_PREFIX.size :]  # the head, then what followed it

    def _adopt(self, client: socket.socket, request: bytes) -> None:
        """Serve ``client`` here as if this node's server had accepted it and read ``request``."""
        server = self.server
        assert server is not None  # _take checked
        coro = asyncio.get_running_loop().connect_accepted_socket(lambda: _Fed(server(), request), client)
        self.adopted += 1
        _drive(coro, client)

    def close_links(self) -> None:
        """Close every link other nodes opened to this one (they open new ones as needed;
        a client handed over but not read yet is dropped with its link)."""
        for conn in list(self._links):
            self._drop(conn)

    async def close(self) -> None:
        """Stop listening; links closed (a client handed over but not read yet is dropped
        with them: it reconnects)."""
        self.closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(listener.fileno())
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        loop = asyncio.get_running_loop()
        for conn in list(self._pending):
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(conn.fileno())
            conn.close()
        self._pending.clear()
        self.close_links()

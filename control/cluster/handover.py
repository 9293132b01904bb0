"""Socket handover: a client's TCP connection passed to the room's node on the same host.

When the node a client reached (A) and the room's node (B) run on one host (one
kernel: the registry entry's ``host``, ``/proc/sys/kernel/random/boot_id`` unless
``CLUSTER_HOST_ID`` says otherwise, and ``handover``, the path of B's Unix socket),
A does not relay (:mod:`control.cluster.relay`): it passes the client's socket
itself to B (``SCM_RIGHTS``) with the client's upgrade request (method, raw path and
raw headers as A parsed them, ``X-Parley-*`` headers dropped), the relay's headers
(the relay token, placement, origin, peer's node) plus :data:`HANDOVER_HEADER`, and
any byte A had read past the request head. B adopts the socket into its own aiohttp
server (``loop.connect_accepted_socket`` with the server as protocol factory) and
feeds it those bytes as if it had read them: B answers the client's upgrade itself
(its 101 or its refusal) and A is out of the path (no copy, no wake-up). A then
closes its own descriptor only: no shutdown, no linger (the socket stays open in B).

One Unix ``SOCK_SEQPACKET`` connection per handover (a connect on a local socket
completes at once): one message (the relay token, the id of the node it is for, the
bytes above, and the descriptor), one byte back: :data:`ADOPTED` (A forgets the
client) or :data:`REFUSED` (B kept nothing: A relays as before). B answers as soon as
it has checked the message and taken the socket, before it serves it, so that A's
work that follows (closing its descriptor, its log line) overlaps B's adoption rather
than the client's 101 (an adoption failing after that, which takes a broken
descriptor, ends the client's connection: it reconnects). No answer within
:data:`ACK_TIMEOUT_SECONDS`, or B's socket closing, after the message went: B may
have adopted the client, so A leaves it (it must not answer it too).

A closing its descriptor sends nothing to the client (no ``shutdown``, no linger:
uvloop's and asyncio's transports only ``close`` theirs); the TCP connection ends
when B, the last holder, closes it.

B listens at ``<DATA_DIR>/cluster/handover.sock``: the directory 0700, the socket
0600, and a connecting process must be B's own user (``SO_PEERCRED``); B checks the
relay token and its own node id in the message before adopting (another node's socket
may sit at that path in another mount namespace: containers of one host), and the
token again on the request (as on a relayed one). A falls back to the relay whenever handover is impossible: another host, a TLS
connection (an SSL transport's state cannot move), B's socket missing or refusing,
bytes waiting to be written to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Final

from aiohttp import web
from loguru import logger

from control.cluster.stopping import stop_tasks

__all__ = [
    "ADOPTED",
    "HANDOVER_HEADER",
    "REFUSED",
    "HandedOver",
    "HandoverServer",
    "hand_over",
    "host_identity",
    "message_tail",
]

#: Sent with the relay token: the node that wrote this request is out of the path (the
#: receiving node may not answer 421: it places the room itself, see ``ClusterNode.route``).
HANDOVER_HEADER: Final = "X-Parley-Handover"
#: B's answers to a handover (one byte).
ADOPTED: Final = b"\x01"
REFUSED: Final = b"\x00"
#: How long A waits for B's answer (B adopts in one loop turn; a stuck B gets the client).
ACK_TIMEOUT_SECONDS: Final = 5.0
#: The largest handover message (aiohttp's request head limits are far below).
MAX_MESSAGE: Final = 256 * 1024
_MAGIC: Final = b"PHO1"
_PREFIX: Final = struct.Struct("!4sHHI")  # magic, token length, node id length, head length
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
    """B's one-byte answer (b"" if its end closed first)."""
    fd = unix.fileno()
    async with asyncio.timeout(ACK_TIMEOUT_SECONDS):
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


async def hand_over(request: web.BaseRequest, path: str, node_id: str, token: str, head: bytes) -> bool | None:
    """Pass the client's socket of ``request`` to node ``node_id`` listening at ``path``
    with ``head`` (see the module doc). True: that node has it (answer :class:`HandedOver`);
    False: it refused or cannot be reached, nothing was lost (relay instead); None:
    impossible here (TLS, no socket, bytes waiting to be written: relay instead)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return None
    if transport.get_extra_info("ssl_object") is not None or transport.get_extra_info("sslcontext") is not None:
        return None  # TLS terminated here: its state lives in this process
    raw = transport.get_extra_info("socket")
    if raw is None or raw.family not in (socket.AF_INET, socket.AF_INET6) or transport.get_write_buffer_size():
        return None
    loop = asyncio.get_running_loop()
    # From now on this process reads nothing from the client: what it sends after B's
    # 101 is B's (read by B's loop only).
    transport.pause_reading()
    try:
        tail = message_tail(request.protocol)
        secret, node = token.encode(), node_id.encode()
        message = _PREFIX.pack(_MAGIC, len(secret), len(node), len(head)) + secret + node + head + tail
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except BaseException:
        transport.resume_reading()
        raise
    with unix:
        unix.setblocking(False)
        try:
            unix.connect(path)  # local: at once, or refused (BlockingIOError: backlog full)
            socket.send_fds(unix, [message], [raw.fileno()])
        except OSError as error:
            transport.resume_reading()
            logger.warning("cluster: handover to {} impossible ({!r}): relayed", path, error)
            return False
        try:
            answer = await _answer(loop, unix)
        except (OSError, TimeoutError) as error:
            answer = b""
            logger.warning("cluster: no answer to a handover from {} ({!r}): client left to it", path, error)
    if answer == REFUSED:
        transport.resume_reading()
        return False
    return True


class HandoverServer:
    """B's end: the Unix socket other nodes of this host hand clients over on; adopted
    connections go to aiohttp's server (:attr:`server`, set once the node serves:
    :func:`control.cluster.serve_handovers`); until then every handover is refused."""

    def __init__(self, directory: Path, token: str, node_id: str) -> None:
        self.directory = directory
        #: Handovers name the node they are for (another node's socket may be at this
        #: path in another mount namespace).
        self.node_id = node_id.encode()
        self.path = directory / "handover.sock"
        self.token = token.encode()
        #: aiohttp's server of this node (its protocol factory).
        self.server: Callable[[], asyncio.Protocol] | None = None
        #: Connections adopted so far (tests, logs).
        self.adopted = 0
        self.closed = False
        self._listener: socket.socket | None = None
        self._pending: set[socket.socket] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        """Can it adopt a connection now? (else it is not advertised)"""
        return self.server is not None and self._listener is not None and not self.closed

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
            if not self._receive(conn):
                asyncio.get_running_loop().add_reader(conn.fileno(), self._receive, conn)

    def _receive(self, conn: socket.socket) -> bool:
        """Read the handover message on ``conn`` (False: not there yet), answer it at once
        (the other node's work that follows overlaps the adoption, not the client's 101),
        then adopt the client."""
        try:
            data, fds, flags, _ = socket.recv_fds(conn, MAX_MESSAGE, 1)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data, fds, flags = b"", [], 0
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(conn.fileno())
        taken = self._take(data, fds, flags)
        with contextlib.suppress(OSError):
            conn.send(REFUSED if taken is None else ADOPTED)
        self._pending.discard(conn)
        conn.close()
        if taken is not None:
            task = asyncio.ensure_future(self._adopt(*taken))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    def _take(self, data: bytes, fds: list[int], flags: int) -> tuple[socket.socket, bytes] | None:
        """The client's socket and the bytes to feed it, or None (refused: every
        descriptor received closed, none shut down)."""
        client: socket.socket | None = None
        try:
            if fds:
                fd = fds[0]
                client = socket.socket(fileno=fd)  # fails on what is not a socket: closed below
                fds.pop(0)
            request = self._parse(data, fds, flags)
            if request is None or client is None or self.server is None or self.closed:
                return None
            if client.type != socket.SOCK_STREAM or client.family not in (socket.AF_INET, socket.AF_INET6):
                return None
            client.setblocking(False)
            taken, client = (client, request), None
            return taken
        except OSError as error:
            logger.warning("cluster: handed-over connection refused ({!r})", error)
            return None
        finally:
            if client is not None:
                client.close()  # this process's descriptor only (the other node relays the client)
            for extra in fds:
                os.close(extra)

    def _parse(self, data: bytes, fds: list[int], flags: int) -> bytes | None:
        """The bytes to feed the adopted connection, or None (a refusal)."""
        if fds or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) < _PREFIX.size:
            return None
        magic, token_size, node_size, head_size = _PREFIX.unpack_from(data)
        index = _PREFIX.size
        token = data[index : index + token_size]
        index += token_size
        node = data[index : index + node_size]
        index += node_size
        if magic != _MAGIC or not hmac.compare_digest(token, self.token):
            logger.warning("cluster: handover with a wrong relay token refused")
            return None
        if node != self.node_id:  # another node's socket at this path (another container)
            logger.warning("cluster: handover meant for node {!r} refused", node.decode(errors="replace"))
            return None
        if len(data) < index + head_size:
            return None
        return data[index:]  # the head, then what followed it

    async def _adopt(self, client: socket.socket, request: bytes) -> None:
        """Serve ``client`` here as if this node's server had accepted it and read ``request``."""
        server = self.server
        try:
            if server is None:
                raise RuntimeError("no server")
            loop = asyncio.get_running_loop()
            _, protocol = await loop.connect_accepted_socket(server, client)
        except (OSError, RuntimeError) as error:
            # Acknowledged already: the client's connection ends (it reconnects).
            logger.warning("cluster: handed-over connection not adopted ({!r})", error)
            client.close()
            return
        protocol.data_received(request)  # as if read from the socket: aiohttp serves it
        self.adopted += 1

    async def close(self) -> None:
        """Stop listening (handovers under way are answered)."""
        self.closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(listener.fileno())
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        await stop_tasks(list(self._tasks), "cluster: handovers")
        loop = asyncio.get_running_loop()
        for conn in list(self._pending):
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(conn.fileno())
            conn.close()
        self._pending.clear()

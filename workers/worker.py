"""A ``mediasoup-worker`` process and its channel (mediasoup's ``Worker``).

The process is started with ``os.posix_spawn``: its file actions ``dup2`` our
socket-pair ends onto fds 3 and 4 in the child without running Python code
there (no ``preexec_fn`` hazards), from a thread (the spawn holds its caller until
the child has exec'd), and its exit is watched through a pidfd on the
event loop, so no thread or child watcher is needed per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any, Literal

from loguru import logger

from workers.channel import Channel
from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import InvalidStateError, MediasoupError, MediasoupTypeError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_blob import string_table
from workers.native import MEDIASOUP_VERSION, worker_binary
from workers.processes import start_off_loop

import FBS.Notification.Event as FbsEvent
import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod
import FBS.Worker.DumpResponse as FbsDumpResponse
import FBS.Worker.ResourceUsageResponse as FbsResourceUsage
import FBS.Worker.UpdateSettingsRequest as FbsUpdateSettings

WorkerLogLevel = Literal["debug", "warn", "error", "none"]
WORKER_LOG_TAGS = (
    "info",
    "ice",
    "dtls",
    "rtp",
    "srtp",
    "rtcp",
    "rtx",
    "bwe",
    "score",
    "simulcast",
    "svc",
    "sctp",
    "message",
)
EXIT_WRONG_SETTINGS = 42
_HIGH_FD = 10  # our fds are moved above this before spawning, so dup2 onto 3/4 clobbers nothing


@dataclass
class WorkerSettings:
    """mediasoup's ``WorkerSettings`` (snake_case).

    mediasoup 3.27.1's worker has no liburing switch any more (its command line
    is logLevel, logTags, rtc ports, DTLS files and libwebrtc field trials), so
    there is no ``disable_liburing`` here.
    """

    log_level: WorkerLogLevel = "error"
    log_tags: list[str] = field(default_factory=list)
    rtc_min_port: int | None = None
    rtc_max_port: int | None = None
    dtls_certificate_file: str | None = None
    dtls_private_key_file: str | None = None
    libwebrtc_field_trials: str | None = None
    worker_bin: str | None = None
    app_data: dict[str, Any] = field(default_factory=dict)

    def to_args(self) -> list[str]:
        args = [f"--logLevel={self.log_level}"] if self.log_level else []
        args += [f"--logTags={tag}" for tag in self.log_tags if tag]
        if self.rtc_min_port is not None:
            args.append(f"--rtcMinPort={self.rtc_min_port}")
        if self.rtc_max_port is not None:
            args.append(f"--rtcMaxPort={self.rtc_max_port}")
        if self.dtls_certificate_file:
            args.append(f"--dtlsCertificateFile={self.dtls_certificate_file}")
        if self.dtls_private_key_file:
            args.append(f"--dtlsPrivateKeyFile={self.dtls_private_key_file}")
        if self.libwebrtc_field_trials:
            args.append(f"--libwebrtcFieldTrials={self.libwebrtc_field_trials}")
        return args


def _high_fd(sock: socket.socket) -> int:
    """A close-on-exec duplicate of ``sock`` numbered at least ``_HIGH_FD``."""
    return fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)


class _LineLogger(asyncio.Protocol):
    """Logs the worker's stdout (debug) or stderr (error) line by line."""

    def __init__(self, pid: int, is_stderr: bool) -> None:
        self._log = logger.bind(worker_pid=pid)
        self._is_stderr = is_stderr
        self._partial = b""

    def data_received(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if line:
                text = line.decode("utf-8", "replace")
                if self._is_stderr:
                    self._log.error("(stderr) {}", text)
                else:
                    self._log.debug("(stdout) {}", text)


async def _spawn_off_loop(binary: str, argv: list[str], env: dict[str, str], file_actions: list[Any]) -> int:
    """``os.posix_spawn`` from the spawner thread (:mod:`workers.processes`: the spawn
    holds its calling thread until the child has exec'd). Own process group: a Ctrl-C
    or SIGTERM sent to our group must not kill the workers behind our back (they would
    look "died" during a clean shutdown); we close them. If we are killed, they exit
    anyway when their channel closes. A caller cancelled meanwhile gets its child killed."""
    return await start_off_loop(
        functools.partial(os.posix_spawn, binary, argv, env, setpgroup=0, file_actions=file_actions), _kill
    )


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Worker(EnhancedEventEmitter):
    """One worker process. Create it with ``await Worker.create(settings)``.

    Events: ``died`` (error), ``subprocessclose``. Observer: ``close``,
    ``newwebrtcserver``, ``newrouter``.
    """

    def __init__(self, pid: int, channel: Channel, settings: WorkerSettings) -> None:
        super().__init__()
        self.pid = pid
        self.channel = channel
        self.app_data = settings.app_data
        self.settings = settings
        self.observer = EnhancedEventEmitter()
        self.closed = False
        self.died = False
        self.subprocess_closed = False
        self.exit_code: int | None = None
        self._exited = asyncio.get_running_loop().create_future()
        self.routers: set[Any] = set()
        self.routers_at_death: list[Any] = []
        self.webrtc_servers: set[Any] = set()
        self._pidfd: int | None = None
        self._running = asyncio.get_running_loop().create_future()

    # -- spawning ---------------------------------------------------------------------

    @classmethod
    async def create(cls, settings: WorkerSettings | None = None) -> Worker:
        """Spawn a worker and wait until it reports ``WORKER_RUNNING``."""
        settings = settings or WorkerSettings()
        if settings.log_level not in ("debug", "warn", "error", "none"):
            raise MediasoupTypeError(f"invalid logLevel: {settings.log_level!r}")
        bad_tags = [tag for tag in settings.log_tags if tag not in WORKER_LOG_TAGS]
        if bad_tags:
            raise MediasoupTypeError(f"invalid logTags: {bad_tags}")
        binary = settings.worker_bin or str(worker_binary())
        ours_w, theirs_r = socket.socketpair()  # we write requests, the worker reads fd 3
        ours_r, theirs_w = socket.socketpair()  # the worker writes fd 4, we read
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        fd3, fd4 = _high_fd(theirs_r), _high_fd(theirs_w)
        env = {**os.environ, "MEDIASOUP_VERSION": MEDIASOUP_VERSION}
        try:
            pid = await _spawn_off_loop(
                binary,
                [binary, *settings.to_args()],
                env,
                [
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                    (os.POSIX_SPAWN_DUP2, fd3, 3),
                    (os.POSIX_SPAWN_DUP2, fd4, 4),
                ],
            )
        except (OSError, asyncio.CancelledError) as error:
            for sock in (ours_w, ours_r):
                sock.close()
            for fd in (out_r, err_r):
                os.close(fd)
            if isinstance(error, asyncio.CancelledError):
                raise
            raise MediasoupError(f"cannot spawn mediasoup-worker {binary!r}: {error}") from error
        finally:
            for fd in (fd3, fd4, out_w, err_w):
                os.close(fd)
            theirs_r.close()
            theirs_w.close()
        channel = Channel(pid)
        worker = cls(pid, channel, settings)
        await worker._attach(ours_w, ours_r, out_r, err_r)
        await worker._wait_running()
        return worker

    async def _attach(self, ours_w: socket.socket, ours_r: socket.socket, out_r: int, err_r: int) -> None:
        loop = asyncio.get_running_loop()
        self._pidfd = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        self.channel.subscribe(str(self.pid), self._on_worker_notification)
        await self.channel.connect(ours_w, ours_r)
        for fd, is_stderr in ((out_r, False), (err_r, True)):
            await loop.connect_read_pipe(functools.partial(_LineLogger, self.pid, is_stderr), os.fdopen(fd, "rb", 0))

    async def _wait_running(self) -> None:
        try:
            async with asyncio.timeout(10):
                await asyncio.shield(self._running)
        except TimeoutError:
            self.close()
            raise MediasoupError(f"worker [pid:{self.pid}] did not start in time") from None

    def _on_worker_notification(self, event: int, _notification: Any) -> None:
        if event == FbsEvent.Event.WORKER_RUNNING and not self._running.done():
            logger.bind(worker_pid=self.pid).debug("worker process running")
            self._running.set_result(None)

    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._pidfd is not None
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        try:
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = -1
        self.exit_code = code
        description = f"[pid:{self.pid}, code:{code}]" if code >= 0 else f"[pid:{self.pid}, signal:{-code}]"
        if not self._running.done():
            self.closed = True
            self.channel.close()
            if code == EXIT_WRONG_SETTINGS:
                self._running.set_exception(MediasoupTypeError("wrong settings"))
            else:
                self._running.set_exception(MediasoupError(f"worker process failed unexpectedly {description}"))
        elif not self.closed:
            logger.bind(worker_pid=self.pid).error("worker process died unexpectedly {}", description)
            self._worker_died(MediasoupError(f"worker process died unexpectedly {description}"))
        self._exited.set_result(code)
        if not self.subprocess_closed:
            self.subprocess_closed = True
            self.safe_emit("subprocessclose")

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the worker: every router and WebRtcServer closes, the process exits."""
        if self.closed:
            return
        self.closed = True
        self._close_children()
        try:
            self.channel.notify(FbsEvent.Event.WORKER_CLOSE)
        except InvalidStateError:
            pass
        self.channel.close()
        self.observer.safe_emit("close")

    async def wait_closed(self, timeout: float = 10.0) -> int:  # noqa: ASYNC109  (mediasoup-like API)
        """Wait for the process to exit and return its exit code (negative: signal)."""
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self._exited)

    def _close_children(self) -> None:
        for router in list(self.routers):
            router.worker_closed()
        self.routers.clear()
        for server in list(self.webrtc_servers):
            server.worker_closed()
        self.webrtc_servers.clear()

    def kill(self, reason: str) -> None:
        """Kill a worker that stopped answering (SIGKILL works on a stopped process too)
        and take the ``died`` path at once: its routers close (``workerclose``), its
        pending requests fail now instead of at their timeouts, and a pool replaces it.
        A pool calls this when the health probe (:meth:`ping`) times out."""
        if self.closed:
            return
        logger.bind(worker_pid=self.pid).error("worker process stopped answering ({}); killing it", reason)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._worker_died(MediasoupError(f"worker process stopped answering [pid:{self.pid}] ({reason}); killed"))

    def _worker_died(self, error: Exception) -> None:
        self.routers_at_death = list(self.routers)
        self.closed = True
        self.died = True
        self.channel.close()
        self._close_children()
        self.safe_emit("died", error)
        self.observer.safe_emit("close")

    # -- requests --------------------------------------------------------------------

    def ping(self, timeout: float) -> asyncio.Future[Any]:
        """A cheap request (``getResourceUsage``: a fixed-size answer) with its own
        ``timeout``: the future fails with ``ChannelTimeoutError`` if the process does
        not answer in time (stopped, spinning). Raises ``InvalidStateError`` when the
        channel is closed. Used by the pool's health probe and placement."""
        return self.channel.request(FbsMethod.Method.WORKER_GET_RESOURCE_USAGE, timeout=timeout)

    async def dump(self) -> dict[str, Any]:
        response = await self.channel.request(FbsMethod.Method.WORKER_DUMP)
        dump = FbsDumpResponse.DumpResponseT.InitFromObj(_body(response, FbsDumpResponse.DumpResponse))
        handlers = dump.channelMessageHandlers
        return {
            "pid": dump.pid,
            "webRtcServerIds": _strs(dump.webRtcServerIds),
            "routerIds": _strs(dump.routerIds),
            "channelMessageHandlers": {
                "channelRequestHandlers": _strs(handlers.channelRequestHandlers if handlers else None),
                "channelNotificationHandlers": _strs(handlers.channelNotificationHandlers if handlers else None),
            },
        }

    async def get_resource_usage(self) -> dict[str, int]:
        response = await self.channel.request(FbsMethod.Method.WORKER_GET_RESOURCE_USAGE)
        usage = _body(response, FbsResourceUsage.ResourceUsageResponse)
        return {
            "ru_utime": usage.RuUtime(),
            "ru_stime": usage.RuStime(),
            "ru_maxrss": usage.RuMaxrss(),
            "ru_ixrss": usage.RuIxrss(),
            "ru_idrss": usage.RuIdrss(),
            "ru_isrss": usage.RuIsrss(),
            "ru_minflt": usage.RuMinflt(),
            "ru_majflt": usage.RuMajflt(),
            "ru_nswap": usage.RuNswap(),
            "ru_inblock": usage.RuInblock(),
            "ru_oublock": usage.RuOublock(),
            "ru_msgsnd": usage.RuMsgsnd(),
            "ru_msgrcv": usage.RuMsgrcv(),
            "ru_nsignals": usage.RuNsignals(),
            "ru_nvcsw": usage.RuNvcsw(),
            "ru_nivcsw": usage.RuNivcsw(),
        }

    async def update_settings(self, log_level: str | None = None, log_tags: list[str] | None = None) -> None:
        request = FbsUpdateSettings.UpdateSettingsRequestT()
        request.logLevel = log_level
        request.logTags = log_tags
        offset = request.Pack(self.channel.builder)
        await self.channel.request(
            FbsMethod.Method.WORKER_UPDATE_SETTINGS, FbsRequestBody.Body.Worker_UpdateSettingsRequest, offset
        )

    async def create_router(self, media_codecs: list[Any] | None = None, app_data: dict[str, Any] | None = None) -> Any:
        """Create a Router whose RTP capabilities come from ``media_codecs``."""
        from workers import ortc
        from workers.router import Router

        if app_data is not None and not isinstance(app_data, dict):
            raise MediasoupTypeError("if given, appData must be an object")
        from workers.wire import as_wire, clone, new_id

        # As mediasoup: the given codecs are cloned (ortc normalises them in place).
        rtp_capabilities = ortc.generate_router_rtp_capabilities(
            clone(as_wire(media_codecs)) if media_codecs is not None else []
        )
        router_id = new_id()
        await self.channel.request_fragment(
            FbsMethod.Method.WORKER_CREATE_ROUTER,
            FbsRequestBody.Body.Worker_CreateRouterRequest,
            string_table(router_id),
        )
        router = Router(router_id, rtp_capabilities, self, app_data or {})
        self.routers.add(router)
        router.once("@close", lambda: self.routers.discard(router))
        self.observer.safe_emit("newrouter", router)
        return router

    def close_router_request(self, router_id: str) -> None:
        """Tell the worker to close a router (fire and forget, as mediasoup does)."""
        _fire_and_forget(
            self.channel, FbsMethod.Method.WORKER_CLOSE_ROUTER, FbsRequestBody.Body.Worker_CloseRouterRequest, router_id
        )

    async def create_webrtc_server(
        self, listen_infos: list[dict[str, Any]], app_data: dict[str, Any] | None = None
    ) -> Any:
        from workers.webrtc_server import WebRtcServer

        server = await WebRtcServer.create(self, listen_infos, app_data or {})
        self.webrtc_servers.add(server)
        server.once("@close", lambda: self.webrtc_servers.discard(server))
        self.observer.safe_emit("newwebrtcserver", server)
        return server

    def close_webrtc_server_request(self, server_id: str) -> None:
        _fire_and_forget(
            self.channel,
            FbsMethod.Method.WORKER_WEBRTCSERVER_CLOSE,
            FbsRequestBody.Body.Worker_CloseWebRtcServerRequest,
            server_id,
        )

    def __repr__(self) -> str:
        return f"<Worker pid={self.pid} closed={self.closed}>"


async def create_worker(settings: WorkerSettings | None = None, **kwargs: Any) -> Worker:
    """mediasoup's ``createWorker()``: settings as a ``WorkerSettings`` or keywords."""
    return await Worker.create(settings or WorkerSettings(**kwargs))


def _body(response: Any, table_cls: type) -> Any:
    """Decode a response body table of the given generated class."""
    table = response.Body()
    body = table_cls()
    body.Init(table.Bytes, table.Pos)
    return body


def _strs(values: list[Any] | None) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values or []]


def _fire_and_forget(channel: Channel, method: int, body_type: int, entity_id: str) -> None:
    """Ask the worker to close an entity (the body names it); a failure only matters as a log line."""
    try:
        future = channel.request_fragment(method, body_type, string_table(entity_id))
    except InvalidStateError:
        return
    future.add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        error = future.exception()
        if not isinstance(error, InvalidStateError):
            logger.debug("close request failed: {}", error)

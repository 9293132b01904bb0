"""FFmpeg processes started off the event loop.

``asyncio.create_subprocess_exec`` forks on the loop's thread, and a vfork (or
``posix_spawn``) suspends its caller until the child has exec'd: on a busy
machine, until the child got a CPU. The e2e suite's slow-callback check saw a
stem's start hold the loop 200 ms that way. Here ``subprocess.Popen`` runs in the
spawner thread (:mod:`workers.processes`: one for the process's life, since the
parent-death signal follows the thread that forked), and the loop only attaches to
the pipes and to a pidfd that becomes readable when the process exits: nothing that
waits on another process runs on the loop.

:class:`FfmpegProcess` offers what the recorder used of
``asyncio.subprocess.Process``: ``pid``, ``returncode``, ``stdin`` (a
``StreamWriter``), ``stderr`` (a ``StreamReader``), ``wait()``, ``kill()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess

from workers.processes import start_off_loop

#: FFmpeg gets SIGINT if this process dies, so it closes its file (and is not left
#: orphaned, waiting for RTP that will never come): PR_SET_PDEATHSIG, set by
#: util-linux's ``setpriv`` before it execs FFmpeg (same pid). Setting it from a
#: ``preexec_fn`` instead runs Python in the child, which forces a full fork() of this
#: process: that took 20-35 ms per FFmpeg at 670 MB RSS, where the vfork() used
#: without one takes 1-4 ms. ``env --default-signal=INT`` first: a SIGINT this process
#: ignores (a server started in the background by a non-interactive shell: ``cmd &``
#: ignores SIGINT and SIGQUIT) would be ignored by the child too until FFmpeg installs
#: its handler, and a parent death in those milliseconds would leave it running
#: (seen in the suite's own test, run from a background loop).
WITH_PARENT = ("env", "--default-signal=INT", "setpriv", "--pdeathsig", "INT", "--")


class FfmpegProcess:
    """A running child: its pipes attached to the loop, its exit seen via a pidfd."""

    def __init__(self, popen: subprocess.Popen[bytes], stdin: asyncio.StreamWriter, stderr: asyncio.StreamReader):
        self._popen = popen
        self.pid = popen.pid
        self.stdin = stdin
        self.stderr = stderr
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = os.pidfd_open(popen.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        self._on_exit()  # it may be gone already

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def _on_exit(self) -> None:
        if self._popen.poll() is None or self._exited.done():
            return
        loop = self._exited.get_loop()
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._exited.set_result(self._popen.returncode)

    async def wait(self) -> int:
        """The exit status, once the process has exited (cancelling the wait leaves it running)."""
        return await asyncio.shield(self._exited)

    def send_signal(self, signum: int) -> None:
        if self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


async def spawn_ffmpeg(args: list[str]) -> FfmpegProcess:
    """FFmpeg (``args``) with a pipe to its stdin (``q``) and from its stderr, interrupted
    when this process dies (:data:`WITH_PARENT`), started from a thread. If the caller
    is cancelled meanwhile, the started process is killed, not left behind."""
    popen = await start_off_loop(functools.partial(_popen, [*WITH_PARENT, *args]), _discard)
    try:
        return await _attach(popen)
    except BaseException:
        _discard(popen)
        raise


def _popen(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _attach(popen: subprocess.Popen[bytes]) -> FfmpegProcess:
    assert popen.stdin is not None and popen.stderr is not None
    loop = asyncio.get_running_loop()
    stderr = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stderr), popen.stderr)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, popen.stdin)
    stdin = asyncio.StreamWriter(transport, protocol, None, loop)
    return FfmpegProcess(popen, stdin, stderr)


def _discard(popen: subprocess.Popen[bytes]) -> None:
    """Kill and reap a child nobody will own; close its pipes."""
    with contextlib.suppress(ProcessLookupError):
        popen.kill()
    for pipe in (popen.stdin, popen.stderr):
        if pipe is not None:
            pipe.close()
    popen.wait()

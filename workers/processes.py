"""Child processes, the way this server needs them: started off the event loop, read
from ``/proc`` in one place.

Starting: the mediasoup workers (``os.posix_spawn``) and FFmpeg (``subprocess.Popen``)
are started from :data:`SPAWNER`, one thread for the whole life of this process:

- glibc's spawn suspends the calling thread until the child has exec'd, which on a
  busy machine means until the child got a CPU (seen: 76 ms of the event loop);
- Linux sends a child's parent-death signal (``PR_SET_PDEATHSIG``, which FFmpeg gets
  through ``setpriv``) when the *thread* that forked it exits, so a pool thread retired
  at a loop's shutdown would interrupt every FFmpeg it had started;
- the thread is started at import: started on first use it would be started on the
  event loop, and ``Thread.start`` waits until the new thread runs (over 50 ms on a busy
  machine).

Reading: ``/proc/<pid>/stat`` (state, CPU ticks, start time) for the worker pool's
"stopped or busy" check, the cluster's worker CPU figure and the recording manifest's
"is this still the FFmpeg we started" check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["SPAWNER", "ProcStat", "proc_stat", "start_off_loop"]

T = TypeVar("T")

#: The thread every child process is started from (see the module doc).
SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawn")
SPAWNER.submit(lambda: None).result()


async def start_off_loop(start: Callable[[], T], discard: Callable[[T], None]) -> T:
    """``start()`` (which starts a child) on :data:`SPAWNER`. If the caller is cancelled
    meanwhile, the start (which may use the caller's descriptors) is let finish before
    the cancel goes on, and what it started is given to ``discard`` (kill it), not left
    behind."""
    started = asyncio.get_running_loop().run_in_executor(SPAWNER, start)
    try:
        return await asyncio.shield(started)
    except asyncio.CancelledError:
        await asyncio.wait([started])
        if not started.cancelled() and started.exception() is None:
            discard(started.result())
        raise


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` this server reads (proc(5))."""

    #: R, S, D, T (stopped), t (traced), Z...
    state: str
    #: User and system CPU time, in clock ticks.
    utime: int
    stime: int
    #: When the process started, in clock ticks after boot (tells a reused pid apart).
    starttime: int

    @property
    def stopped(self) -> bool:
        return self.state in ("T", "t")


def proc_stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat`` of ``pid``, or None if there is no such process. The
    command name may hold spaces and parentheses: fields are read after the last ``)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
        return ProcStat(fields[0].decode(), int(fields[11]), int(fields[12]), int(fields[19]))
    except (OSError, IndexError, ValueError):
        return None

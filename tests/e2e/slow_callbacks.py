"""Slow callbacks on an event loop, net of the time its thread waited for a CPU.

asyncio's debug mode reports a callback whose *wall* time exceeds
``slow_callback_duration``. On a loaded 2-core machine a callback that does nothing
blocking exceeds 50 ms of wall time whenever its thread sits on the CPU run queue
behind other processes: that is starvation, not the code's fault, and a check on
wall time fails at random. Linux keeps, per thread, the CPU time it used and the
time it waited runnable for a CPU (``/proc/self/task/<tid>/schedstat``, fields 1 and
2, ns). A :class:`CallbackMeter` reads them around every callback of its loop and
counts one as slow only when ``wall - run-queue delay`` exceeds the threshold: the
thread was computing, or blocked (a syscall, a lock, the GIL held by another
thread), for that long.

The hook is :meth:`asyncio.Handle._run` (every callback, task step and I/O callback
of a loop goes through it), wrapped once per process; it measures only the loops a
meter is installed on. One ``pread`` of an open schedstat file per callback (a few
microseconds) is the cost.

Garbage collection: a pass of the cyclic collector runs in whichever callback
allocated past the threshold and takes as long as the whole heap is big (in the e2e
tests, the server and all its aiortc clients: 100-150 ms seen). That is the process's
size, not the callback's doing: the CPU time of passes run meanwhile is deducted too
(and the wall time of passes on other threads, which hold the GIL, from the blocked
time). Each report shows the parts.

The GIL: a callback that needs the GIL while another Python thread of ours holds it
waits, "blocked", until that thread lets go; if that thread is itself waiting for a
CPU, so is the callback, in effect (e2e tests: aiortc's encoder and decoder threads,
``asyncio.to_thread`` work). So the run-queue delay of the process's other Python
threads over the callback is also deducted, up to the time it was blocked. That is
lenient when several threads queue at once (their delays add up), so a blocking call
can go unseen on a heavily loaded machine; it is caught where the load is lower. The
other threads are read at most every :data:`OTHERS_EVERY` (their figures are taken
over the callback and up to that much before it).

A blocked callback's report also names the other Python threads that used a CPU
meanwhile, busiest first (their CPU time from the same schedstat files): one of them
computing is a thread that held the GIL the callback waited for; none computing means
the loop thread (or the GIL's holder) waited for something off the CPU.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Over this much computing or blocked time a callback is slow (seconds).
SLOW_CALLBACK_SECONDS = 0.05
#: How often the other Python threads' run-queue delay is read (seconds).
OTHERS_EVERY = 0.005
#: The stall sampler's thread: not one of the "other threads" whose waits for a CPU are
#: deducted. It waits for a CPU after each tick's wake-up, without the GIL (it gets
#: the GIL only once it runs, for microseconds), so it never blocks the loop meanwhile;
#: counted, its waits (every 10 ms, each longer on a loaded machine) hid a callback
#: blocked 120 ms in a test at load 6 (a make test run beside benchmarks).
SAMPLER_THREAD = "asyncio-stall-sampler"


def schedstat_path(tid: int) -> str:
    return f"/proc/self/task/{tid}/schedstat"


def read_schedstat(fd: int) -> tuple[int, int]:
    """(CPU time, run-queue delay) in ns of the thread whose schedstat ``fd`` is."""
    fields = os.pread(fd, 128, 0).split()
    return int(fields[0]), int(fields[1])


@dataclass(frozen=True)
class SlowCallback:
    """A callback that held its loop: wall time, and what it was made of (seconds)."""

    callback: str
    wall: float
    cpu: float
    run_queue: float
    #: Run-queue delay of the process's other Python threads meanwhile (the GIL).
    others_queued: float = 0.0
    #: CPU time of the cyclic garbage collector's passes on this thread meanwhile.
    gc: float = 0.0
    #: Wall time of passes on other threads meanwhile (they hold the GIL).
    others_gc: float = 0.0
    #: When it started (``time.monotonic()``): to match the stall sampler's stacks.
    started: float = 0.0
    #: The other Python threads that used a CPU meanwhile, busiest first: (name, seconds).
    #: A callback blocked while one of them computed waited for the GIL it held; blocked
    #: with none of them computing, it waited for something off the CPU.
    others_cpu: tuple[tuple[str, float], ...] = ()

    @property
    def blocked(self) -> float:
        return max(0.0, self.wall - self.cpu - self.run_queue)

    @property
    def held(self) -> float:
        """Computing or blocked, less what the other threads waited for a CPU: the
        wall time less the waits for a CPU, ours and, up to the blocked time, theirs."""
        return self.wall - self.run_queue - self.gc - min(self.blocked, self.others_queued + self.others_gc)

    def __str__(self) -> str:
        return (
            f"{self.callback} held the loop {self.held * 1000:.0f} ms "
            f"(wall {self.wall * 1000:.0f} ms = cpu {self.cpu * 1000:.0f} + blocked {self.blocked * 1000:.0f}"
            f" + waiting for a CPU {self.run_queue * 1000:.0f}; other threads waited for a CPU"
            f" {self.others_queued * 1000:.0f}; garbage collection {self.gc * 1000:.0f}"
            f" here, {self.others_gc * 1000:.0f} on other threads{self._others_computing()})"
        )

    def _others_computing(self) -> str:
        if self.blocked < 0.001:
            return ""
        busy = ", ".join(f"{name} {cpu * 1000:.0f} ms" for name, cpu in self.others_cpu)
        return f"; other threads' CPU meanwhile: {busy or 'none'}"


class CallbackMeter:
    """Measures every callback of one loop; keeps the slow ones in :attr:`slow`.

    Install it from the loop's thread (:meth:`install`), remove it with
    :meth:`uninstall`. ``longest`` is the longest ``held`` time seen, slow or not
    (the figure to compare before and after a change)."""

    def __init__(self, threshold: float = SLOW_CALLBACK_SECONDS) -> None:
        self.threshold = threshold
        self.slow: list[SlowCallback] = []
        self.longest: SlowCallback | None = None
        self.callbacks = 0
        #: Every callback measured over a fifth of the threshold (the others are not read).
        self.notable: list[SlowCallback] = []
        self._fd: int | None = None
        self._others = OtherThreads()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Meter ``loop`` (which runs in the calling thread)."""
        _wrap_handle_run()
        self._fd = os.open(schedstat_path(threading.get_native_id()), os.O_RDONLY | os.O_CLOEXEC)
        read_schedstat(self._fd)  # fails here, loudly, where schedstat is missing
        _METERS[loop] = self

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        _METERS.pop(loop, None)
        self._others.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def run(self, handle: asyncio.Handle, run: Callable[[asyncio.Handle], None]) -> None:
        fd = self._fd
        if fd is None:
            run(handle)
            return
        # The other threads first: each read of a file lets go of the GIL, and another
        # thread may run then; read before ``t0`` (and again after the wall time is
        # taken), their figures span the whole callback.
        others = self._others.before(time.perf_counter())
        cpu0, queued0 = read_schedstat(fd)
        t0 = time.perf_counter()
        gc0 = _GC.snapshot()
        try:
            run(handle)
        finally:
            wall = time.perf_counter() - t0
            self.callbacks += 1
            if self._fd != fd:  # uninstalled by this callback
                pass
            elif wall > self.threshold / 5 or self.longest is None:
                self._record(handle, wall, cpu0, queued0, fd, others, gc0)

    def _record(
        self,
        handle: asyncio.Handle,
        wall: float,
        cpu0: int,
        queued0: int,
        fd: int,
        others: dict[int, tuple[int, int]],
        gc0: tuple[dict[int, float], dict[int, float]],
    ) -> None:
        cpu1, queued1 = read_schedstat(fd)
        cpu, queued = (cpu1 - cpu0) / 1e9, min(wall, (queued1 - queued0) / 1e9)
        others_queued, others_cpu = self._others.since(others) if wall - cpu - queued > 0.001 else (0.0, ())
        gc_here, gc_others = _GC.since(gc0, threading.get_native_id())
        started = time.monotonic() - wall
        entry = SlowCallback(
            _describe(handle), wall, cpu, queued, others_queued, gc_here, gc_others, started, others_cpu
        )
        if self.longest is None or entry.held > self.longest.held:
            self.longest = entry
        if wall > self.threshold / 5:
            self.notable.append(entry)
        if entry.held > self.threshold:
            self.slow.append(entry)


#: How many of the other threads a report names (the busiest).
OTHERS_NAMED = 3


class OtherThreads:
    """CPU time and run-queue delay of this process's Python threads other than the
    caller's: (CPU ns, delay ns) by thread id."""

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}
        self._names: dict[int, str] = {}
        self._taken = -1.0
        self._last: dict[int, tuple[int, int]] = {}

    def before(self, now: float) -> dict[int, tuple[int, int]]:
        """Their figures at most :data:`OTHERS_EVERY` old."""
        if now - self._taken > OTHERS_EVERY:
            self._last, self._taken = self._read(), now
        return self._last

    def since(self, before: dict[int, tuple[int, int]]) -> tuple[float, tuple[tuple[str, float], ...]]:
        """Seconds they waited for a CPU since ``before``, and the busiest of them with
        the CPU time each used (a thread started since: all of its)."""
        now = self._read()
        queued = sum(delay - before.get(tid, (0, 0))[1] for tid, (_, delay) in now.items()) / 1e9
        used = sorted(((cpu - before.get(tid, (0, 0))[0]) / 1e9, tid) for tid, (cpu, _) in now.items())
        busiest = tuple((self._names.get(tid, str(tid)), cpu) for cpu, tid in reversed(used) if cpu >= 0.001)
        return queued, busiest[:OTHERS_NAMED]

    def _read(self) -> dict[int, tuple[int, int]]:
        me = threading.get_native_id()
        figures = {}
        for thread in threading.enumerate():
            tid = thread.native_id
            if tid is None or tid == me or thread.name == SAMPLER_THREAD:
                continue
            try:
                fd = self._fds.get(tid)
                if fd is None:
                    fd = self._fds[tid] = os.open(schedstat_path(tid), os.O_RDONLY | os.O_CLOEXEC)
                    self._names[tid] = thread.name
                figures[tid] = read_schedstat(fd)
            except (OSError, IndexError, ValueError):
                continue  # it ended
        for tid in set(self._fds) - set(figures):
            os.close(self._fds.pop(tid))
            self._names.pop(tid, None)
        return figures

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._names.clear()


class _GcClock:
    """Time in cyclic garbage collection passes so far, per thread (gc.callbacks):
    CPU time of the passes each thread ran, and their wall time."""

    def __init__(self) -> None:
        self.cpu: dict[int, float] = {}
        self.wall: dict[int, float] = {}
        self._started = threading.local()

    def __call__(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started.at = (time.thread_time(), time.perf_counter())
            return
        started = getattr(self._started, "at", None)
        if started is None:
            return
        tid = threading.get_native_id()
        self.cpu[tid] = self.cpu.get(tid, 0.0) + time.thread_time() - started[0]
        self.wall[tid] = self.wall.get(tid, 0.0) + time.perf_counter() - started[1]

    def snapshot(self) -> tuple[dict[int, float], dict[int, float]]:
        return dict(self.cpu), dict(self.wall)

    def since(self, before: tuple[dict[int, float], dict[int, float]], me: int) -> tuple[float, float]:
        """(CPU time of this thread's passes, wall time of the other threads' passes) since ``before``."""
        own = self.cpu.get(me, 0.0) - before[0].get(me, 0.0)
        others = sum(wall - before[1].get(tid, 0.0) for tid, wall in self.wall.items() if tid != me)
        return own, others


_GC = _GcClock()

#: The meter of each metered loop (looked up by the handle's loop).
_METERS: dict[Any, CallbackMeter] = {}
_wrapped = False


def _wrap_handle_run() -> None:
    """Route every ``Handle._run`` through the meter of its loop, if it has one."""
    global _wrapped
    if _wrapped:
        return
    original = asyncio.Handle._run

    def _run(self: asyncio.Handle) -> None:
        meter = _METERS.get(self._loop) if _METERS else None  # type: ignore[attr-defined]
        if meter is None:
            original(self)
        else:
            meter.run(self, original)

    asyncio.Handle._run = _run  # type: ignore[method-assign]
    gc.callbacks.append(_GC)
    _wrapped = True


def _describe(handle: asyncio.Handle) -> str:
    """The callback, as asyncio's own slow-callback warning names it."""
    try:
        from asyncio.base_events import _format_handle  # type: ignore[attr-defined]

        return str(_format_handle(handle))
    except Exception:
        return repr(handle)


#: The server's code: a callback blocked here fails its test.
SERVER_CODE = tuple(
    str(Path(__file__).resolve().parents[2] / name) + os.sep for name in ("control", "workers", "recording")
)
#: Frames that say nothing about who blocked: the standard library, this check.
NEUTRAL_CODE = (
    sysconfig.get_paths()["stdlib"] + os.sep,
    str(Path(__file__).resolve().parent / "slow_callbacks.py"),
    __file__,
)


def _where(stack: traceback.StackSummary) -> str | None:
    """``server`` or ``client`` by the innermost frame outside the standard library and
    this check; None if there is none."""
    for frame in reversed(stack):
        library = frame.filename.startswith(NEUTRAL_CODE) and "site-packages" not in frame.filename
        if library or frame.filename.startswith("<"):
            continue
        return "server" if frame.filename.startswith(SERVER_CODE) else "client"
    return None


class StallSampler:
    """A thread that records the loop thread's stack while the loop is stuck.

    The loop bumps a heartbeat every 10 ms; when it is older than the slow-callback
    threshold the watchdog takes the loop thread's frames once per stall."""

    TICK = 0.01

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.beat = time.monotonic()
        self.stacks: list[str] = []
        #: Every stack taken while the loop was stuck, with when (``time.monotonic()``).
        self.samples: list[tuple[float, traceback.StackSummary]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=SAMPLER_THREAD, daemon=True)

    def start(self) -> None:
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _tick(self) -> None:
        self.beat = time.monotonic()
        if not self._stop.is_set():
            self.loop.call_later(self.TICK, self._tick)

    def _watch(self) -> None:
        reported = 0.0
        while not self._stop.wait(self.TICK):
            beat = self.beat
            now = time.monotonic()
            if now - beat <= self.TICK * 2:
                continue
            frame = sys._current_frames().get(self.loop_thread)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            del frame
            self.samples.append((now, stack))
            if beat != reported and now - beat > SLOW_CALLBACK_SECONDS:
                reported = beat
                self.stacks.append("".join(stack.format()[-12:]).rstrip())

    def blames_server(self, entry: SlowCallback) -> bool:
        """Whether ``entry`` blocked in the server's code (or nothing says where)."""
        during = [stack for at, stack in self.samples if entry.started <= at <= entry.started + entry.wall]
        places = [_where(stack) for stack in during]
        return not places or any(place == "server" for place in places) or all(p is None for p in places)

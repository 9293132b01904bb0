"""asyncio debug mode for the end-to-end tests, on by default (``PARLEY_ASYNCIO_DEBUG=0``
turns it off).

Every test's event loop runs in debug mode (un-awaited coroutines, calls from the
wrong thread), and a callback that held the loop over 50 ms fails the test that
produced it, naming the callback. It finds blocking calls on the loop (file I/O,
fsync, tree removal, process spawns, subprocess waits, ``time.sleep``).

"Held" is wall time less the time the loop thread waited for a CPU
(tests/e2e/slow_callbacks.py reads the thread's run-queue delay from
``/proc/self/task/<tid>/schedstat`` around every callback): on this loaded 2-core
machine a callback starved of CPU exceeds 50 ms of wall time without being at fault,
and asyncio's own check (wall time only) failed tests at random, so it is silenced.
Also deducted, and shown in each report: cyclic garbage collection passes (a cost of
the heap's size: the server and its aiortc clients share this process) and time
blocked on the GIL while the thread holding it waited for a CPU (see that module).

asyncio names only the callback (for a task, where it is suspended now, not what it
did), so a watchdog thread also samples the loop thread's stack whenever the loop
has not turned for 50 ms; the failure lists those stacks, which show the blocking
call itself (with starvation they include stalls that were not slow).

The session summary lists the longest callbacks seen (slow or not);
``PARLEY_ASYNCIO_DEBUG_LOG=<file>`` appends every callback over 10 ms of wall time to a file.
"""

from __future__ import annotations

import asyncio
import linecache
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator

import pytest

from tests.e2e.slow_callbacks import SLOW_CALLBACK_SECONDS, CallbackMeter, SlowCallback

#: The switch: on unless ``PARLEY_ASYNCIO_DEBUG=0``.
ASYNCIO_DEBUG = os.environ.get("PARLEY_ASYNCIO_DEBUG", "1") not in ("", "0")
#: ``PARLEY_ASYNCIO_DEBUG_LOG=<file>``: every callback over 10 ms of wall time is appended there.
NOTABLE_LOG = os.environ.get("PARLEY_ASYNCIO_DEBUG_LOG", "")
#: The longest callback of each test (for the session summary).
LONGEST: list[tuple[str, SlowCallback]] = []


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
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="asyncio-stall-sampler", daemon=True)

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
            if beat != reported and time.monotonic() - beat > SLOW_CALLBACK_SECONDS:
                reported = beat
                frame = sys._current_frames().get(self.loop_thread)
                if frame is not None:
                    lines = traceback.format_stack(frame)[-12:]
                    self.stacks.append("".join(lines).rstrip())


@pytest.fixture(autouse=True)
async def asyncio_debug(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Debug mode on the test's loop; fail the test if a callback blocked it."""
    if not ASYNCIO_DEBUG:
        yield
        return
    # Debug mode records a source traceback for every handle, future and task, and
    # each one stats every file of its stack (linecache.checkcache): a first run found
    # most stalled loops inside that os.stat, debug mode's own cost, not the code under
    # test. Sources do not change during a test, so the check is skipped.
    monkeypatch.setattr(linecache, "checkcache", lambda filename=None: None)
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = math.inf  # wall time: the meter judges instead
    meter = CallbackMeter(SLOW_CALLBACK_SECONDS)
    meter.install(loop)
    sampler = StallSampler(loop)
    sampler.start()
    try:
        yield
    finally:
        sampler.stop()
        meter.uninstall(loop)
    if meter.longest is not None:
        LONGEST.append((request.node.nodeid, meter.longest))
    if NOTABLE_LOG:
        with open(NOTABLE_LOG, "a", encoding="utf-8") as log:
            log.writelines(f"{entry.held * 1000:.1f}\t{request.node.nodeid}\t{entry}\n" for entry in meter.notable)
    if meter.slow:
        listed = "\n".join(f"  {entry}" for entry in meter.slow)
        stacks = "\n--\n".join(dict.fromkeys(sampler.stacks))
        pytest.fail(
            f"{len(meter.slow)} slow callback(s) over {SLOW_CALLBACK_SECONDS * 1000:.0f} ms:\n{listed}\n"
            f"loop thread stacks sampled while it was stuck:\n{stacks}",
            pytrace=False,
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The longest callbacks of the run (held time: wall less waiting for a CPU)."""
    if not LONGEST:
        return
    terminalreporter.section("longest event-loop callbacks (e2e)")
    for nodeid, entry in sorted(LONGEST, key=lambda item: item[1].held, reverse=True)[:8]:
        terminalreporter.write_line(f"{entry.held * 1000:5.0f} ms  {nodeid}: {entry}")

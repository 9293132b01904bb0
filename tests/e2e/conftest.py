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

Whose fault: the server and its aiortc clients share the test's loop. A slow
callback fails the test when the stacks sampled during it block in the server's
code (``control/``, ``workers/``, ``recording/``), or when no sample says where it
blocked; one that blocked only in the test's own client side (aiortc starting its
codec threads, pymediasoup, the test's helpers) is listed in the session summary
instead: the product is the server, and a client library's habits are not a
server defect.

Debug mode's own costs are not counted against the code under test: it takes a stack
for every handle, future and task, and here neither stats their files nor reads their
source lines until a traceback is shown (see :func:`asyncio_debug`).

The session summary lists the longest callbacks seen (slow or not);
``PARLEY_ASYNCIO_DEBUG_LOG=<file>`` appends every callback over 10 ms of wall time to a file.
"""

from __future__ import annotations

import asyncio
import linecache
import math
import os
import threading
import traceback
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from control.storage.s3 import load_models
from tests.e2e.slow_callbacks import SLOW_CALLBACK_SECONDS, CallbackMeter, SlowCallback, StallSampler

#: The switch: on unless ``PARLEY_ASYNCIO_DEBUG=0``.
ASYNCIO_DEBUG = os.environ.get("PARLEY_ASYNCIO_DEBUG", "1") not in ("", "0")
#: ``PARLEY_ASYNCIO_DEBUG_LOG=<file>``: every callback over 10 ms of wall time is appended there.
NOTABLE_LOG = os.environ.get("PARLEY_ASYNCIO_DEBUG_LOG", "")
#: The longest callback of each test (for the session summary).
LONGEST: list[tuple[str, SlowCallback]] = []
#: Slow callbacks that blocked in the tests' client side only (listed, not failed).
CLIENT_SIDE: list[tuple[str, SlowCallback]] = []


class _ProcessExecutor(ThreadPoolExecutor):
    """The default executor of every e2e test's loop: one for the whole run, its threads
    started before any test (``shutdown`` at a loop's end leaves it running).

    A server process starts its default executor's threads once and keeps them; a test
    run makes a new loop, hence a new executor, per test, so the server's first
    ``asyncio.to_thread`` of each test would start a thread on the loop, and
    ``Thread.start`` waits until the new thread runs (seen: 54-140 ms at load 9). That is
    the test's artefact, not the server's habit."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


_EXECUTOR = _ProcessExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="e2e-default")
_started = threading.Barrier(_EXECUTOR._max_workers + 1)
for _ in range(_EXECUTOR._max_workers):
    _EXECUTOR.submit(_started.wait, 30)
_started.wait(30)

# botocore's S3 models, parsed once for the process's stores (control/storage/s3.py):
# here, before any test's loop runs. Parsed by the first server a test starts, they
# held the GIL up to 100 ms while that test's loop waited for it (runs 2, 9 and 10 of a
# 15-run count); a server process parses them once, at its start.
load_models()


@pytest.fixture(autouse=True)
async def shared_default_executor() -> AsyncIterator[None]:
    """Every test's loop uses :class:`_ProcessExecutor` (its threads already running)."""
    asyncio.get_running_loop().set_default_executor(_EXECUTOR)
    yield


_EXTRACT = traceback.StackSummary.extract.__func__  # type: ignore[attr-defined]


def _extract_lazily(
    klass: type[traceback.StackSummary],
    frame_gen: Any,
    *,
    limit: int | None = None,
    lookup_lines: bool = True,
    capture_locals: bool = False,
) -> traceback.StackSummary:
    """``StackSummary.extract`` with the source lines read when shown, not when taken."""
    summary: traceback.StackSummary = _EXTRACT(
        klass, frame_gen, limit=limit, lookup_lines=False, capture_locals=capture_locals
    )
    return summary


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
    # ...and reads the source line of every frame, the file from disk the first time it
    # appears in a stack (asyncio's C Future calls traceback.extract_stack, which looks
    # lines up at once). Each read lets go of the GIL, and behind a thread computing in
    # C the loop waits for it back at every one: 84 ms in 1 of 20 runs, a server's start
    # reading s3.py while its storage thread built the boto3 client (botocore parsing its
    # JSON models). asyncio's Python code defers the lines until a traceback is shown
    # (format_helpers.extract_stack); so does this, for every stack taken in the test.
    monkeypatch.setattr(traceback.StackSummary, "extract", classmethod(_extract_lazily))
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
    slow = [entry for entry in meter.slow if sampler.blames_server(entry)]
    CLIENT_SIDE.extend((request.node.nodeid, entry) for entry in meter.slow if entry not in slow)
    if slow:
        listed = "\n".join(f"  {entry}" for entry in slow)
        stacks = "\n--\n".join(dict.fromkeys(sampler.stacks))
        pytest.fail(
            f"{len(slow)} slow callback(s) over {SLOW_CALLBACK_SECONDS * 1000:.0f} ms:\n{listed}\n"
            f"loop thread stacks sampled while it was stuck:\n{stacks}",
            pytrace=False,
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The longest callbacks of the run (held time: wall less waiting for a CPU)."""
    if CLIENT_SIDE:
        terminalreporter.section("slow callbacks in the tests' client side (not the server's)")
        for nodeid, entry in CLIENT_SIDE:
            terminalreporter.write_line(f"{entry.held * 1000:5.0f} ms  {nodeid}: {entry}")
    if not LONGEST:
        return
    terminalreporter.section("longest event-loop callbacks (e2e)")
    for nodeid, entry in sorted(LONGEST, key=lambda item: item[1].held, reverse=True)[:8]:
        terminalreporter.write_line(f"{entry.held * 1000:5.0f} ms  {nodeid}: {entry}")

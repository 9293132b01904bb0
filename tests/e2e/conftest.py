"""asyncio debug mode for the end-to-end tests (``PARLEY_ASYNCIO_DEBUG=1``).

With the switch on, every test's event loop runs in debug mode with
``slow_callback_duration`` at 50 ms, and a callback that held the loop longer (asyncio
logs ``Executing <Handle ...> took X seconds`` on its ``asyncio`` logger) fails the
test that produced it, naming the callback. It finds blocking calls on the loop
(file I/O, fsync, tree removal, subprocess waits, ``time.sleep``). asyncio names only
the callback (for a task, where it is suspended now, not what it did), so a watchdog
thread also samples the loop thread's stack whenever the loop has not turned for
50 ms; the failure lists those stacks, which show the blocking call itself.

It is opt-in, not on in ``make test``: on a loaded 2-core machine a callback that
does nothing blocking can still exceed 50 ms when the process is starved of CPU (or
when debug mode's own bookkeeping slows it), so on by default it would fail tests
at random. Run it on purpose and judge each report by what the callback does:

    PARLEY_ASYNCIO_DEBUG=1 .venv/bin/python -m pytest tests/e2e -q
"""

from __future__ import annotations

import asyncio
import linecache
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator

import pytest

#: The switch: ``PARLEY_ASYNCIO_DEBUG=1``.
ASYNCIO_DEBUG = os.environ.get("PARLEY_ASYNCIO_DEBUG", "") not in ("", "0")
#: What asyncio reports as a slow callback (seconds).
SLOW_CALLBACK_SECONDS = 0.05


class SlowCallbacks(logging.Handler):
    """Keeps asyncio's "Executing <callback> took X seconds" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("Executing ") and " took " in record.msg:
            self.found.append(record.getMessage())


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
async def asyncio_debug(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
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
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    handler = SlowCallbacks()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(handler)
    sampler = StallSampler(loop)
    sampler.start()
    try:
        yield
    finally:
        sampler.stop()
        asyncio_logger.removeHandler(handler)
    if handler.found:
        listed = "\n".join(f"  {entry}" for entry in handler.found)
        stacks = "\n--\n".join(dict.fromkeys(sampler.stacks))
        pytest.fail(
            f"{len(handler.found)} slow callback(s) over {SLOW_CALLBACK_SECONDS * 1000:.0f} ms:\n{listed}\n"
            f"loop thread stacks sampled while it was stuck:\n{stacks}",
            pytrace=False,
        )

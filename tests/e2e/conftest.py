"""asyncio debug mode for the end-to-end tests (``PARLEY_ASYNCIO_DEBUG=1``).

With the switch on, every test's event loop runs in debug mode with
``slow_callback_duration`` at 50 ms, and a callback that held the loop longer (asyncio
logs ``Executing <Handle ...> took X seconds`` on its ``asyncio`` logger) fails the
test that produced it, naming the callback. It finds blocking calls on the loop
(file I/O, fsync, tree removal, subprocess waits, ``time.sleep``).

It is opt-in, not on in ``make test``: on a loaded 2-core machine a callback that
does nothing blocking can still exceed 50 ms when the process is starved of CPU (or
when debug mode's own bookkeeping slows it), so on by default it would fail tests
at random. Run it on purpose and judge each report by what the callback does:

    PARLEY_ASYNCIO_DEBUG=1 .venv/bin/python -m pytest tests/e2e -q
"""

from __future__ import annotations

import asyncio
import logging
import os
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


@pytest.fixture(autouse=True)
async def asyncio_debug() -> AsyncIterator[None]:
    """Debug mode on the test's loop; fail the test if a callback blocked it."""
    if not ASYNCIO_DEBUG:
        yield
        return
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    handler = SlowCallbacks()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(handler)
    try:
        yield
    finally:
        asyncio_logger.removeHandler(handler)
    if handler.found:
        listed = "\n".join(f"  {entry}" for entry in handler.found)
        pytest.fail(
            f"{len(handler.found)} slow callback(s) over {SLOW_CALLBACK_SECONDS * 1000:.0f} ms:\n{listed}",
            pytrace=False,
        )

"""Waiting for a condition the system under test reaches on its own time.

A server answers a request before everything it set in motion has happened (a room
closes after its last peer's socket, a meeting journal writes a join after the join's
answer, a node's heartbeat reaches the registry on its next beat): a test that reads
such a state at once passes or fails by chance. :func:`eventually` asks again until
the state is there, within a bound, and fails loudly with what it waited for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

#: Long enough for a loaded 2-core machine; a wait that passes never waits this long.
DEFAULT_TIMEOUT = 15.0
#: Often enough to add little to a test, seldom enough to load nothing.
DEFAULT_INTERVAL = 0.05


async def eventually(
    check: Callable[..., Any],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "condition",
    interval: float = DEFAULT_INTERVAL,
) -> Any:
    """Call ``check`` (sync or async) until it returns a truthy value, and return it.

    Raises AssertionError naming ``what`` once ``timeout`` seconds have passed; the
    check is always tried once more after the deadline, so a slow machine that
    reaches the state just then still passes."""
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() > deadline
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if expired:
            raise AssertionError(f"{what}: not met within {timeout:g} s")
        await asyncio.sleep(interval)

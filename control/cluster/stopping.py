"""Stopping the cluster's background tasks in bounded time.

A node's shutdown must not wait on a far node or on a task that does not end when
cancelled. On Python 3.11, ``asyncio.wait_for`` returns its inner result when the
cancellation arrives in the loop turn where that inner awaitable finished: the
cancellation is lost (CPython gh-86296, fixed in 3.12). redis-py wraps every
command's send in ``wait_for(..., socket_timeout)``, so a task cancelled while it
sends a command can go on running (the heartbeat did, and ``gather`` on it waited
forever). Hence: loops also check a ``closed`` flag, and whoever stops a task
cancels it, waits at most a bound, and cancels again while it runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Final

from loguru import logger

__all__ = ["STOP_TIMEOUT", "stop_tasks"]

#: How long stopping a set of tasks may take (seconds).
STOP_TIMEOUT: Final = 5.0
#: How often a task still running is cancelled again while being stopped (seconds).
_RECANCEL: Final = 0.2


async def stop_tasks(tasks: Iterable[asyncio.Future[Any]], what: str, timeout: float = STOP_TIMEOUT) -> bool:  # noqa: ASYNC109 - a stop deadline
    """Cancel ``tasks`` and wait for them at most ``timeout`` seconds, cancelling again
    the ones that swallowed the cancellation. True if all ended; else they are left
    cancelled (a warning names ``what``)."""
    pending = {task for task in tasks if not task.done()}
    deadline = time.monotonic() + timeout
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            logger.warning("{}: {} task(s) still running after {:.0f}s, left cancelled", what, len(pending), timeout)
            return False
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(_RECANCEL, remaining))
    return True

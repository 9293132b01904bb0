"""Retry with exponential backoff, shared by the object storage and the event bus.

:func:`backoff_delays` yields the waits (full jitter in ``[delay/2, delay]``, doubling
up to a maximum) for loops that retry forever (the upload queue, the event relay);
:func:`run_with_retries` retries one operation a bounded number of times while the
error says it is worth it (a storage error's ``retryable``).

Nothing here imports the rest of ``control``: every layer may use it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from loguru import logger

__all__ = ["backoff_delays", "is_retryable", "run_with_retries"]

T = TypeVar("T")


def backoff_delays(initial: float, maximum: float) -> Iterator[float]:
    """Exponential backoff with full jitter in [delay/2, delay]: initial, 2x... up to maximum."""
    delay = initial
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(maximum, delay * 2)


def is_retryable(error: BaseException) -> bool:
    """Whether ``error`` says so itself (``retryable = True``, as storage errors do)."""
    return bool(getattr(error, "retryable", False))


async def run_with_retries(
    func: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    should_retry: Callable[[BaseException], bool] = is_retryable,
    initial: float = 0.5,
    maximum: float = 10.0,
    what: str = "operation",
) -> T:
    """Await ``func()`` up to ``attempts`` times while it raises a ``retry_on`` error
    that ``should_retry``; the last error (or one not worth retrying) propagates."""
    delays = backoff_delays(initial, maximum)
    for attempt in range(1, attempts + 1):
        try:
            return await func()
        except retry_on as exc:
            if not should_retry(exc) or attempt == attempts:
                raise
            delay = next(delays)
            logger.warning("{} failed (attempt {}/{}), retrying in {:.1f}s: {}", what, attempt, attempts, delay, exc)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")

"""tests/polling.py: the one wait-until-true of the tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.polling import eventually


async def test_it_returns_the_first_truthy_value_of_a_sync_check() -> None:
    calls: Iterator[object] = iter([None, [], {"peer": "alice"}, "never asked"])
    assert await eventually(lambda: next(calls), timeout=5, interval=0.001) == {"peer": "alice"}
    assert next(calls) == "never asked"


async def test_it_awaits_an_async_check() -> None:
    seen: list[int] = []

    async def third_time() -> int | None:
        seen.append(len(seen))
        return len(seen) if len(seen) == 3 else None

    assert await eventually(third_time, timeout=5, interval=0.001) == 3
    assert seen == [0, 1, 2]


async def test_it_fails_naming_what_it_waited_for_and_asks_once_past_the_deadline() -> None:
    asked: list[float] = []

    def never() -> bool:
        asked.append(time.monotonic())
        return False

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"alice's join recorded: not met within 0\.2 s"):
        await eventually(never, timeout=0.2, what="alice's join recorded", interval=0.01)
    assert asked[-1] - started > 0.2  # the last try came after the deadline
    assert len(asked) >= 2


async def test_a_state_reached_just_at_the_deadline_still_passes() -> None:
    """A check that turns true only once the deadline has passed (a slow machine) is
    asked once more and passes."""
    deadline = time.monotonic() + 0.1
    assert await eventually(lambda: time.monotonic() > deadline, timeout=0.1, interval=0.5) is True

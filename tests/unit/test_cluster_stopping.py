"""control.cluster.stopping: tasks stopped in bounded time, even one that swallows a cancel."""

from __future__ import annotations

import asyncio
import sys

import pytest

from control.cluster.stopping import stop_tasks


async def _send_then_finish() -> str:
    await asyncio.sleep(0)  # like a socket write that completes at once
    return "sent"


async def test_wait_for_can_lose_a_cancellation_on_311() -> None:
    """The cause: a cancel landing in the loop turn where wait_for's inner awaitable
    finished (redis-py's command send) is dropped on 3.11; the task runs on. Cancelled
    after 0, 1, 2... loop turns, one of the tasks hits that turn."""
    lost = []
    for turns in range(8):
        reached: list[int] = []

        async def beat(turns: int = turns, reached: list[int] = reached) -> None:
            await asyncio.wait_for(_send_then_finish(), 5)
            reached.append(turns)

        task = asyncio.ensure_future(beat())
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait([task], timeout=5)
        if reached and task.cancelling() and not task.cancelled():
            lost.append(turns)
    if sys.version_info < (3, 12):
        assert lost, "no cancellation lost: wait_for no longer has the 3.11 race"
    else:
        assert not lost


async def test_a_task_that_swallows_one_cancel_is_cancelled_again() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.sleep(3600)  # keeps running, as the heartbeat did

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    assert await stop_tasks([task], "test")
    assert swallowed.is_set() and task.cancelled()


async def test_a_task_that_never_ends_is_given_up_on_after_the_bound() -> None:
    release = asyncio.Event()

    async def immortal() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.ensure_future(immortal())
    await asyncio.sleep(0)
    assert not await stop_tasks([task], "test", timeout=0.3)
    assert not task.done()
    release.set()
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.done()


@pytest.mark.parametrize("count", [0, 3])
async def test_finished_and_plain_tasks_stop_at_once(count: int) -> None:
    tasks = [asyncio.ensure_future(asyncio.sleep(3600)) for _ in range(count)]
    assert await stop_tasks(tasks, "test")
    assert all(task.cancelled() for task in tasks)

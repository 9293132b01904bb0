"""``workers.processes``: /proc/<pid>/stat read right, children started off the loop."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from workers.processes import SPAWNER, proc_stat, start_off_loop


def test_a_command_name_with_parentheses_and_spaces_does_not_shift_the_fields(tmp_path: Path) -> None:
    # The kernel's comm is shown in parentheses: "x) T (y" would fool a reader that splits
    # on the first ")" or on spaces into reading "T" (stopped) as the state.
    binary = tmp_path / "x) T (y"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    child = subprocess.Popen([str(binary), "30"])
    try:
        stat = proc_stat(child.pid)
        assert stat is not None
        assert stat.state in ("R", "S", "D") and not stat.stopped
        mine = proc_stat(os.getpid())
        assert mine is not None and stat.starttime >= mine.starttime
        child.send_signal(signal.SIGSTOP)
        for _ in range(200):  # bounded: the kernel stops it within a scheduler tick
            stat = proc_stat(child.pid)
            if stat is not None and stat.stopped:
                break
            threading.Event().wait(0.01)
        assert stat is not None and stat.stopped
    finally:
        child.kill()
        child.wait()
    assert proc_stat(child.pid) is None  # reaped: no such process


def test_cpu_ticks_grow_with_work() -> None:
    before = proc_stat(os.getpid())
    assert before is not None
    total = sum(range(3_000_000))  # some tens of ms of CPU
    after = proc_stat(os.getpid())
    assert after is not None and total > 0
    assert after.utime + after.stime >= before.utime + before.stime


async def test_a_start_cancelled_midway_has_its_child_discarded() -> None:
    started = threading.Event()
    release = threading.Event()
    discarded: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        started.set()
        release.wait(10)
        return subprocess.Popen(["sleep", "30"])

    def discard(child: subprocess.Popen[bytes]) -> None:
        discarded.append(child)
        child.kill()
        child.wait()

    task = asyncio.ensure_future(start_off_loop(start, discard))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
    task.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(discarded) == 1 and discarded[0].returncode is not None
    # The spawner thread is the one every child comes from, and it lives on.
    assert SPAWNER.submit(threading.current_thread).result().name.startswith("spawn")

"""FFmpeg started by recording/process.py's spawn_ffmpeg is interrupted when the
process that started it dies (SIGKILL: no cleanup code runs), without a preexec_fn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

SPAWNER = """
import asyncio, sys
from recording.process import spawn_ffmpeg

async def main():
    process = await spawn_ffmpeg(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
                                  "-i", "anullsrc", "-f", "null", "-"])
    print(process.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _command(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().split(b"\0")[0]
    except OSError:
        return b""


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_ffmpeg_is_interrupted_when_its_parent_is_killed(sigint: str) -> None:
    """Also when the parent ignores SIGINT (started with ``&`` by a non-interactive
    shell): the child must not inherit that, or the parent's death right after the
    spawn, before FFmpeg handles SIGINT itself, would go unnoticed."""
    spawner = subprocess.Popen(
        [sys.executable, "-c", SPAWNER],
        stdout=subprocess.PIPE,
        cwd=os.getcwd(),
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint == "ignored" else None,
    )
    try:
        assert spawner.stdout is not None
        pid = int(spawner.stdout.readline())
        # The pid is env's, then setpriv's until it has set the parent-death signal and exec'd FFmpeg:
        # killed before that (the machine busy, setpriv not yet scheduled), FFmpeg would
        # be orphaned with no signal set, so wait for the exec. (Read too early, in the
        # middle of an exec, the command line is empty.)
        deadline = time.monotonic() + 20
        while _command(pid) != b"ffmpeg" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _command(pid) == b"ffmpeg", _command(pid)
        assert _alive(pid)
    finally:
        spawner.kill()
        spawner.wait()
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "FFmpeg outlived the process that started it"

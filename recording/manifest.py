"""A recording's state on disk: enough to finish it after a crash.

Each recording works in its own directory (``<RECORDING_DIR>/<recordingId>/``)
holding its video segments, its audio stems and ``manifest.json``: the room, the meeting, when each
segment's media began (``t0``, wall clock) and ended, each stem's first packet,
FFmpeg's pids, the events of the timeline, and the
participants seen so far (with their metadata, so the ``recording.completed``
event of a recovered recording still carries it, ``integrations`` included: the
file is 0600 and the recording's directory 0700, readable by their owner only). The file is replaced atomically (write, fsync, rename) on every
change.

States: ``recording`` (segments being written), ``finishing`` (joining them),
``submitted`` (the MP4 is in the durable upload queue; the directory goes once
the upload is confirmed).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loguru import logger

from workers.processes import proc_stat

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["MANIFEST", "Manifest", "SegmentEntry", "TrackEntry", "process_start_time"]

MANIFEST = "manifest.json"
#: Saves come from several threads (asyncio.to_thread): one at a time.
_SAVING = threading.Lock()
State = Literal["recording", "finishing", "submitted"]


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot, /proc/<pid>/stat field 22), or
    None if there is no such process."""
    stat = proc_stat(pid)
    return None if stat is None else stat.starttime


@dataclass
class SegmentEntry:
    file: str
    t0: float
    ended_at: float | None = None
    pid: int | None = None
    #: peerIds shown, in tile order (a name card is shown as its peerId too).
    layout: list[str] = field(default_factory=list)


@dataclass
class TrackEntry:
    """A stem: one audio producer recorded on its own (``recording.stem``)."""

    file: str
    peer_id: str
    producer_id: str
    #: Wall-clock time of its first packet (None: nothing came yet).
    t0: float | None = None
    ended_at: float | None = None
    pid: int | None = None


@dataclass
class Manifest:
    directory: Path
    recording_id: str
    room_id: str
    meeting_id: str
    filename: str
    started_at: float
    state: State = "recording"
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)
    segments: list[SegmentEntry] = field(default_factory=list)
    #: The stems (one per audio producer; merged per participant at stop).
    tracks: list[TrackEntry] = field(default_factory=list)
    #: What happened, for the timeline: ``{"at": wall-clock s, "type": ..., "peerId": ..., ...}``.
    events: list[dict[str, Any]] = field(default_factory=list)
    ended_at: float | None = None
    key: str | None = None
    upload_job: str | None = None
    #: The process recording it, as (pid, start time in clock ticks since boot):
    #: another live process's recording is not recovered; a reused pid is told apart.
    owner_pid: int = field(default_factory=os.getpid)
    owner_started: int | None = field(default_factory=lambda: process_start_time(os.getpid()))
    #: Snapshots taken and the newest written (saves run in threads, in any order).
    _taken: int = field(default=0, init=False, repr=False, compare=False)
    _written: int = field(default=0, init=False, repr=False, compare=False)

    def owned_by_another_process(self) -> bool:
        """True if the process that wrote it still runs (two servers sharing ``RECORDING_DIR``)."""
        if self.owner_pid == os.getpid():
            return False
        started = process_start_time(self.owner_pid)
        return started is not None and started == self.owner_started

    def adopt(self) -> None:
        """This process takes the recording over."""
        self.owner_pid, self.owner_started = os.getpid(), process_start_time(os.getpid())

    @property
    def path(self) -> Path:
        return self.directory / MANIFEST

    @property
    def log(self) -> Logger:
        """loguru's logger bound to this recording's room, meeting and id."""
        return logger.bind(room=self.room_id, meeting=self.meeting_id, recording=self.recording_id)

    def save(self) -> None:
        """Write the manifest now (blocking: fsync)."""
        self._write(*self._snapshot())

    async def save_async(self) -> None:
        """The manifest as it is now, written by a thread: the write and fsync (tens of
        ms on a busy disk) stay off the event loop. The snapshot is taken here, on the
        loop, so the thread never reads the manifest while the loop changes it; a
        snapshot older than one already written is dropped."""
        await asyncio.to_thread(self._write, *self._snapshot())

    def _snapshot(self) -> tuple[int, dict[str, Any]]:
        data = asdict(self)
        for name in ("directory", "_taken", "_written"):
            data.pop(name)
        self._taken += 1
        return self._taken, data

    def _write(self, seq: int, data: dict[str, Any]) -> None:
        with _SAVING:
            if seq <= self._written:
                return
            self._write_file(data)
            self._written = seq

    def _write_file(self, data: dict[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)  # whoever created it: it holds the participants' integrations
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        data["segments"] = [SegmentEntry(**s) for s in data.get("segments", [])]
        data["tracks"] = [TrackEntry(**t) for t in data.get("tracks", [])]
        return cls(directory=directory, **data)

    @classmethod
    def find(cls, root: Path) -> list[Manifest]:
        """Every readable manifest under ``root`` (one directory per recording)."""
        found = []
        if root.is_dir():
            for path in sorted(root.glob(f"*/{MANIFEST}")):
                try:
                    found.append(cls.load(path.parent))
                except (OSError, ValueError, TypeError):
                    continue
        return found

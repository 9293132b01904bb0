"""A recording over time: segments that follow the room, joined at stop.

FFmpeg cannot add inputs to a running filter graph, so when what should be
recorded changes (someone joins or leaves, mutes or unmutes, starts a screen
share) :class:`RecordingSession` starts a new :class:`~recording.segment.Segment`
with the new layout and, once it records, stops the old one a moment later
(:data:`OVERLAP`): the overlap is cut at the join (``recording.concat``), so no
time is missing at a change but the few hundred milliseconds the old segment
may stall after a producer closed or paused.

What to record comes from ``snapshot()`` (the caller's view of the room: the
router to record from, the sources on it and everyone's name; the router may
change, e.g. when the room moved to another worker after its worker died);
``changed()`` asks for a new look, after :data:`CHANGE_DELAY` (or
:data:`URGENT_DELAY` for a stalling input) so that a join's audio and video
make one change.

FFmpeg dying is noticed at once: what it wrote is kept and a new segment starts;
after :data:`MAX_RESTARTS` deaths in :data:`RESTART_WINDOW` seconds the
session stops restarting and reports it (``on_error``). The manifest
(``recording.manifest``) is saved at every change, so a crashed process's
segments can be finished at the next start (:func:`finish_segments`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recording.concat import join, parts
from recording.manifest import Manifest, SegmentEntry
from recording.segment import (
    NothingRecorded,
    RecordingError,
    Segment,
    SegmentOptions,
    Source,
    interrupt,
    probe,
    shown_tiles,
)

if TYPE_CHECKING:
    from workers.router import Router

__all__ = ["RecordingResult", "RecordingSession", "Snapshot", "finish_segments"]

#: How long the old segment records on after the new one began (cut at the join).
OVERLAP = 1.0
#: Wait after a change before looking at the room (a join brings audio and video).
CHANGE_DELAY = 0.4
#: ... and after an input stopped (closed or paused): the old segment stalls meanwhile.
URGENT_DELAY = 0.05
MAX_RESTARTS = 3
RESTART_WINDOW = 30.0
#: Segments holding less than this together, none readable, recorded nothing
#: (MPEG-TS tables, no media): such a recording is dropped, not kept for ever.
NO_MEDIA_BYTES = 16 * 1024

Snapshot = Callable[[], Awaitable[tuple["Router", list[Source], dict[str, str]]]]


@dataclass
class RecordingResult:
    path: Path
    duration: float
    streams: list[str]
    started_at: float
    ended_at: float
    segments: int


def _key(router: Router, sources: list[Source], names: dict[str, str]) -> tuple[object, ...]:
    return id(router), tuple(sorted((s.producer_id, s.kind, s.peer_id) for s in sources)), tuple(names.items())


class RecordingSession:
    def __init__(
        self,
        manifest: Manifest,
        snapshot: Snapshot,
        *,
        options: SegmentOptions | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.manifest = manifest
        self.snapshot = snapshot
        self.options = options or SegmentOptions()
        self.on_error = on_error
        self.segments: list[Segment] = []
        self.log = manifest.log
        self._lock = asyncio.Lock()
        self._pending: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._deaths: list[float] = []
        self._stopped = False
        self._layout_key: tuple | None = None

    @property
    def current(self) -> Segment | None:
        return self.segments[-1] if self.segments else None

    @property
    def directory(self) -> Path:
        return self.manifest.directory

    # -- start / change -----------------------------------------------------------------

    async def start(self) -> None:
        """The first segment; RecordingError if it cannot start."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.manifest.save()
        async with self._lock:
            await self._new_segment()

    def changed(self, *, urgent: bool = False) -> None:
        """Look at the room again soon; a new segment if what is recorded changed."""
        if self._stopped:
            return
        delay = URGENT_DELAY if urgent else CHANGE_DELAY
        loop = asyncio.get_running_loop()
        if self._pending is not None:
            if not urgent or self._pending.when() <= loop.time() + delay:
                return
            self._pending.cancel()
        self._pending = loop.call_later(delay, self._spawn_switch)

    def _spawn_switch(self) -> None:
        self._pending = None
        self._spawn(self._switch(forced=False))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _switch(self, *, forced: bool) -> None:
        async with self._lock:
            if self._stopped:
                return
            try:
                await self._new_segment(only_if_changed=not forced)
            except Exception as error:  # noqa: BLE001 - reported; the old segment goes on if it can
                self._report(f"new segment not started: {error}")
                if self.current is None or not self.current.running:
                    self._restart_later()
                else:  # the old segment records the old layout meanwhile: try the change again
                    self._restart_later(CHANGE_DELAY, forced=False)

    async def _new_segment(self, *, only_if_changed: bool = False) -> None:
        router, sources, names = await self.snapshot()
        key = _key(router, sources, names)
        old = self.current
        old_alive = old is not None and old.running
        if only_if_changed and old_alive and key == self._layout_key:
            return
        n = len(self.manifest.segments)
        segment = Segment(router, sources, self.directory / f"segment-{n:03d}.ts", names, self.options)
        await segment.start()
        assert segment.t0 is not None and segment.exited is not None
        self.segments.append(segment)
        self._layout_key = key
        layout = [peer_id for peer_id, _ in shown_tiles(sources, names)]
        self.manifest.segments.append(SegmentEntry(segment.path.name, segment.t0, pid=segment.pid, layout=layout))
        await asyncio.to_thread(self.manifest.save)
        self.log.info("segment {} started: {} input(s), layout {}", n, len(sources), layout)
        segment.exited.add_done_callback(lambda _exited: self._on_exit(segment))
        if old is not None:
            self._spawn(self._retire(old, OVERLAP if old_alive else 0.0))

    async def _retire(self, segment: Segment, after: float) -> None:
        await asyncio.sleep(after)
        try:
            await segment.stop()
        except RecordingError as error:
            self.log.warning("segment {} unusable: {}", segment.path.name, error)
        self._mark_ended(segment)

    def _mark_ended(self, segment: Segment) -> None:
        for entry in self.manifest.segments:
            if entry.file == segment.path.name and entry.ended_at is None:
                entry.ended_at = time.time()
        with contextlib.suppress(OSError):
            self.manifest.save()

    def _on_exit(self, segment: Segment) -> None:
        if segment.stopping or self._stopped:
            return
        code = segment.process.returncode if segment.process else None
        self._report(f"FFmpeg exited unexpectedly ({code}): {segment.stderr_tail()}")
        if segment is self.current:
            self._restart_later(0.0)

    def _restart_later(self, delay: float = 1.0, *, forced: bool = True) -> None:
        """A new segment after a failure (``forced``: even if the room did not
        change), unless failures come too often."""
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW] + [now]
        if len(self._deaths) > MAX_RESTARTS:
            self._report(
                f"{len(self._deaths)} failures in {RESTART_WINDOW:.0f} s; not restarting: "
                "the recording keeps what it has until it is stopped"
            )
            return

        async def restart() -> None:
            await asyncio.sleep(delay)
            await self._switch(forced=forced)

        self._spawn(restart())

    def _report(self, message: str) -> None:
        self.log.error("recording {}: {}", self.manifest.recording_id, message)
        if self.on_error is not None:
            self.on_error(message)

    # -- stop -----------------------------------------------------------------------------

    async def stop(self, out: Path) -> RecordingResult:
        """Finish the current segment, join every segment into ``out`` (MP4), check it."""
        self._stopped = True
        if self._pending is not None:
            self._pending.cancel()
        ended_at = time.time()
        async with self._lock:
            current = self.current
            if current is not None:
                with contextlib.suppress(RecordingError):
                    await current.stop()
                self._mark_ended(current)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.manifest.state = "finishing"
        self.manifest.ended_at = ended_at
        await asyncio.to_thread(self.manifest.save)
        duration, streams = await finish_segments(self.manifest, out, ffmpeg_bin=self.options.ffmpeg_bin)
        return RecordingResult(out, duration, streams, self.manifest.started_at, ended_at, len(self.manifest.segments))

    async def abort(self) -> None:
        """Stop every FFmpeg and close the inputs (a start that failed)."""
        self._stopped = True
        for segment in self.segments:
            await segment.abort()


def _stale_ffmpeg(pid: int | None, segment_path: Path) -> bool:
    """True if ``pid`` is still an FFmpeg writing ``segment_path`` (a crashed
    process's child, orphaned)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(segment_path).encode() in cmdline


async def finish_segments(manifest: Manifest, out: Path, *, ffmpeg_bin: str = "ffmpeg") -> tuple[float, list[str]]:
    """Join the manifest's segments into ``out`` and ffprobe it: (duration, codecs).

    Used at stop, and at start-up for a recording whose process died: an FFmpeg
    still writing one of its segments is interrupted first."""
    log = manifest.log
    entries = [(manifest.directory / e.file, e) for e in manifest.segments]
    for path, entry in entries:
        if _stale_ffmpeg(entry.pid, path):
            log.warning("interrupting FFmpeg {} left writing {}", entry.pid, path.name)
            assert entry.pid is not None
            await interrupt(entry.pid)  # its inputs are silent: it would not stop on one SIGINT
            for _ in range(100):
                if not _stale_ffmpeg(entry.pid, path):
                    break
                await asyncio.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(entry.pid, signal.SIGKILL)
    usable = set()
    for path, _entry in entries:
        try:
            await asyncio.to_thread(probe, path)
            usable.add(path)
        except RecordingError as error:
            log.warning("segment {} left out: {}", path.name, error)
    items = parts([(path, e.t0) for path, e in entries], usable)
    if not items:
        written = sum(path.stat().st_size for path, _e in entries if path.exists())
        if written < NO_MEDIA_BYTES:
            raise NothingRecorded(f"nothing was recorded ({written} bytes in {len(entries)} segment(s))")
        raise RecordingError("no usable segment")
    try:
        await asyncio.to_thread(join, items, out, ffmpeg_bin=ffmpeg_bin)
    except Exception as error:
        stderr = getattr(error, "stderr", b"") or b""
        raise RecordingError(f"joining segments failed: {stderr.decode(errors='replace')[-300:] or error}") from error
    duration, streams = await asyncio.to_thread(probe, out)
    log.info("recording written: {} ({:.1f} s, {}, {} segment(s))", out.name, duration, ", ".join(streams), len(items))
    return duration, streams

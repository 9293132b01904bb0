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

A video that stops sending without pausing (network loss) would stall the
segment's grid too: the producers' packet counters are read every
:data:`WATCH_INTERVAL`, and one that did not move for :data:`SILENT_AFTER` is
left out of the layout as a paused one (``silent``) until it sends again.

FFmpeg dying is noticed at once: what it wrote is kept and a new segment starts;
after :data:`MAX_RESTARTS` deaths in :data:`RESTART_WINDOW` seconds the
session stops restarting and reports it (``on_error``). The manifest
(``recording.manifest``) is saved at every change, so a crashed process's
segments can be finished at the next start (:func:`finish_segments`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from recording.concat import Part, parts
from recording.manifest import Manifest, SegmentEntry, TrackEntry
from recording.mix import StemInput, compose, cut, merge_stems
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
from recording.stem import Stem
from recording.timeline import timeline

if TYPE_CHECKING:
    from workers.router import Router

__all__ = [
    "FinishedTrack",
    "Plan",
    "RecordingResult",
    "RecordingSession",
    "Snapshot",
    "finish_recording",
    "finish_segments",
    "plan",
]

#: How long the old segment records on after the new one began (cut at the join).
OVERLAP = 1.0
#: Wait after a change before looking at the room (a join brings audio and video).
CHANGE_DELAY = 0.4
#: ... and after an input stopped (closed or paused): the old segment stalls meanwhile.
URGENT_DELAY = 0.05
#: A video producer that sent no RTP packet for this long counts as paused for the
#: layout (network loss without a pause: its tile would stall the segment's grid).
SILENT_AFTER = 0.7
#: How often the video producers' packet counters are read.
WATCH_INTERVAL = 0.2
MAX_RESTARTS = 3
RESTART_WINDOW = 30.0
#: Segments holding less than this together, none readable, recorded nothing
#: (MPEG-TS tables, no media): such a recording is dropped, not kept for ever.
NO_MEDIA_BYTES = 16 * 1024

#: FFmpeg's ports are picked free, but another process (a worker's transport in its
#: port range, which overlaps the kernel's) may bind one before FFmpeg does: FFmpeg
#: exits, and the start is tried again with other ports this many times in all.
BIND_ATTEMPTS = 3

Snapshot = Callable[[], Awaitable[tuple["Router", list[Source], dict[str, str]]]]


_Recorder = TypeVar("_Recorder", Segment, Stem)


def _port_taken(error: RecordingError) -> bool:
    """FFmpeg could not bind a port picked for it (taken meanwhile)."""
    return "Address already in use" in str(error)


@dataclass(frozen=True)
class FinishedTrack:
    """One participant's audio, merged from their stems."""

    peer_id: str
    path: Path
    #: Seconds from the composite's start to the track's first sample.
    offset: float
    duration: float


@dataclass
class Finished:
    duration: float
    streams: list[str]
    tracks: list[FinishedTrack]
    timeline: Path
    #: Wall-clock time of the composite's first instant.
    origin: float


@dataclass
class RecordingResult:
    path: Path
    duration: float
    streams: list[str]
    started_at: float
    ended_at: float
    segments: int
    tracks: list[FinishedTrack] = field(default_factory=list)
    timeline: Path | None = None


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
        #: Live stems by producer id; every stem ever started in ``stems_started``.
        self.stems: dict[str, Stem] = {}
        self.stems_started: list[Stem] = []
        self._stems_lock = asyncio.Lock()
        #: A stem listening ahead for the next audio producer (:mod:`recording.stem`).
        self.spare: Stem | None = None
        self._spare_lock = asyncio.Lock()
        self._stem_numbers = itertools.count()
        self.log = manifest.log
        self._lock = asyncio.Lock()
        self._pending: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._deaths: list[float] = []
        self._stopped = False
        self._layout_key: tuple | None = None
        #: Video producers (ids) not sending now: left out of the layout as paused ones.
        self.silent: set[str] = set()
        self._watching: tuple[Router | None, list[str]] = (None, [])
        self._counters: dict[str, tuple[int, float]] = {}
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def current(self) -> Segment | None:
        return self.segments[-1] if self.segments else None

    @property
    def directory(self) -> Path:
        return self.manifest.directory

    # -- start / change -----------------------------------------------------------------

    async def start(self) -> None:
        """The first segment; RecordingError if it cannot start."""
        await self.manifest.save_async()  # makes the directory
        async with self._lock:
            await self._new_segment(stems_first=True)
        self._watch_task = asyncio.ensure_future(self._watch_videos())

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

    async def _new_segment(self, *, only_if_changed: bool = False, stems_first: bool = False) -> None:
        """A segment for what the room shows now (unless it did not change), and the
        stems following its audio producers; at the very start the stems first: the
        composite starts with the first audio (:class:`Plan`), before the first
        segment's ``t0`` when its FFmpeg is slow to listen."""
        router, everything, names = await self.snapshot()
        stems = self._spawn(self._follow_stems(router, everything))
        if stems_first:
            await asyncio.gather(stems, return_exceptions=True)
        self._watching = (router, [s.producer_id for s in everything if s.kind == "video" and not s.paused])
        shown = [s for s in everything if not s.paused and s.producer_id not in self.silent]
        try:
            await self._new_segment_of(router, shown, names, only_if_changed)
        finally:
            await asyncio.gather(stems, return_exceptions=True)

    async def _started(self, make: Callable[[], _Recorder], what: str) -> _Recorder:
        """``make()``'s recorder, started; made and started again (its ports picked anew)
        when its FFmpeg could not bind the ports picked for it (taken between the pick
        and the bind), :data:`BIND_ATTEMPTS` times in all."""
        for _ in range(BIND_ATTEMPTS - 1):
            recorder = make()
            try:
                await recorder.start()
                return recorder
            except RecordingError as error:
                if not _port_taken(error):
                    raise
                self.log.info("{} not started ({}): again with other ports", what, error)
        recorder = make()
        await recorder.start()
        return recorder

    async def _new_segment_of(
        self, router: Router, sources: list[Source], names: dict[str, str], only_if_changed: bool
    ) -> None:
        key = _key(router, sources, names)
        old = self.current
        old_alive = old is not None and old.running
        if only_if_changed and old_alive and key == self._layout_key:
            return
        n = len(self.manifest.segments)
        path = self.directory / f"segment-{n:03d}.ts"
        segment = await self._started(lambda: Segment(router, sources, path, names, self.options), f"segment {n}")
        assert segment.t0 is not None and segment.exited is not None
        self.segments.append(segment)
        self._layout_key = key
        layout = [peer_id for peer_id, _ in shown_tiles(sources, names)]
        self.manifest.segments.append(SegmentEntry(segment.path.name, segment.t0, pid=segment.pid, layout=layout))
        await self.manifest.save_async()
        self.log.info("segment {} started: {} input(s), layout {}", n, len(sources), layout)
        segment.exited.add_done_callback(lambda _exited: self._on_exit(segment))
        if old is not None:
            self._spawn(self._retire(old, OVERLAP if old_alive else 0.0))

    # -- videos that stop sending ---------------------------------------------------------

    async def _watch_videos(self) -> None:
        """Every :data:`WATCH_INTERVAL`, the packet counters of the videos the room
        shows (not paused): one that did not move for :data:`SILENT_AFTER` is left out
        of the layout (a new segment, urgent: the current one stalls on it), and put
        back once it sends again."""
        while not self._stopped:
            await asyncio.sleep(WATCH_INTERVAL)
            router, producer_ids = self._watching
            if router is None:
                continue
            try:
                changes = await self._look_at_counters(router, producer_ids)
            except Exception as error:  # noqa: BLE001 - a closing producer or worker: look again later
                self.log.debug("video counters not read: {}", error)
                continue
            if changes and not self._stopped:
                self.changed(urgent=any(now_silent for _id, now_silent in changes))

    async def _look_at_counters(self, router: Router, producer_ids: list[str]) -> list[tuple[str, bool]]:
        """(producer id, silent now) for each video whose state changed."""
        producers = [p for pid in producer_ids if (p := router.producers.get(pid)) is not None and not p.closed]
        found = await asyncio.gather(*(p.get_stats() for p in producers), return_exceptions=True)
        now = time.monotonic()
        changes: list[tuple[str, bool]] = []
        for producer, stats in zip(producers, found, strict=True):
            if isinstance(stats, BaseException):
                continue
            count = sum(int(s.get("packetCount") or 0) for s in stats)
            last, since = self._counters.get(producer.id, (-1, now))
            if count != last:
                self._counters[producer.id] = (count, now)
                if producer.id in self.silent:
                    self.silent.discard(producer.id)
                    self.log.info("video {} sends again", producer.id)
                    changes.append((producer.id, False))
            elif producer.id not in self.silent and now - since >= SILENT_AFTER:
                self.silent.add(producer.id)
                self.log.info("video {} sent nothing for {:.1f} s: shown as paused", producer.id, now - since)
                changes.append((producer.id, True))
        for gone in set(self._counters) - set(producer_ids):
            del self._counters[gone]
            self.silent.discard(gone)
        return changes

    # -- stems --------------------------------------------------------------------------

    def audio_added(self) -> None:
        """A new audio producer: its stem starts now, not after :data:`CHANGE_DELAY`
        (its first words are not to wait for the layout)."""
        if not self._stopped:
            self._spawn(self._stems_now())

    async def _stems_now(self) -> None:
        try:
            router, sources, _names = await self.snapshot()
        except RecordingError:
            return
        if not self._stopped:
            await self._follow_stems(router, sources)

    async def _follow_stems(self, router: Router, sources: list[Source]) -> None:
        """One running stem per audio producer (paused ones too: they record silence);
        a stem whose producer went (or moved router) is stopped."""
        async with self._stems_lock:
            if not self._stopped:  # a stop may have come while this waited
                await self._follow_stems_locked(router, sources)

    async def _follow_stems_locked(self, router: Router, sources: list[Source]) -> None:
        wanted = {s.producer_id: s for s in sources if s.kind == "audio"}
        for producer_id, stem in list(self.stems.items()):
            if producer_id not in wanted or stem.router is not router or not stem.running:
                del self.stems[producer_id]
                self._spawn(self._end_stem(stem))
        new = [s for producer_id, s in wanted.items() if producer_id not in self.stems]
        results = await asyncio.gather(*(self._start_stem(router, s) for s in new), return_exceptions=True)
        for source, result in zip(new, results, strict=True):
            if isinstance(result, BaseException):
                self._report(f"audio of {source.peer_id} not recorded: {result}")
        if new:
            await self.manifest.save_async()
        self._spawn(self._keep_spare(router))

    def _stem_path(self) -> Path:
        return self.directory / f"stem-{next(self._stem_numbers):03d}.ogg"

    async def _keep_spare(self, router: Router) -> None:
        """One stem listening on ``router`` for the next audio producer (a new one when
        the last was taken, its FFmpeg exited or the room moved router)."""
        async with self._spare_lock:
            spare = self.spare
            if self._stopped or (spare is not None and spare.router is router and spare.running):
                return
            self.spare = None
            if spare is not None:
                await spare.abort()
            path = self._stem_path()
            try:
                spare = await self._started(
                    lambda: Stem(router, path, ffmpeg_bin=self.options.ffmpeg_bin), "spare stem"
                )
            except RecordingError as error:  # the next producer's stem starts on demand
                self.log.warning("no stem listening ahead: {}", error)
                return
            if self._stopped:
                await spare.abort()
            else:
                self.spare = spare

    async def _start_stem(self, router: Router, source: Source) -> None:
        spare, self.spare = self.spare, None
        path = spare.path if spare is not None else self._stem_path()
        entry = TrackEntry(path.name, source.peer_id, source.producer_id)
        self.manifest.tracks.append(entry)

        def first_packet(stem: Stem) -> None:
            entry.t0 = stem.t0
            self._spawn(self.manifest.save_async())

        try:
            stem = None
            if spare is not None and spare.router is router and spare.running:
                spare.on_first_packet = first_packet
                try:
                    await spare.attach(source)
                    stem = spare
                except RecordingError as error:
                    self.log.info("spare stem not attached to {} ({}): started anew", source.producer_id, error)
            elif spare is not None:
                await spare.abort()
            if stem is None:
                stem = await self._started(
                    lambda: Stem(
                        router, path, source, ffmpeg_bin=self.options.ffmpeg_bin, on_first_packet=first_packet
                    ),
                    f"stem {path.name}",
                )
        except BaseException:
            self.manifest.tracks.remove(entry)
            raise
        entry.pid = stem.pid
        self.stems[source.producer_id] = stem
        self.stems_started.append(stem)
        assert stem.exited is not None
        stem.exited.add_done_callback(lambda _exited: self._on_stem_exit(stem))
        self.log.info("stem {} started for {} (producer {})", stem.path.name, source.peer_id, source.producer_id)

    def _on_stem_exit(self, stem: Stem) -> None:
        if stem.stopping or self._stopped:
            return
        code = stem.process.returncode if stem.process else None
        peer_id = stem.source.peer_id if stem.source is not None else "?"
        self._report(f"audio recorder of {peer_id} exited ({code}): {stem.stderr_tail()}")
        self.changed(urgent=True)

    async def _end_stem(self, stem: Stem) -> None:
        await stem.stop()
        for entry in self.manifest.tracks:
            if entry.file == stem.path.name:
                entry.ended_at = stem.ended_at
        with contextlib.suppress(OSError):
            await self.manifest.save_async()

    async def _retire(self, segment: Segment, after: float) -> None:
        await asyncio.sleep(after)
        try:
            await segment.stop(drain=True)
        except RecordingError as error:
            self.log.warning("segment {} unusable: {}", segment.path.name, error)
        await self._mark_ended(segment)

    async def _mark_ended(self, segment: Segment) -> None:
        for entry in self.manifest.segments:
            if entry.file == segment.path.name and entry.ended_at is None:
                entry.ended_at = time.time()
        with contextlib.suppress(OSError):
            await self.manifest.save_async()

    def _on_exit(self, segment: Segment) -> None:
        if segment.stopping or self._stopped:
            return
        code = segment.process.returncode if segment.process else None
        if code == 0:  # every input silent for INPUT_TIMEOUT: its file is whole; look again
            self.log.info("segment {} ended (its inputs went silent)", segment.path.name)
            if segment is self.current:
                self.changed(urgent=True)
            return
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
        """Stop recording, then join and mix everything into ``out`` (MP4)."""
        ended_at = await self.stop_recorders()
        done = await finish_recording(self.manifest, out, ffmpeg_bin=self.options.ffmpeg_bin)
        return RecordingResult(
            out,
            done.duration,
            done.streams,
            self.manifest.started_at,
            ended_at,
            len(self.manifest.segments),
            done.tracks,
            done.timeline,
        )

    async def stop_recorders(self) -> float:
        """Stop every FFmpeg (the current segment, the stems); the manifest says
        ``finishing``. Returns when the recording ended (wall clock)."""
        self._stopped = True
        if self._pending is not None:
            self._pending.cancel()
        self._stop_watching()
        ended_at = time.time()
        async with self._lock, self._stems_lock:
            current = self.current
            stems = list(self.stems.values())
            self.stems.clear()

            async def stop_current() -> None:
                if current is not None:
                    with contextlib.suppress(RecordingError):
                        await current.stop()
                    await self._mark_ended(current)

            await asyncio.gather(stop_current(), *(self._end_stem(stem) for stem in stems))
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._drop_spare()
        self.manifest.state = "finishing"
        self.manifest.ended_at = ended_at
        await self.manifest.save_async()
        return ended_at

    def _stop_watching(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()

    async def abort(self) -> None:
        """Stop every FFmpeg and close the inputs (a start that failed)."""
        self._stopped = True
        self._stop_watching()
        for segment in self.segments:
            await segment.abort()
        for stem in self.stems_started:
            await stem.abort()
        await self._drop_spare()

    async def _drop_spare(self) -> None:
        async with self._spare_lock:
            spare, self.spare = self.spare, None
            if spare is not None:
                await spare.abort()


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


async def _interrupt_stale(log: Any, pid: int | None, path: Path) -> None:
    # /proc is read in a thread (a polled file read, off the event loop).
    if not await asyncio.to_thread(_stale_ffmpeg, pid, path):
        return
    log.warning("interrupting FFmpeg {} left writing {}", pid, path.name)
    assert pid is not None
    await interrupt(pid)  # its inputs are silent: it would not stop on one SIGINT
    for _ in range(100):
        if not await asyncio.to_thread(_stale_ffmpeg, pid, path):
            return
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def _usable(log: Any, path: Path) -> tuple[float, list[str]] | None:
    """The file's (duration, codecs), or None if it holds nothing readable."""
    try:
        return await asyncio.to_thread(probe, path)
    except RecordingError as error:
        log.warning("{} left out: {}", path.name, error)
        return None


def _written(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def _safe(peer_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", peer_id)[:40] or "peer"


#: A participant's audio running on past the stop by more than this is cut there.
TRACK_END_SLACK = 0.05


async def _tracks(manifest: Manifest, ffmpeg_bin: str) -> list[tuple[str, Path, float, float]]:
    """One (peerId, file, wall-clock start, duration) per participant (their stems,
    merged when there are several), cut at the recording's end."""
    found = await _merged_tracks(manifest, ffmpeg_bin)
    if manifest.ended_at is None:  # a process died while recording: as far as any file goes
        return found
    out = []
    for peer_id, path, t0, length in found:
        end = manifest.ended_at - t0
        if length > end + TRACK_END_SLACK and end > 0:
            # A stem's FFmpeg stops at its next packet after the stop: what it heard
            # after the stop (up to a second under load) is not part of the recording.
            await asyncio.to_thread(cut, path, end, ffmpeg_bin=ffmpeg_bin)
            length = (await asyncio.to_thread(probe, path))[0]
        out.append((peer_id, path, t0, length))
    return out


async def _merged_tracks(manifest: Manifest, ffmpeg_bin: str) -> list[tuple[str, Path, float, float]]:
    """One (peerId, file, wall-clock start, duration) per participant: their usable
    stems, merged into one file when there are several."""
    log = manifest.log
    entries = [(t, manifest.directory / t.file) for t in manifest.tracks if t.t0 is not None]
    found = await asyncio.gather(*(_usable(log, path) for _t, path in entries if path.exists()))
    probed = dict(zip([path for _t, path in entries if path.exists()], found, strict=True))
    by_peer: dict[str, list[tuple[Path, float, float]]] = {}
    for entry, path in entries:
        if (usable := probed.get(path)) is not None:
            assert entry.t0 is not None
            by_peer.setdefault(entry.peer_id, []).append((path, entry.t0, usable[0]))
    out = []
    for n, (peer_id, stems) in enumerate(by_peer.items()):
        stems.sort(key=lambda item: item[1])
        first = stems[0][1]
        if len(stems) == 1:
            out.append((peer_id, stems[0][0], first, stems[0][2]))
            continue
        merged = manifest.directory / f"audio-{n:02d}-{_safe(peer_id)}.ogg"
        inputs = [StemInput(path, t0 - first) for path, t0, _length in stems]
        await asyncio.to_thread(merge_stems, inputs, merged, ffmpeg_bin=ffmpeg_bin)
        out.append((peer_id, merged, first, (await asyncio.to_thread(probe, merged))[0]))
    return out


@dataclass
class Plan:
    """What the segments on disk give: the parts to join, each usable one's
    (duration, codecs), and the composite's first instant (wall clock).

    The composite starts at whichever came first: the first usable segment's
    ``t0`` or a stem's first packet (the stems start before the first segment,
    which waits for its FFmpeg): no audio a stem holds is cut from the
    composite; its video starts ``video_delay`` seconds in (black before)."""

    items: list[Part]
    usable: dict[Path, tuple[float, list[str]]]
    origin: float
    #: Seconds from the composite's start to the first part's first instant.
    video_delay: float = 0.0


def _origin(video_at: float, manifest: Manifest) -> float:
    """The composite's first instant: the first video's or the first audio's."""
    return min([video_at, *(t.t0 for t in manifest.tracks if t.t0 is not None)])


async def plan(manifest: Manifest) -> Plan:
    """Probe the segments (an FFmpeg still writing one is interrupted first):
    :class:`NothingRecorded` if none holds media, RecordingError if none is usable.
    Quick (ffprobes in parallel): the stop answers with it, the mix comes after."""
    log = manifest.log
    entries = [(manifest.directory / e.file, e) for e in manifest.segments]
    await asyncio.gather(
        *(_interrupt_stale(log, e.pid, path) for path, e in entries),
        *(_interrupt_stale(log, t.pid, manifest.directory / t.file) for t in manifest.tracks),
    )
    probed = await asyncio.gather(*(_usable(log, path) for path, _entry in entries))
    usable = {path: found for (path, _e), found in zip(entries, probed, strict=True) if found is not None}
    items = parts([(path, e.t0) for path, e in entries], set(usable))
    if not items:
        written = sum(path.stat().st_size for path, _e in entries if path.exists())
        if written < NO_MEDIA_BYTES:
            raise NothingRecorded(f"nothing was recorded ({written} bytes in {len(entries)} segment(s))")
        raise RecordingError("no usable segment")
    video_at = next(e.t0 for path, e in entries if path == items[0].path)
    origin = _origin(video_at, manifest)
    return Plan(items, usable, origin, video_at - origin)


async def finish_recording(
    manifest: Manifest, out: Path, *, ffmpeg_bin: str = "ffmpeg", planned: Plan | None = None
) -> Finished:
    """The composite ``out`` (video segments joined, audio mixed from the stems), one
    audio file per participant and ``timeline.json``; used after stop, and at start-up
    for a recording whose process died (an FFmpeg still writing is interrupted first)."""
    log = manifest.log
    entries = [(manifest.directory / e.file, e) for e in manifest.segments]
    the_plan = planned or await plan(manifest)
    items, usable, origin, video_delay = the_plan.items, the_plan.usable, the_plan.origin, the_plan.video_delay
    tracks = await _tracks(manifest, ffmpeg_bin)
    if manifest.ended_at is None:  # a process died while recording: as far as any file goes
        ends = [e.t0 + usable[path][0] for path, e in entries if path in usable]
        ends += [t0 + length for _peer, _path, t0, length in tracks]
        manifest.ended_at = max(ends)
    total = max(0.1, manifest.ended_at - origin)
    segment_audio = not manifest.tracks and any("aac" in codecs for _d, codecs in usable.values())
    stems = [StemInput(path, t0 - origin) for _peer, path, t0, _length in tracks]
    try:
        await asyncio.to_thread(
            compose,
            items,
            stems,
            total,
            out,
            segment_audio=segment_audio,
            video_delay=video_delay,
            ffmpeg_bin=ffmpeg_bin,
        )
    except Exception as error:
        stderr = getattr(error, "stderr", b"") or b""
        raise RecordingError(f"joining segments failed: {stderr.decode(errors='replace')[-300:] or error}") from error
    # Cut to ``total`` by FFmpeg: no ffprobe of the result (a few hundred ms at stop).
    if not await asyncio.to_thread(_written, out):
        raise RecordingError(f"{out.name} was not written")
    duration = total
    video_codecs = {c for _d, codecs in usable.values() for c in codecs if c != "aac"}
    streams = [*sorted(video_codecs), "aac"]
    finished = [FinishedTrack(peer_id, path, t0 - origin, length) for peer_id, path, t0, length in tracks]
    document = timeline(
        manifest.events,
        origin=origin,
        duration=duration,
        recording_id=manifest.recording_id,
        room_id=manifest.room_id,
        meeting_id=manifest.meeting_id,
    )
    timeline_path = manifest.directory / "timeline.json"
    timeline_path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    log.info(
        "recording written: {} ({:.2f} s for {:.2f} s recorded, {}, {} segment(s), {} track(s))",
        out.name,
        duration,
        total,
        ", ".join(streams),
        len(items),
        len(finished),
    )
    return Finished(duration, streams, finished, timeline_path, origin)


async def finish_segments(manifest: Manifest, out: Path, *, ffmpeg_bin: str = "ffmpeg") -> tuple[float, list[str]]:
    """:func:`finish_recording`'s (duration, codecs)."""
    done = await finish_recording(manifest, out, ffmpeg_bin=ffmpeg_bin)
    return done.duration, done.streams

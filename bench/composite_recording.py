#!/usr/bin/env python3
"""Composite recording: CPU per second of recording and realtime factor, by participants.

For each participant count (default 2, 4 and 9) at 640x360, 15 fps, this runs the
real pipeline of ``recording/``: a ``Segment`` on a router of a real
``mediasoup-worker`` (``MEDIASOUP_WORKER_BIN`` or the one ``make setup`` builds),
consuming, for every participant, a VP8 video producer and an Opus audio producer
on PlainTransports (comedia). Each participant is fed by its own FFmpeg sender that
loops a pre-encoded clip (its own hue of ``testsrc2`` 640x360 15 fps VP8 with a key
frame every 2 s, and its own sine tone in Opus) with ``-re -c copy -f rtp``: stream
copy costs the senders next to nothing, so the machine's cores go to the recorder.

Measured over a fixed window (``--seconds``, after ``--warmup`` seconds of output):

- **recorder CPU**: the recording FFmpeg's utime + stime (``/proc/<pid>/stat``, all
  threads) per wall second; 1.0 is one full core; also as a share of the machine;
- **live realtime factor**: output media time gained / wall time, both read from
  FFmpeg's own ``-progress`` reports (``out_time_us``, stamped by the report file's
  mtime). It stays ~1.0 while FFmpeg keeps up and falls below 1 when it lags; the
  output frame rate, FFmpeg's own ``speed=`` (cumulative since it began encoding,
  so above 1 at first while it drains what arrived during its probe) and its
  warnings in the window (RTP reordering, lost packets) are printed beside it;
- **offline peer**: right after, with the senders stopped, the same FFmpeg command
  (``Segment.command()``: the same filter graph and encoder) with the SDP input
  replaced by the participants' clip files, run as fast as it can over the same
  media length, three times: realtime factor (media seconds / wall seconds, the
  headroom) and CPU per media second (``wait4`` rusage) of the median run;
- **ratio**: live CPU per second / offline CPU per media second, the cost of the
  live pipeline (RTP reception, jitter, real-time pacing) over the same composite
  computed from files;
- the worker's and the senders' CPU per second and the whole machine's busy cores
  during the window, for information (the machine may be shared).

Target: with 4 participants the recorder uses less than one core and runs at least
at realtime: live realtime factor >= 0.98 (fed in real time, it cannot run ahead, so
this checks it does not fall behind) and offline realtime factor >= 1.0.

    .venv/bin/python bench/composite_recording.py                          # 2, 4 and 9; 15 s windows
    .venv/bin/python bench/composite_recording.py --participants 4 --seconds 30
    .venv/bin/python bench/composite_recording.py --markdown /tmp/recording.md --keep /tmp/rec  # files kept
"""

from __future__ import annotations

import argparse
import array
import asyncio
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ffmpeg
from loguru import logger

from control.rooms.codecs import MEDIA_CODECS
from recording.concat import Part
from recording.layout import composite
from recording.mix import StemInput, compose
from recording.segment import Segment, SegmentOptions, Source, probe, shown_tiles
from recording.stem import Stem
from workers.native import worker_binary
from workers.worker import Worker, WorkerSettings

WIDTH, HEIGHT, FPS = 640, 360, 15
#: Length of each pre-encoded clip; senders and the offline run loop it.
CLIP_SECONDS = 10
AUDIO_PT, VIDEO_PT = 100, 101
IP = "127.0.0.1"
#: Offline runs per count (a few seconds each); the median one is reported.
OFFLINE_RUNS = 3
#: How often FFmpeg writes a progress report (seconds).
PROGRESS_PERIOD = 0.25
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


# --- CPU accounting ---------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (every thread), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat): shows what
    other work on a shared machine took during the window."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK  # guest time is already counted in user


@dataclass
class Snapshot:
    """CPU seconds of the processes of interest and the machine at one moment."""

    wall: float
    recorder: float
    worker: float
    senders: float
    busy: float

    @classmethod
    def take(cls, recorder: int, worker: int, senders: list[int]) -> Snapshot:
        return cls(
            time.monotonic(),
            cpu_seconds(recorder),
            cpu_seconds(worker),
            sum(cpu_seconds(pid) for pid in senders),
            machine_busy(),
        )


# --- clips and senders --------------------------------------------------------


def make_clip(path: Path, index: int) -> Path:
    """A CLIP_SECONDS WebM: VP8 640x360 15 fps (testsrc2, its own hue; a key frame
    every 2 s, since the senders ignore the recorder's key frame requests) and an
    Opus stereo tone of its own pitch."""
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={300 + 70 * index}:sample_rate=48000",
            "-t",
            str(CLIP_SECONDS),
            "-vf",
            f"hue=h={index * 40}",
            "-c:v",
            "libvpx",
            "-b:v",
            "600k",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-g",
            str(2 * FPS),
            "-keyint_min",
            str(2 * FPS),
            "-auto-alt-ref",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "libopus",
            "-b:a",
            "48k",
            "-ac",
            "2",
            "-ar",
            "48000",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path


def rtp_output(kind: str, ssrc: int, pt: int, transport: Any) -> list[str]:
    """One ``-f rtp`` output of the sender: the clip's stream of ``kind``, copied."""
    port, rtcp = transport.tuple["localPort"], transport.rtcp_tuple["localPort"]
    return [
        "-map",
        f"0:{kind[0]}:0",
        "-c",
        "copy",
        "-f",
        "rtp",
        "-ssrc",
        str(ssrc),
        "-payload_type",
        str(pt),
        f"rtp://{IP}:{port}?rtcpport={rtcp}&pkt_size=1200",
    ]


@dataclass
class Participant:
    peer_id: str
    clip: Path
    transports: list[Any]
    sources: list[Source]
    sender: subprocess.Popen

    def close(self) -> None:
        """Stop the sender (it was started by this script) and close the transports."""
        self.sender.kill()
        self.sender.wait(timeout=10)
        for transport in self.transports:
            transport.close()


async def add_participant(router: Any, index: int, clip: Path) -> Participant:
    """A VP8 and an Opus producer on two comedia PlainTransports, fed by a sender
    that loops ``clip`` at its native rate."""
    peer_id = f"p{index}"
    ssrc = {"audio": 1000 + 2 * index, "video": 1001 + 2 * index}
    codecs: dict[str, dict[str, Any]] = {
        "audio": {
            "mimeType": "audio/opus",
            "payloadType": AUDIO_PT,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"sprop-stereo": 1},
        },
        "video": {"mimeType": "video/VP8", "payloadType": VIDEO_PT, "clockRate": 90000},
    }
    transports, sources, outputs = [], [], []
    for kind in ("video", "audio"):
        transport = await router.create_plain_transport(
            listen_info={"protocol": "udp", "ip": IP}, rtcp_mux=False, comedia=True
        )
        producer = await transport.produce(kind, {"codecs": [codecs[kind]], "encodings": [{"ssrc": ssrc[kind]}]})
        transports.append(transport)
        sources.append(Source(producer.id, kind, peer_id))
        outputs += rtp_output(kind, ssrc[kind], codecs[kind]["payloadType"], transport)
    sender = subprocess.Popen(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            str(clip),
            *outputs,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Participant(peer_id, clip, transports, sources, sender)


# --- the live recording -------------------------------------------------------


@dataclass
class ProgressSegment(Segment):
    """The project's Segment, with FFmpeg also writing ``-progress`` reports to a
    file: its own account of the output time, frames and speed."""

    progress_file: Path | None = None

    def command(self) -> list[str]:
        args = super().command()
        if self.progress_file is None:
            return args
        return [args[0], "-progress", str(self.progress_file), "-stats_period", str(PROGRESS_PERIOD), *args[1:]]


@dataclass
class LegacySegment(ProgressSegment):
    """The segment as it was before the stems (main until issue 17): it consumes the
    audio too and mixes it into each segment (AAC beside the H.264), so each layout
    change restarted the audio. Measured in the same run, as the peer of the new design."""

    @property
    def videos(self) -> list[Source]:
        return [s for s in self.sources if not s.paused]

    def command(self) -> list[str]:
        self._cards.clear()
        rtp: Any = ffmpeg.input(
            str(self.sdp_path),
            protocol_whitelist="file,udp,rtp",
            f="sdp",
            localaddr=IP,
            analyzeduration=5_000_000,
            probesize=5_000_000,
            reorder_queue_size=256,
            fflags="+genpts",
        )
        index = {item.source.producer_id: n for n, item in enumerate(self.inputs)}
        shown = [
            rtp[str(index[s.producer_id])] if s is not None else self._card(peer_id)
            for peer_id, s in shown_tiles(self.sources, self.names)
        ]
        audios = [rtp[str(n)] for n, item in enumerate(self.inputs) if item.source.kind == "audio"]
        o = self.options
        video, audio = composite(shown, audios, width=o.width, height=o.height, fps=o.fps)
        out = ffmpeg.output(
            video,
            audio,
            str(self.path),
            f="mpegts",
            muxdelay=0,
            muxpreload=0,
            flush_packets=1,
            vcodec="libx264",
            preset=o.preset,
            tune="zerolatency",
            pix_fmt="yuv420p",
            r=o.fps,
            g=o.fps * 2,
            bf=0,
            **{"b:v": o.video_bitrate, "maxrate": o.video_bitrate, "bufsize": o.video_bitrate},
            acodec="aac",
            ar=48000,
            ac=2,
            **{"b:a": o.audio_bitrate},
        )
        args: list[str] = (
            out.global_args("-hide_banner", "-loglevel", "warning", "-nostats")
            .overwrite_output()
            .compile(cmd=o.ffmpeg_bin)
        )
        if self.progress_file is None:
            return args
        return [args[0], "-progress", str(self.progress_file), "-stats_period", str(PROGRESS_PERIOD), *args[1:]]


@dataclass
class Progress:
    """FFmpeg's last progress report and when it was written (the file's mtime)."""

    at: float
    out_time: float
    frame: int
    speed: str

    @classmethod
    def read(cls, path: Path) -> Progress | None:
        try:
            for _ in range(5):  # a report written between stat and read: read again
                at = path.stat().st_mtime
                text = path.read_text()
                if path.stat().st_mtime == at:
                    break
        except FileNotFoundError:
            return None
        blocks = text.split("progress=")
        if len(blocks) < 2:
            return None
        values = dict(line.split("=", 1) for line in blocks[-2].splitlines() if "=" in line)
        try:
            out_time = int(values.get("out_time_us", "N/A")) / 1e6
        except ValueError:
            return None
        return cls(at, out_time, int(values.get("frame", 0)), values.get("speed", "?").strip())


class WarningLog:
    """Collects the lines FFmpeg writes to stderr (it runs with ``-loglevel warning``:
    lost RTP packets, buffer overruns...), as the Segment logs them."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        logger.add(
            self._sink,
            level="DEBUG",
            format="{message}",
            filter=lambda r: "segment" in r["extra"] and r["message"].startswith("ffmpeg: "),
        )

    def _sink(self, message: Any) -> None:
        self.lines.append((time.monotonic(), message.record["message"][len("ffmpeg: ") :]))

    def between(self, start: float, end: float) -> list[str]:
        return [line for at, line in self.lines if start <= at <= end]


async def wait_output(progress_file: Path, timeout: float = 30.0) -> Progress:
    """Until FFmpeg reports output media time (it probes the RTP streams first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = Progress.read(progress_file)
        if report is not None and report.out_time > 0:
            return report
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the recorder wrote no output in {timeout:.0f} s")


@dataclass
class LiveResult:
    recorder_cpu: float  # CPU seconds per wall second (the video segment's FFmpeg)
    stems_cpu: float  # the audio stems' FFmpegs together (one per audio producer)
    worker_cpu: float
    senders_cpu: float
    busy: float  # the machine's busy cores
    realtime: float  # output media seconds per wall second (FFmpeg's reports)
    out_fps: float
    speed: str  # FFmpeg's own cumulative speed at the end of the window
    warnings: list[str]
    segment_duration: float  # the whole file, from SegmentResult
    segment_wall: float
    #: What the offline peer reuses: the live command, its RTP inputs in SDP order, its output.
    command: list[str] = field(default_factory=list)
    inputs: list[Source] = field(default_factory=list)
    path: Path | None = None
    #: What the mix at stop takes: the stems with their offsets from the segment's t0.
    stems: list[StemInput] = field(default_factory=list)


async def record_live(
    router: Any,
    worker_pid: int,
    participants: list[Participant],
    directory: Path,
    seconds: float,
    warmup: float,
    warnings: WarningLog,
    *,
    legacy: bool = False,
) -> LiveResult:
    """Record ``participants`` with a Segment and the stems (``legacy``: the old
    Segment mixing the audio, no stems); measure over the window."""
    name = f"{'legacy' if legacy else 'live'}{len(participants)}"
    progress_file = directory / f"{name}.progress"
    segment = (LegacySegment if legacy else ProgressSegment)(
        router,
        [s for p in participants for s in p.sources],
        directory / f"{name}.ts",
        {p.peer_id: f"Participant {p.peer_id[1:]}" for p in participants},
        SegmentOptions(width=WIDTH, height=HEIGHT, fps=FPS),
        progress_file=progress_file,
    )
    stems = [
        Stem(router, directory / f"stem{len(participants)}-{n}.ogg", s)
        for n, s in enumerate(s for p in participants for s in p.sources if s.kind == "audio")
        if not legacy
    ]
    await segment.start()
    await asyncio.gather(*(stem.start() for stem in stems))
    try:
        await wait_output(progress_file)
        await asyncio.sleep(warmup)
        senders = [p.sender.pid for p in participants]
        assert segment.pid is not None  # started above
        stem_pids = [stem.pid for stem in stems if stem.pid is not None]
        first, first_report = Snapshot.take(segment.pid, worker_pid, senders), Progress.read(progress_file)
        first_stems = sum(cpu_seconds(pid) for pid in stem_pids)
        await asyncio.sleep(seconds)
        last, last_report = Snapshot.take(segment.pid, worker_pid, senders), Progress.read(progress_file)
        last_stems = sum(cpu_seconds(pid) for pid in stem_pids)
    finally:
        result = await segment.stop()
        await asyncio.gather(*(stem.stop() for stem in stems))
    assert first_report is not None and last_report is not None
    wall, report_wall = last.wall - first.wall, last_report.at - first_report.at
    return LiveResult(
        recorder_cpu=(last.recorder - first.recorder) / wall,
        stems_cpu=(last_stems - first_stems) / wall,
        worker_cpu=(last.worker - first.worker) / wall,
        senders_cpu=(last.senders - first.senders) / wall,
        busy=(last.busy - first.busy) / wall,
        realtime=(last_report.out_time - first_report.out_time) / report_wall,
        out_fps=(last_report.frame - first_report.frame) / report_wall,
        speed=last_report.speed,
        warnings=warnings.between(first.wall, last.wall),
        segment_duration=result.duration,
        segment_wall=result.ended_at - result.t0,
        command=segment.command(),
        inputs=[item.source for item in segment.inputs],
        path=segment.path,
        stems=[StemInput(stem.path, stem.t0 - result.t0) for stem in stems if stem.t0 is not None],
    )


# --- the offline peer ---------------------------------------------------------


def offline_command(live: LiveResult, clips: dict[str, Path], seconds: float, out: Path) -> list[str]:
    """The live FFmpeg command with its one SDP input replaced by the clips (looped
    to ``seconds``): same filter graph, same encoder, same muxer options."""
    args = live.command
    if args.count("-i") != 1 or "-filter_complex" not in args:
        raise RuntimeError("expected one SDP input and a -filter_complex (name cards need another input)")
    graph_at = args.index("-filter_complex") + 1
    peers = list(clips)
    inputs = [a for peer in peers for a in ("-stream_loop", "-1", "-t", f"{seconds}", "-i", str(clips[peer]))]

    def stream(match: re.Match) -> str:
        source = live.inputs[int(match.group(1))]
        return f"[{peers.index(source.peer_id)}:{source.kind[0]}:0]"

    graph = re.sub(r"\[0:(\d+)\]", stream, args[graph_at])
    rest = args[graph_at + 1 :]
    path_at = rest.index(str(live.path))
    rest = [*rest[:path_at], str(out), *rest[path_at + 1 :]]
    return [args[0], "-nostdin", *inputs, "-filter_complex", graph, *rest]


@dataclass
class OfflineResult:
    media: float  # seconds of output
    wall: float
    cpu: float  # CPU seconds, every thread

    @property
    def realtime(self) -> float:
        return self.media / self.wall

    @property
    def cpu_per_media_second(self) -> float:
        return self.cpu / self.media


def run_offline(command: list[str], out: Path) -> OfflineResult:
    """Run the command to the end; its CPU from ``wait4``'s rusage (exactly this child)."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"offline FFmpeg failed ({process.returncode}): {stderr.decode(errors='replace')[-800:]}")
    return OfflineResult(probe(out)[0], wall, usage.ru_utime + usage.ru_stime)


# --- one participant count ----------------------------------------------------


@dataclass
class Row:
    participants: int
    live: LiveResult
    offline: OfflineResult
    #: The old design (audio mixed in the segment), live, in the same run.
    legacy: LiveResult
    #: CPU seconds of the mix at stop (video copied, stems mixed to AAC) per recorded second.
    mix_cpu: float

    @property
    def ratio(self) -> float:
        return self.live.recorder_cpu / self.offline.cpu_per_media_second


async def measure(
    router: Any,
    worker_pid: int,
    clips: list[Path],
    n: int,
    args: argparse.Namespace,
    directory: Path,
    warnings: WarningLog,
) -> Row:
    """n senders and producers, a live recording of them, then the offline peer."""
    participants: list[Participant] = []
    try:
        for index in range(n):
            participants.append(await add_participant(router, index, clips[index]))
        await asyncio.sleep(1.0)  # the senders' first packets latch the comedia transports
        live = await record_live(router, worker_pid, participants, directory, args.seconds, args.warmup, warnings)
        legacy = await record_live(
            router, worker_pid, participants, directory, args.seconds, args.warmup, warnings, legacy=True
        )
    finally:
        for participant in participants:
            participant.close()
    out = directory / f"offline{n}.ts"
    command = offline_command(live, {p.peer_id: p.clip for p in participants}, args.seconds, out)
    runs = [await asyncio.to_thread(run_offline, command, out) for _ in range(OFFLINE_RUNS)]
    runs.sort(key=lambda run: run.cpu_per_media_second)
    return Row(n, live, runs[(len(runs) - 1) // 2], legacy, mix_cpu(live, directory / f"mixed{n}.mp4"))


def mix_cpu(live: LiveResult, out: Path) -> float:
    """CPU seconds per recorded second of the mix at stop (``recording.mix.compose``)."""
    assert live.path is not None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    compose([Part(live.path, None)], live.stems, live.segment_duration, out)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu / live.segment_duration


# --- stem alignment -------------------------------------------------------------


def _pcm8k(path: Path) -> list[int]:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-ac", "1", "-ar", "8000", "-f", "s16le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    samples = array.array("h")
    samples.frombytes(raw[: len(raw) // 2 * 2])
    return list(samples)


def _lag(reference: list[int], probe_: list[int], expected: int, search: int) -> int:
    """The lag (samples) of ``probe_`` in ``reference`` nearest ``expected`` (best correlation)."""
    best, best_lag = float("-inf"), expected
    for lag in range(expected - search, expected + search + 1):
        if lag < 0 or lag + len(probe_) > len(reference):
            continue
        score = sum(a * b for a, b in zip(reference[lag : lag + len(probe_)], probe_, strict=True))
        if score > best:
            best, best_lag = score, lag
    return best_lag


async def stem_alignment(router: Any, directory: Path, trials: int = 3) -> list[float]:
    """How far a stem's ``t0`` (its first packet, from the worker's trace) is from where
    its audio really is: two stems of one producer sending noise, the second started
    later; the second's audio is found in the first's by cross-correlation (8 kHz,
    +-50 ms) and compared with ``t0`` difference. Errors in ms."""
    transport = await router.create_plain_transport(
        listen_info={"protocol": "udp", "ip": IP}, rtcp_mux=False, comedia=True
    )
    codec = {"mimeType": "audio/opus", "payloadType": AUDIO_PT, "clockRate": 48000, "channels": 2}
    producer = await transport.produce("audio", {"codecs": [codec], "encodings": [{"ssrc": 4242}]})
    port, rtcp = transport.tuple["localPort"], transport.rtcp_tuple["localPort"]
    sender = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
         "anoisesrc=c=pink:r=48000:a=0.3", "-ac", "2", "-c:a", "libopus", "-b:a", "64k", "-f", "rtp",
         "-ssrc", "4242", "-payload_type", str(AUDIO_PT), f"rtp://{IP}:{port}?rtcpport={rtcp}&pkt_size=1200"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    errors = []
    try:
        await asyncio.sleep(1.0)
        source = Source(producer.id, "audio", "noise")
        for trial in range(trials):
            first = Stem(router, directory / f"align{trial}-a.ogg", source)
            await first.start()
            await asyncio.sleep(1.7 + 0.3 * trial)
            second = Stem(router, directory / f"align{trial}-b.ogg", source)
            await second.start()
            await asyncio.sleep(2.0)
            await asyncio.gather(first.stop(), second.stop())
            assert first.t0 is not None and second.t0 is not None
            expected = round((second.t0 - first.t0) * 8000)
            reference, later = _pcm8k(first.path), _pcm8k(second.path)
            found = _lag(reference, later[800:4800], expected + 800, 400) - 800
            errors.append((found - expected) / 8.0)
    finally:
        sender.kill()
        sender.wait(timeout=10)
        transport.close()
    return errors


# --- report -------------------------------------------------------------------


def machine() -> str:
    model = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    return (
        f"{model}, {CORES} cores, Linux {platform.release()}, Python {platform.python_version()}, "
        f"{' '.join(ffmpeg.split()[:3])}"
    )


def command_line(args: argparse.Namespace) -> str:
    given = os.environ.get("MEDIASOUP_WORKER_BIN")
    env = f"MEDIASOUP_WORKER_BIN={given} " if given else ""
    return (
        f"{env}.venv/bin/python bench/composite_recording.py --participants {','.join(map(str, args.participants))} "
        f"--seconds {args.seconds:g} --warmup {args.warmup:g}"
    )


def target(rows: list[Row]) -> str:
    row = next((r for r in rows if r.participants == 4), None)
    if row is None:
        return "Target (4 participants): not measured in this run."
    total = row.live.recorder_cpu + row.live.stems_cpu
    cpu_ok = total < 1.0
    rt_ok = row.live.realtime >= 0.98 and row.offline.realtime >= 1.0
    return (
        f"Target (4 participants: under one core, at least 1.0x realtime): video recorder + stems "
        f"{total:.2f} core ({'met' if cpu_ok else 'missed'}); live "
        f"{row.live.realtime:.3f}x, offline headroom {row.offline.realtime:.1f}x ({'met' if rt_ok else 'missed'})."
    )


def render(
    args: argparse.Namespace, started: datetime, load_start: str, rows: list[Row], alignment: list[float]
) -> str:
    load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"### Run of {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command_line(args)}`",
        "",
        f"Machine: {machine()}; load average {load_start} at start, {load_end} at the end.",
        f"Recording: {WIDTH}x{HEIGHT} {FPS} fps, {SegmentOptions().preset} x264 "
        f"{SegmentOptions().video_bitrate} video-only MPEG-TS segments + one Opus/Ogg stem FFmpeg per audio "
        f"producer (the composite's AAC is mixed from the stems at stop: 'mix at stop' below); "
        f"inputs VP8 640x360 {FPS} fps 600k + Opus 48k per participant; window {args.seconds:g} s after "
        f"{args.warmup:g} s of output.",
        "",
        "| participants | video recorder CPU (cores) | stems CPU (cores) | video + stems (cores) | share of machine "
        "| live realtime | output fps | FFmpeg speed "
        "| offline realtime (headroom) | offline CPU per media s | ratio live / offline CPU |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        total = r.live.recorder_cpu + r.live.stems_cpu
        lines.append(
            f"| {r.participants} | {r.live.recorder_cpu:.3f} | {r.live.stems_cpu:.3f} | {total:.3f} | "
            f"{total / CORES:.1%} | "
            f"{r.live.realtime:.3f} | {r.live.out_fps:.2f} | {r.live.speed} | {r.offline.realtime:.2f}x | "
            f"{r.offline.cpu_per_media_second:.3f} | {r.ratio:.2f} |"
        )
    lines += [
        "",
        "Beside it, in the same run, the design it replaces (one FFmpeg per layout mixing the audio, "
        "AAC in each segment), and what the new design adds at stop (the mix, per recorded second):",
        "",
        "| participants | before: recorder CPU (cores) | before: live realtime | now: video + stems (cores) "
        "| now: live realtime | now: mix at stop (CPU s per recorded s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.participants} | {r.legacy.recorder_cpu:.3f} | {r.legacy.realtime:.3f} | "
            f"{r.live.recorder_cpu + r.live.stems_cpu:.3f} | {r.live.realtime:.3f} | {r.mix_cpu:.3f} |"
        )
    lines += [
        "",
        "| participants | worker CPU (cores) | senders CPU (cores) | machine busy (cores) | FFmpeg warnings "
        "| whole segment: media s / wall s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.participants} | {r.live.worker_cpu:.3f} | {r.live.senders_cpu:.3f} | {r.live.busy:.2f} | "
            f"{len(r.live.warnings)} | {r.live.segment_duration:.2f} / {r.live.segment_wall:.2f} |"
        )
    lines += [
        "",
        "Stem alignment (two stems of one producer sending noise, the second started later; its "
        "audio found in the first's by cross-correlation, against the difference of their t0): "
        + ", ".join(f"{e:+.1f} ms" for e in alignment)
        + ".",
        "",
        target(rows),
    ]
    for r in rows:
        if r.live.warnings:
            kinds = Counter(re.sub(r"0x[0-9a-f]+|\d+", "N", line) for line in r.live.warnings)
            listed = "; ".join(f"{count} x `{kind}`" for kind, count in kinds.most_common(3))
            lines += ["", f"FFmpeg warnings in the window, {r.participants} participants: {listed}."]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--participants",
        default="2,4,9",
        type=lambda v: [int(x) for x in v.split(",") if x.strip()],
        help="participant counts, comma-separated (default 2,4,9; at most 9 are shown)",
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per count (default 15)")
    parser.add_argument(
        "--warmup", type=float, default=4.0, help="seconds of recorder output before the window (default 4)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the report as Markdown to this file")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="work in DIR and keep the clips and recordings there (default: a temporary directory)",
    )
    args = parser.parse_args()
    if not args.participants or min(args.participants) < 1:
        parser.error("--participants: one or more counts >= 1")
    return args


async def run(args: argparse.Namespace, directory: Path, warnings: WarningLog) -> tuple[list[Row], list[float]]:
    clips = [make_clip(directory / f"clip{i}.webm", i) for i in range(max(args.participants))]
    worker = await Worker.create(WorkerSettings(log_level="warn"))
    try:
        router = await worker.create_router(MEDIA_CODECS)
        rows = []
        for n in args.participants:
            print(f"bench: {n} participants ...", file=sys.stderr)
            rows.append(await measure(router, worker.pid, clips, n, args, directory, warnings))
        print("bench: stem alignment ...", file=sys.stderr)
        return rows, await stem_alignment(router, directory)
    finally:
        worker.close()
        await worker.wait_closed()


def main() -> None:
    args = parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("bench: ffmpeg not found (`make setup` installs it)")
    worker_binary()  # fails early, saying how to build it
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    warnings = WarningLog()
    started = datetime.now(UTC)
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        rows, alignment = asyncio.run(run(args, args.keep, warnings))
    else:
        with tempfile.TemporaryDirectory(prefix="parley-bench-recording-") as tmp:
            rows, alignment = asyncio.run(run(args, Path(tmp), warnings))
    report = render(args, started, load_start, rows, alignment)
    print(report)
    if args.markdown:
        args.markdown.write_text(report + "\n")


if __name__ == "__main__":
    main()

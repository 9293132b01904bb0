"""A segment: one FFmpeg process recording the picture of a fixed set of producers
in one layout (video only: the audio is recorded by the stems, ``recording.stem``,
which never restart, and mixed in at stop, ``recording.mix``).

For each video producer: a PlainTransport on 127.0.0.1 (comedia off, RTCP not muxed)
connected to the ports FFmpeg listens on, and a Consumer created paused with the
router's RTP capabilities. One SDP describes every stream (``recording.sdp``), so
FFmpeg binds every port when it opens its input; then the consumers are resumed
together (:attr:`Segment.t0`, the wall-clock time of the segment's first media)
and key frames are requested.

The output is MPEG-TS (H.264), written packet by packet with nothing to
finish at the end: a segment whose FFmpeg is killed, or interrupted twice (which
FFmpeg takes as "exit now, skip the trailer"), keeps everything it encoded, and
segments join into the final MP4 without re-encoding (``recording.concat``).

Stop: ``q`` on FFmpeg's stdin. FFmpeg reads it between packets only, so when
every input has gone silent (the room emptied) it would wait for its 10 s RTP
timeout: after :data:`STOP_GRACE` it is interrupted (SIGINT twice) instead. Then
the file is checked with ffprobe.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ffmpeg
from loguru import logger

from recording.layout import MAX_TILES, NameCard, composite
from recording.process import FfmpegProcess, spawn_ffmpeg
from recording.sdp import Media, session_sdp
from workers.scalability_modes import parse_scalability_mode

if TYPE_CHECKING:  # the media layer's classes, for types only: recording/ drives what it is handed
    from loguru import Logger

    from workers.consumer import Consumer
    from workers.plain_transport import PlainTransport
    from workers.router import Router

__all__ = ["NothingRecorded", "RecordingError", "Segment", "SegmentOptions", "SegmentResult", "Source", "probe"]

IP = "127.0.0.1"
#: How long FFmpeg may take to bind its ports.
BIND_TIMEOUT = 10.0
#: How long FFmpeg may take to act on ``q`` (it does at its next packet).
STOP_GRACE = 2.0
#: A segment's RTP input ends after this long without any packet (``listen_timeout``).
#: Stop relies on it: the inputs are closed and FFmpeg ends its input the normal way,
#: which drains what its filters hold (``q`` would drop the frames a stalled input
#: held back in ``xstack``: the old segment of a leave lost its last half second).
INPUT_TIMEOUT = 1.0
#: A segment whose file has not grown for this long is stalled on an input.
STALLED_AFTER = 0.5
#: How long FFmpeg may take to exit once interrupted.
STOP_TIMEOUT = 10.0
#: Longest name written on a name card.
NAME_LIMIT = 32


class RecordingError(Exception):
    pass


class NothingRecorded(RecordingError):
    """No segment holds any media (stopped before the first packets were written):
    there is nothing to keep."""


@dataclass(frozen=True)
class Source:
    """A producer to record (available on the recorder's router)."""

    producer_id: str
    kind: str  # "audio" | "video"
    peer_id: str
    #: Paused now (muted): a stem goes on recording silence; a segment leaves it out.
    paused: bool = False
    #: appData says it is a screen share (for the timeline).
    share: bool = False


@dataclass(frozen=True)
class SegmentOptions:
    width: int = 640
    height: int = 360
    fps: int = 15
    video_bitrate: str = "1000k"
    audio_bitrate: str = "128k"
    preset: str = "veryfast"
    ffmpeg_bin: str = "ffmpeg"


@dataclass
class SegmentResult:
    path: Path
    duration: float
    streams: list[str]  # codec names, e.g. ["h264", "aac"]
    t0: float
    ended_at: float
    returncode: int | None


@dataclass
class _Input:
    source: Source
    transport: PlainTransport
    consumer: Consumer
    port: int


def _port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("0.0.0.0", port))  # taken on any address counts as taken (conservative)
        except OSError as error:
            return error.errno == errno.EADDRINUSE
        return False


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    return inodes


def udp_sockets(pid: int) -> set[tuple[str, int]]:
    """(IPv4 address, port) of every UDP socket process ``pid`` has bound (its
    socket inodes against /proc/net/udp)."""
    try:
        rows = [row.split() for row in Path("/proc/net/udp").read_text().splitlines()[1:]]
    except OSError:
        return set()
    inodes = _socket_inodes(pid)
    bound = set()
    for row in rows:
        if row[9] in inodes:
            address, port = row[1].split(":")
            bound.add((socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16)))
    return bound


async def interrupt(pid: int) -> None:
    """SIGINT twice: FFmpeg exits at once, even blocked on a silent input (once
    only sets a flag it reads between packets). MPEG-TS needs no trailer, so
    nothing written is lost."""
    for _ in range(2):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        await asyncio.sleep(0.05)


def _free_port_pair(taken: set[int]) -> int:
    """An even UDP port P with P and P+1 free (RTP, RTCP)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("0.0.0.0", 0))  # a port free on every address
            port = s.getsockname()[1] & ~1
        if port in taken or port + 1 in taken or port < 1024:
            continue
        if not _port_bound(port) and not _port_bound(port + 1):
            taken.update((port, port + 1))
            return port
    raise RecordingError("no free UDP port pair for FFmpeg")


#: Bandwidth estimation: FFmpeg gives no feedback, and with these mediasoup would
#: send probation packets (SSRC 1234) into FFmpeg's ports, which it reports and
#: holds real packets back for.
_BWE_EXTENSIONS = (
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
)
_BWE_FEEDBACK = ("goog-remb", "transport-cc")


def recording_capabilities(caps: dict[str, Any]) -> dict[str, Any]:
    """The router's RTP capabilities without bandwidth estimation, for FFmpeg."""
    return {
        **caps,
        "codecs": [
            {**c, "rtcpFeedback": [f for f in c.get("rtcpFeedback", []) if f.get("type") not in _BWE_FEEDBACK]}
            for c in caps.get("codecs", [])
        ],
        "headerExtensions": [e for e in caps.get("headerExtensions", []) if e.get("uri") not in _BWE_EXTENSIONS],
    }


async def best_layers(consumer: Consumer) -> None:
    """A simulcast or SVC video is recorded from its best layer (mediasoup's default
    too, said explicitly: the recorder's transport has no bandwidth estimation)."""
    if consumer.type not in ("simulcast", "svc"):
        return
    encoding = (consumer.rtp_parameters.get("encodings") or [{}])[0]
    mode = parse_scalability_mode(encoding.get("scalabilityMode"))
    await consumer.set_preferred_layers(mode.spatial_layers - 1, mode.temporal_layers - 1)


def shown_tiles(sources: list[Source], names: dict[str, str]) -> list[tuple[str, Source | None]]:
    """What the grid shows, in order: every video (cameras and screen shares, by
    participant in ``names`` order), then a name card for each participant
    without video; at most :data:`MAX_TILES`."""
    order = {peer_id: n for n, peer_id in enumerate(names)}
    videos = sorted((s for s in sources if s.kind == "video"), key=lambda s: order.get(s.peer_id, len(order)))
    with_video = {s.peer_id for s in videos}
    cards = [p for p in names if p not in with_video]
    tiles: list[tuple[str, Source | None]] = [(s.peer_id, s) for s in videos]
    tiles += [(p, None) for p in cards]
    return tiles[:MAX_TILES]


class FfmpegRun:
    """What a segment and a stem share: one FFmpeg process fed by loopback RTP from an SDP
    file, its exit, the tail of its stderr. Subclasses (dataclasses) declare the fields."""

    path: Path
    process: FfmpegProcess | None
    exited: asyncio.Future[int] | None
    log: Logger
    _stderr: list[str]

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        """Started and FFmpeg has not exited."""
        return self.exited is not None and not self.exited.done()

    @property
    def sdp_path(self) -> Path:
        return self.path.with_suffix(".sdp")

    async def _wait_listening(self, ports: set[int]) -> None:
        """Until FFmpeg itself holds every one of ``ports`` (another process may
        have taken one since it was picked: then FFmpeg fails to bind and exits)."""
        deadline = time.monotonic() + BIND_TIMEOUT
        assert self.process is not None
        # /proc/net/udp lists every UDP socket of the machine: read in a thread.
        while missing := ports - {port for _address, port in await asyncio.to_thread(udp_sockets, self.process.pid)}:
            if self.process.returncode is not None:
                raise RecordingError(f"FFmpeg exited ({self.process.returncode}): {self.stderr_tail()}")
            if time.monotonic() > deadline:
                raise RecordingError(
                    f"FFmpeg did not listen on ports {sorted(missing)} in {BIND_TIMEOUT:.0f} s: {self.stderr_tail()}"
                )
            await asyncio.sleep(0.01)

    async def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        lines = self._stderr
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            del lines[:-50]
            self.log.debug("ffmpeg: {}", line)

    def stderr_tail(self) -> str:
        return " | ".join(self._stderr[-5:])

    async def _exits_within(self, seconds: float) -> bool:
        assert self.exited is not None
        try:
            async with asyncio.timeout(seconds):
                await asyncio.shield(self.exited)
        except TimeoutError:
            return False
        return True


@dataclass
class Segment(FfmpegRun):
    router: Router
    sources: list[Source]
    path: Path
    #: peerId -> display name of everyone in the recording, in the order they are shown.
    names: dict[str, str] = field(default_factory=dict)
    options: SegmentOptions = field(default_factory=SegmentOptions)
    inputs: list[_Input] = field(default_factory=list, init=False)
    process: FfmpegProcess | None = field(default=None, init=False)
    #: Wall-clock time (epoch seconds) of the segment's first media: its t=0.
    t0: float | None = field(default=None, init=False)
    #: Resolves with FFmpeg's exit code when it exits, asked to or not.
    exited: asyncio.Future[int] | None = field(default=None, init=False, repr=False)
    log: Logger = field(default=logger, init=False, repr=False)
    stopping: bool = field(default=False, init=False)
    _cards: list[Path] = field(default_factory=list, init=False, repr=False)
    _stderr: list[str] = field(default_factory=list, init=False, repr=False)
    _stderr_task: asyncio.Future | None = field(default=None, init=False, repr=False)
    _keyframes: asyncio.Future | None = field(default=None, init=False, repr=False)

    @property
    def videos(self) -> list[Source]:
        """The sources this segment consumes: its videos (audio is the stems')."""
        return [s for s in self.sources if s.kind == "video" and not s.paused]

    def _card(self, peer_id: str) -> NameCard:
        name = (self.names.get(peer_id) or peer_id)[:NAME_LIMIT]
        text_file = self.path.with_name(f"{self.path.stem}.name{len(self._cards)}.txt")
        text_file.write_text(name, encoding="utf-8")
        self._cards.append(text_file)
        return NameCard(text_file, len(name))

    def command(self) -> list[str]:
        """The FFmpeg command line (ffmpeg-python) for the current inputs (writes
        the name cards' text files)."""
        self._cards.clear()
        # ffmpeg-python is untyped; ``rtp`` is None only without inputs, when nothing indexes it.
        rtp: Any = (
            ffmpeg.input(
                str(self.sdp_path),
                protocol_whitelist="file,udp,rtp",
                f="sdp",
                localaddr=IP,
                listen_timeout=f"{INPUT_TIMEOUT:g}",
                # One decoding thread per input: at the end of the input each decoder
                # drains in one round (with frame threads FFmpeg waits one more
                # INPUT_TIMEOUT per frame a decoder still holds).
                threads=1,
                analyzeduration=5_000_000,
                probesize=5_000_000,
                # Probing ends once every input's size is known (its first key frame):
                # FFmpeg would also wait for 20 frames of each video to guess its rate
                # (the graph's fps filter sets it), over a second at 15 fps and up to
                # ``analyzeduration`` for a camera sending a few frames a second; the
                # segment's output lagged that far behind, and the ``q`` at the stop
                # dropped the lag (6 s recorded, 1.9 s of video).
                fpsprobesize=0,
                reorder_queue_size=256,
                fflags="+genpts",
                # A picture whose size changes (a simulcast consumer switching layers,
                # a camera adapting its resolution) goes on through the same graph (each
                # tile scales it): rebuilding the graph re-reads the name cards' files and
                # fails on an input not decoded yet (size 0x0), which ended the segment.
                reinit_filter=0,
            )
            if self.inputs
            else None
        )
        index = {item.source.producer_id: n for n, item in enumerate(self.inputs)}
        shown = [
            rtp[str(index[s.producer_id])] if s is not None else self._card(peer_id)
            for peer_id, s in shown_tiles(self.sources, self.names)
        ]
        o = self.options
        video, _silence = composite(shown, [], width=o.width, height=o.height, fps=o.fps)
        out = ffmpeg.output(
            video,
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
        )
        out = out.global_args("-hide_banner", "-loglevel", "warning", "-nostats").overwrite_output()
        return out.compile(cmd=o.ffmpeg_bin)

    async def start(self) -> None:
        """Create the transports and paused consumers, start FFmpeg, resume every
        consumer once FFmpeg listens on its ports (then ask for key frames)."""
        self.log = logger.bind(segment=self.path.name)
        if shutil.which(self.options.ffmpeg_bin) is None:
            raise RecordingError(f"{self.options.ffmpeg_bin} not found")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._create_inputs()
            args = self.command()
            self.log.debug("starting FFmpeg: {}", " ".join(args))
            self.process = await spawn_ffmpeg(args)
            self._stderr_task = asyncio.ensure_future(self._drain_stderr())
            self.exited = asyncio.ensure_future(self.process.wait())
            await self._wait_listening({p for item in self.inputs for p in (item.port, item.port + 1)})
            self.t0 = time.time()  # with no RTP input, generated inputs start with FFmpeg
            await asyncio.gather(*(item.consumer.resume() for item in self.inputs))
            await self._request_key_frames()
            self._keyframes = asyncio.ensure_future(self._more_key_frames())
        except BaseException:
            await self.abort()
            raise

    async def _create_inputs(self) -> None:
        caps = recording_capabilities(self.router.rtp_capabilities)
        taken: set[int] = set()
        for source in self.videos:
            port = _free_port_pair(taken)
            transport = await self.router.create_plain_transport(
                listen_info={"protocol": "udp", "ip": IP},
                rtcp_mux=False,
                comedia=False,
                app_data={"recording": str(self.path)},
            )
            try:
                await transport.connect(ip=IP, port=port, rtcp_port=port + 1)
                consumer = await transport.consume(source.producer_id, caps, paused=True)
                await best_layers(consumer)
            except BaseException:
                transport.close()
                raise
            self.inputs.append(_Input(source, transport, consumer, port))
        if self.inputs:
            media = [Media(i.source.kind, i.consumer.rtp_parameters, i.port) for i in self.inputs]
            self.sdp_path.write_text(session_sdp(media, ip=IP))

    async def _request_key_frames(self) -> None:
        for item in self.inputs:
            if item.source.kind == "video" and not item.consumer.closed:
                await item.consumer.request_key_frame()

    async def _more_key_frames(self) -> None:
        """A few more key frames early on (the first may arrive before FFmpeg probes)."""
        with contextlib.suppress(Exception):
            for delay in (0.3, 0.7, 1.5):
                await asyncio.sleep(delay)
                await self._request_key_frames()

    def _close_inputs(self) -> None:
        for item in self.inputs:
            item.transport.close()
        self.sdp_path.unlink(missing_ok=True)
        for text_file in self._cards:
            text_file.unlink(missing_ok=True)

    async def abort(self) -> None:
        """Kill FFmpeg, close the transports, remove the file (a failed start)."""
        self.stopping = True
        if self._keyframes is not None:
            self._keyframes.cancel()
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._close_inputs()
        self.path.unlink(missing_ok=True)

    def _stalled(self) -> bool:
        """Nothing written for a while (packets are flushed one by one): the grid waits
        for an input that stopped sending; what it holds is drained, not dropped."""
        try:
            return time.time() - self.path.stat().st_mtime > STALLED_AFTER
        except OSError:
            return False

    async def stop(self, *, drain: bool = False) -> SegmentResult:
        """``q`` to FFmpeg, or with ``drain`` (a segment retired after a change, in the
        background) close the inputs first: FFmpeg's RTP input ends after
        :data:`INPUT_TIMEOUT` and it drains what its grid held back for a stalled
        input before it finishes the file (``q`` drops it). SIGINT if FFmpeg does not
        exit. Then ffprobe it. A segment whose FFmpeg died keeps what it wrote."""
        if self.process is None or self.t0 is None:
            raise RecordingError("not started")
        self.stopping = True
        ended_at = time.time()
        if self._keyframes is not None:
            self._keyframes.cancel()
        process = self.process
        drain = drain or await asyncio.to_thread(self._stalled)
        try:
            if drain and self.inputs and process.returncode is None:
                self._close_inputs()
                if await self._exits_within(INPUT_TIMEOUT + STOP_GRACE):
                    self.log.debug("FFmpeg ended its input and exited")
            if process.returncode is None and process.stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    process.stdin.write(b"q")
                    await process.stdin.drain()
                    process.stdin.close()
            if not await self._exits_within(STOP_GRACE):
                self.log.info("FFmpeg still running {:.0f} s after 'q' (inputs silent): interrupting it", STOP_GRACE)
                await interrupt(process.pid)
                if not await self._exits_within(STOP_TIMEOUT):
                    self.log.warning("FFmpeg did not exit in {:.0f} s once interrupted; killing it", STOP_TIMEOUT)
                    process.kill()
                    await process.wait()
            if self._stderr_task is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await self._stderr_task
        finally:
            self._close_inputs()
        if process.returncode != 0:
            self.log.warning("FFmpeg exited with {}: {}", process.returncode, self.stderr_tail())
        duration, streams = await asyncio.to_thread(probe, self.path)
        self.log.info("segment written: {} ({:.1f} s, {})", self.path.name, duration, ", ".join(streams))
        return SegmentResult(self.path, duration, streams, self.t0, ended_at, process.returncode)


def probe(path: Path) -> tuple[float, list[str]]:
    """(duration in seconds, codec names) of a recorded file; RecordingError if
    it is not a usable file. If the container gives no duration, the last
    packet's end is its duration."""
    try:
        info = ffmpeg.probe(str(path))
        streams = [s.get("codec_name", "?") for s in info.get("streams", [])]
        duration = float(info.get("format", {}).get("duration") or 0.0)
        if streams and duration <= 0:
            packets = ffmpeg.probe(str(path), show_entries="packet=pts_time,duration_time").get("packets", [])
            duration = max(
                (
                    float(p["pts_time"]) + float(p.get("duration_time") or 0)
                    for p in packets
                    if p.get("pts_time") not in (None, "N/A")
                ),
                default=0.0,
            )
    except ffmpeg.Error as error:
        raise RecordingError(f"ffprobe rejected {path.name}: {error.stderr.decode(errors='replace')[-300:]}") from error
    if not streams or duration <= 0:
        raise RecordingError(f"{path.name}: no streams or zero duration")
    return duration, streams

"""A composite recording of a router's producers: PlainTransports + paused
Consumers feeding one FFmpeg process that writes an MP4.

For each producer: a PlainTransport on 127.0.0.1 (comedia off, RTCP not muxed)
connected to the ports FFmpeg listens on (given in that input's SDP file), a
Consumer created paused with the router's RTP capabilities. FFmpeg opens its
inputs one after the other (and probes each), so each consumer is resumed once
FFmpeg has bound its port, then a key frame is requested. Stop: ``q`` on
FFmpeg's stdin, wait for it to finish the file, check it with ffprobe.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ffmpeg
from loguru import logger

from recording.layout import composite
from recording.sdp import consumer_sdp

__all__ = ["Recorder", "RecordingError", "RecordingResult", "Source"]

IP = "127.0.0.1"
#: How long FFmpeg may take to bind one input's port.
BIND_TIMEOUT = 10.0
#: How long FFmpeg may take to finish the file after ``q``.
STOP_TIMEOUT = 20.0


class RecordingError(Exception):
    pass


@dataclass
class Source:
    """A producer to record (available on the recorder's router)."""

    producer_id: str
    kind: str  # "audio" | "video"
    peer_id: str


@dataclass
class RecordingResult:
    path: Path
    duration: float
    streams: list[str]  # codec names, e.g. ["h264", "aac"]
    started_at: float
    ended_at: float


@dataclass
class _Input:
    source: Source
    transport: Any
    consumer: Any
    port: int
    sdp_path: Path


def _port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((IP, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
        return False


def _free_port_pair(taken: set[int]) -> int:
    """An even UDP port P with P and P+1 free (RTP, RTCP)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((IP, 0))
            port = s.getsockname()[1] & ~1
        if port in taken or port + 1 in taken or port < 1024:
            continue
        if not _port_bound(port) and not _port_bound(port + 1):
            taken.update((port, port + 1))
            return port
    raise RecordingError("no free UDP port pair for FFmpeg")


@dataclass
class Recorder:
    router: Any
    sources: list[Source]
    path: Path
    width: int = 640
    height: int = 360
    fps: int = 15
    ffmpeg_bin: str = "ffmpeg"
    inputs: list[_Input] = field(default_factory=list, init=False)
    process: asyncio.subprocess.Process | None = field(default=None, init=False)
    #: Wall-clock time (epoch seconds) FFmpeg was started.
    started_at: float | None = field(default=None, init=False)
    log: Any = field(default=None, init=False, repr=False)
    _stderr: list[str] = field(default_factory=list, init=False, repr=False)
    _stderr_task: asyncio.Future | None = field(default=None, init=False, repr=False)
    _keyframes: asyncio.Future | None = field(default=None, init=False, repr=False)

    def command(self) -> list[str]:
        """The FFmpeg command line (ffmpeg-python) for the current inputs."""
        streams = [ffmpeg.input(str(i.sdp_path), protocol_whitelist="file,udp,rtp", f="sdp",
                                analyzeduration=2_000_000, probesize=2_000_000,
                                reorder_queue_size=256, fflags="+genpts")
                   for i in self.inputs]
        videos = [s.video for s, i in zip(streams, self.inputs) if i.source.kind == "video"]
        audios = [s.audio for s, i in zip(streams, self.inputs) if i.source.kind == "audio"]
        video, audio = composite(videos, audios, width=self.width, height=self.height, fps=self.fps)
        outs = [s for s in (video, audio) if s is not None]
        options: dict[str, Any] = {"movflags": "+faststart", "f": "mp4"}
        if video is not None:
            options.update(vcodec="libx264", preset="veryfast", pix_fmt="yuv420p", r=self.fps, g=self.fps * 2)
        if audio is not None:
            options.update(acodec="aac", ar=48000, ac=2, **{"b:a": "128k"})
        out = ffmpeg.output(*outs, str(self.path), **options)
        out = out.global_args("-hide_banner", "-loglevel", "warning", "-nostats").overwrite_output()
        return out.compile(cmd=self.ffmpeg_bin)

    async def start(self) -> None:
        """Create the transports and paused consumers, start FFmpeg, resume each
        consumer once FFmpeg listens on its port (then ask for a key frame)."""
        self.log = logger.bind(recording=self.path.name)
        if not self.sources:
            raise RecordingError("nothing to record: no audio or video producer")
        if shutil.which(self.ffmpeg_bin) is None:
            raise RecordingError(f"{self.ffmpeg_bin} not found")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        caps = self.router.rtp_capabilities
        taken: set[int] = set()
        try:
            for n, source in enumerate(self.sources):
                port = _free_port_pair(taken)
                transport = await self.router.create_plain_transport(
                    listen_info={"protocol": "udp", "ip": IP}, rtcp_mux=False, comedia=False,
                    app_data={"recording": str(self.path)})
                try:
                    await transport.connect(ip=IP, port=port, rtcp_port=port + 1)
                    consumer = await transport.consume(source.producer_id, caps, paused=True)
                except BaseException:
                    transport.close()
                    raise
                sdp_path = self.path.with_name(f"{self.path.stem}.{n}-{source.kind}.sdp")
                sdp_path.write_text(consumer_sdp(source.kind, consumer.rtp_parameters,
                                                 ip=IP, port=port, rtcp_port=port + 1))
                self.inputs.append(_Input(source, transport, consumer, port, sdp_path))
            args = self.command()
            # FFmpeg opens (and probes) its inputs in command-line order, which
            # ffmpeg-python chooses (the graph's order): resume them in that order.
            order = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-i"]
            by_sdp = {str(i.sdp_path): i for i in self.inputs}
            if sorted(order) != sorted(by_sdp):
                raise RecordingError("FFmpeg command does not read every input")
            self.log.info("starting FFmpeg: {}", " ".join(args))
            self.process = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            self._stderr_task = asyncio.ensure_future(self._drain_stderr())
            self.started_at = time.time()
            for sdp in order:
                item = by_sdp[sdp]
                await self._wait_bound(item.port)
                await item.consumer.resume()
                if item.source.kind == "video":
                    await item.consumer.request_key_frame()
            self._keyframes = asyncio.ensure_future(self._request_key_frames())
        except BaseException:
            await self._abort()
            raise

    async def _wait_bound(self, port: int) -> None:
        deadline = time.monotonic() + BIND_TIMEOUT
        while not _port_bound(port):
            if self.process is not None and self.process.returncode is not None:
                raise RecordingError(f"FFmpeg exited ({self.process.returncode}): {self._stderr_tail()}")
            if time.monotonic() > deadline:
                raise RecordingError(f"FFmpeg did not listen on port {port} in {BIND_TIMEOUT:.0f} s: {self._stderr_tail()}")
            await asyncio.sleep(0.02)

    async def _request_key_frames(self) -> None:
        """A few more key frames early on (the first may arrive before FFmpeg probes)."""
        with contextlib.suppress(Exception):
            for delay in (0.5, 1.0, 2.0):
                await asyncio.sleep(delay)
                for item in self.inputs:
                    if item.source.kind == "video" and not item.consumer.closed:
                        await item.consumer.request_key_frame()

    async def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        lines = self._stderr
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            del lines[:-50]
            self.log.debug("ffmpeg: {}", line)

    def _stderr_tail(self) -> str:
        return " | ".join(self._stderr[-5:])

    def _close_inputs(self) -> None:
        for item in self.inputs:
            item.transport.close()
            item.sdp_path.unlink(missing_ok=True)

    async def _abort(self) -> None:
        if self._keyframes is not None:
            self._keyframes.cancel()
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._close_inputs()
        self.path.unlink(missing_ok=True)

    async def stop(self) -> RecordingResult:
        """``q`` to FFmpeg, wait for the file, close the transports, ffprobe it."""
        if self.process is None:
            raise RecordingError("not started")
        ended_at = time.time()
        if self._keyframes is not None:
            self._keyframes.cancel()
        process = self.process
        try:
            if process.returncode is None and process.stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    process.stdin.write(b"q")
                    await process.stdin.drain()
                    process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                self.log.warning("FFmpeg did not stop in {:.0f} s after 'q'; terminating it", STOP_TIMEOUT)
                process.terminate()
                await process.wait()
            if self._stderr_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._stderr_task, 5)
        finally:
            self._close_inputs()
        if process.returncode != 0:
            raise RecordingError(f"FFmpeg exited with {process.returncode}: {self._stderr_tail()}")
        duration, streams = await asyncio.to_thread(probe, self.path)
        assert self.started_at is not None
        self.log.info("recording written: {} ({:.1f} s, {})", self.path, duration, ", ".join(streams))
        return RecordingResult(self.path, duration, streams, self.started_at, ended_at)


def probe(path: Path) -> tuple[float, list[str]]:
    """(duration in seconds, codec names) of a finished recording; RecordingError if
    it is not a usable file."""
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as error:
        raise RecordingError(f"ffprobe rejected {path}: {error.stderr.decode(errors='replace')[-300:]}") from error
    streams = [s.get("codec_name", "?") for s in info.get("streams", [])]
    duration = float(info.get("format", {}).get("duration") or 0.0)
    if not streams or duration <= 0:
        raise RecordingError(f"{path}: no streams or zero duration")
    return duration, streams

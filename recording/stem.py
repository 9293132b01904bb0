"""A stem: one participant's audio producer recorded on its own, never restarted.

The composite's audio is not taken from the layout segments (which restart at
every change) but mixed at stop from these recorders (``recording.mix``), so a
join, a leave, a mute or a worker move never drops audio.

Each stem is a PlainTransport + Consumer on 127.0.0.1 feeding its own FFmpeg
(one ``m=`` line SDP): Opus decoded, placed by its RTP timestamps
(``aresample`` pads any hole of a packet or more with silence: a pause, a lost
packet, a sender that stopped without pausing), encoded again as Opus in Ogg
(pages of :data:`PAGE_US`, so an FFmpeg killed loses at most that). FFmpeg's
RTP input would end after 10 s without a packet (a muted microphone):
``listen_timeout`` keeps it waiting for the whole recording.

Where the stem starts in the recording: the wall-clock time of its first RTP
packet, taken from the consumer's ``rtp`` trace event (the worker's
CLOCK_MONOTONIC milliseconds, turned into wall-clock time here; the trace is
turned off after the first packet). RTP timestamps carry it from there on,
sample-accurately.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from recording.process import FfmpegProcess, spawn_ffmpeg
from recording.sdp import consumer_sdp
from recording.segment import (
    IP,
    STOP_GRACE,
    STOP_TIMEOUT,
    FfmpegRun,
    RecordingError,
    Source,
    _free_port_pair,
    interrupt,
    recording_capabilities,
)

if TYPE_CHECKING:
    from loguru import Logger

    from workers.consumer import Consumer
    from workers.plain_transport import PlainTransport
    from workers.router import Router

__all__ = ["PAGE_US", "Stem", "monotonic_to_wall"]

#: Ogg page length (µs): what a killed stem FFmpeg may lose at most.
PAGE_US = 100_000
#: Bitrate of a stem (mono speech).
STEM_BITRATE = "48k"
#: Keep FFmpeg's RTP input open this long without packets (a muted microphone).
LISTEN_FOREVER = "86400"


def monotonic_to_wall(monotonic_ms: float) -> float:
    """Wall-clock seconds of a CLOCK_MONOTONIC time in ms (the worker's clock)."""
    return time.time() - (time.monotonic() - monotonic_ms / 1000.0)


@dataclass
class Stem(FfmpegRun):
    router: Router
    source: Source
    path: Path
    ffmpeg_bin: str = "ffmpeg"
    transport: PlainTransport | None = field(default=None, init=False)
    consumer: Consumer | None = field(default=None, init=False)
    process: FfmpegProcess | None = field(default=None, init=False)
    exited: asyncio.Future[int] | None = field(default=None, init=False, repr=False)
    #: Wall-clock time of the first packet (the stem's t=0); None until one came.
    t0: float | None = field(default=None, init=False)
    #: When the consumer was resumed (FFmpeg listening).
    resumed_at: float | None = field(default=None, init=False)
    ended_at: float | None = field(default=None, init=False)
    stopping: bool = field(default=False, init=False)
    log: Logger = field(default=logger, init=False, repr=False)
    on_first_packet: Any = field(default=None, repr=False)
    _port: int = field(default=0, init=False)
    _stderr: list[str] = field(default_factory=list, init=False, repr=False)
    _stderr_task: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    @property
    def producer_id(self) -> str:
        return self.source.producer_id

    def command(self) -> list[str]:
        return [
            self.ffmpeg_bin,
            "-hide_banner",
            "-loglevel",
            "warning",
            "-nostats",
            "-y",
            "-protocol_whitelist",
            "file,udp,rtp",
            "-listen_timeout",
            LISTEN_FOREVER,
            "-localaddr",
            IP,
            "-reorder_queue_size",
            "64",
            "-f",
            "sdp",
            "-i",
            str(self.sdp_path),
            "-map",
            "0:a:0",
            # Every hole of a packet or more (a pause, a loss) becomes silence, in place.
            "-af",
            "aresample=async=1:min_hard_comp=0.015:first_pts=0",
            "-ac",
            "1",
            "-ar",
            "48000",
            "-c:a",
            "libopus",
            "-b:a",
            STEM_BITRATE,
            "-page_duration",
            str(PAGE_US),
            "-flush_packets",
            "1",
            "-f",
            "ogg",
            str(self.path),
        ]

    async def start(self) -> None:
        """Transport, paused consumer, FFmpeg; the consumer resumes once FFmpeg
        holds its ports; the first packet's time is traced."""
        self.log = logger.bind(stem=self.path.name)
        if shutil.which(self.ffmpeg_bin) is None:
            raise RecordingError(f"{self.ffmpeg_bin} not found")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._port = _free_port_pair(set())
            self.transport = await self.router.create_plain_transport(
                listen_info={"protocol": "udp", "ip": IP},
                rtcp_mux=False,
                comedia=False,
                app_data={"recording": str(self.path)},
            )
            await self.transport.connect(ip=IP, port=self._port, rtcp_port=self._port + 1)
            caps = recording_capabilities(self.router.rtp_capabilities)
            self.consumer = await self.transport.consume(self.source.producer_id, caps, paused=True)
            self.sdp_path.write_text(
                consumer_sdp("audio", self.consumer.rtp_parameters, ip=IP, port=self._port, rtcp_port=self._port + 1)
            )
            self.process = await spawn_ffmpeg(self.command())
            self._stderr_task = asyncio.ensure_future(self._drain_stderr())
            self.exited = asyncio.ensure_future(self.process.wait())
            await self._wait_listening({self._port, self._port + 1})
            self.consumer.on("trace", self._on_trace)
            await self.consumer.enable_trace_event(["rtp"])
            self.resumed_at = time.time()
            await self.consumer.resume()
        except BaseException:
            await self.abort()
            raise

    def _on_trace(self, trace: dict[str, Any]) -> None:
        if self.t0 is not None or trace.get("type") != "rtp":
            return
        stamp = trace.get("timestamp")
        self.t0 = monotonic_to_wall(float(stamp)) if stamp else time.time()
        self.log.debug("first packet at {:.3f} (resumed {:.3f})", self.t0, self.resumed_at or 0.0)
        consumer = self.consumer
        if consumer is not None and not consumer.closed:
            task = asyncio.ensure_future(consumer.enable_trace_event([]))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if self.on_first_packet is not None:
            self.on_first_packet(self)

    def _close_input(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.sdp_path.unlink(missing_ok=True)

    async def abort(self) -> None:
        self.stopping = True
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._close_input()
        self.path.unlink(missing_ok=True)

    async def stop(self) -> None:
        """``q`` (FFmpeg reads it at its next packet), SIGINT twice if the input is
        silent (muted, gone): the Ogg pages written are kept."""
        if self.stopping:
            return
        self.stopping = True
        self.ended_at = time.time()
        process = self.process
        if process is None:
            return
        try:
            if process.returncode is None and process.stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    process.stdin.write(b"q")
                    await process.stdin.drain()
                    process.stdin.close()
            if not await self._exits_within(STOP_GRACE if self.consumer_flowing else 0.2):
                await interrupt(process.pid)
                if not await self._exits_within(STOP_TIMEOUT):
                    process.kill()
                    await process.wait()
            if self._stderr_task is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await self._stderr_task
        finally:
            self._close_input()
        self.log.info("stem written: {} (first packet {})", self.path.name, self.t0)

    @property
    def consumer_flowing(self) -> bool:
        """The consumer sends (not closed, its producer not paused)."""
        c = self.consumer
        return c is not None and not c.closed and not c.producer_paused and not c.paused

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

A stem listens before it knows its producer (:meth:`Stem.listen`: the
transport, and FFmpeg holding its ports, for the router's Opus, the room's one
audio codec), then consumes it (:meth:`Stem.attach`: two worker round trips).
The recording keeps one stem listening ahead (a spare) for the next audio
producer: a client sends RTP as soon as its transport's DTLS is up, without
waiting for the ``produce`` answer, and what reaches the producer before its
stem's consumer is resumed is never recorded. Started on demand (FFmpeg's spawn
and bind: ~100-250 ms on an idle machine, more under load) a stem missed a
joiner's first 2-8 packets (40-160 ms) and 6-12 of a microphone turned on over
a connected transport (its RTP comes at once); attached to a spare, 0 and 0-2.

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


def _listened_codec(router: Router) -> dict[str, Any]:
    """The codec a stem's FFmpeg listens for before its consumer exists: the router's
    audio codec (a consumer of the router sends it with the router's payload type)."""
    caps = recording_capabilities(router.rtp_capabilities)
    codec = next(c for c in caps["codecs"] if c.get("kind") == "audio" and not c["mimeType"].lower().endswith("/rtx"))
    return {
        "mimeType": codec["mimeType"],
        "payloadType": codec["preferredPayloadType"],
        "clockRate": codec["clockRate"],
        "channels": codec.get("channels", 1),
        "parameters": codec.get("parameters") or {},
    }


def _same_codec(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a["mimeType"].lower() == b["mimeType"].lower()
        and a["payloadType"] == b["payloadType"]
        and a["clockRate"] == b["clockRate"]
        and a.get("channels", 1) == b.get("channels", 1)
    )


@dataclass
class Stem(FfmpegRun):
    router: Router
    path: Path
    #: The producer recorded; None for a spare stem listening ahead (:meth:`attach`).
    source: Source | None = None
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
    _codec: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _stderr: list[str] = field(default_factory=list, init=False, repr=False)
    _stderr_task: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    @property
    def producer_id(self) -> str:
        return self.source.producer_id if self.source is not None else ""

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
        """:meth:`listen`, then :meth:`attach` its source (a spare: listen only)."""
        await self.listen()
        if self.source is not None:
            await self.attach(self.source)

    async def listen(self) -> None:
        """Transport and FFmpeg, FFmpeg holding its ports, for the router's audio codec."""
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
            self._codec = _listened_codec(self.router)
            self.sdp_path.write_text(
                consumer_sdp("audio", {"codecs": [self._codec]}, ip=IP, port=self._port, rtcp_port=self._port + 1)
            )
            self.process = await spawn_ffmpeg(self.command())
            self._stderr_task = asyncio.ensure_future(self._drain_stderr())
            self.exited = asyncio.ensure_future(self.process.wait())
            await self._wait_listening({self._port, self._port + 1})
        except BaseException:
            await self.abort()
            raise

    async def attach(self, source: Source) -> None:
        """A paused consumer of ``source`` on the listening transport, its first
        packet traced, resumed: two worker round trips."""
        self.source = source
        try:
            if self.transport is None or self.transport.closed or not self.running:
                raise RecordingError(f"stem {self.path.name} is not listening")
            caps = recording_capabilities(self.router.rtp_capabilities)
            self.consumer = await self.transport.consume(source.producer_id, caps, paused=True)
            codec = self.consumer.rtp_parameters["codecs"][0]
            if not _same_codec(codec, self._codec):
                raise RecordingError(f"{codec['mimeType']}/{codec['payloadType']} is not the codec FFmpeg listens for")
            self.consumer.on("trace", self._on_trace)
            self.resumed_at = time.time()
            # Both requests written at once (the worker handles them in order, so the
            # first packet forwarded is traced): one round trip less while RTP flows.
            done = await asyncio.gather(
                self.consumer.enable_trace_event(["rtp"]), self.consumer.resume(), return_exceptions=True
            )
            for result in done:
                if isinstance(result, BaseException):
                    raise result
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

"""Tracks that replay a pre-encoded clip: aiortc sends ``av.Packet``s as they are
(``RTCRtpSender`` packetizes them, no encoder runs), paced in real time."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from control.loadtest.clip import AUDIO_PTIME, AUDIO_RATE, Clip

__all__ = ["ReplayTrack"]


class ReplayTrack(MediaStreamTrack):
    """The clip's video (``kind="video"``; with ``layer``, that simulcast layer's) or
    audio, looped for as long as it is read."""

    def __init__(self, clip: Clip, kind: str, *, offset: int = 0, layer: int | None = None) -> None:
        super().__init__()
        self.kind = kind
        if kind == "video":
            frames = clip.video if layer is None else clip.layers[layer].video
            self._packets = [frame.data for frame in frames]
            self._interval = 1.0 / clip.fps
            self._time_base = fractions.Fraction(1, clip.fps)
            self._step = 1
        else:
            self._packets = list(clip.audio)
            self._interval = AUDIO_PTIME
            self._time_base = fractions.Fraction(1, AUDIO_RATE)
            self._step = int(AUDIO_RATE * AUDIO_PTIME)
        # Publishers start at different points of the audio loop; video starts at a key frame.
        self._index = offset % len(self._packets) if kind == "audio" else 0
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:  # aiortc sends Frames or Packets
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._count * self._interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        packet = av.Packet(self._packets[self._index])
        packet.pts = self._count * self._step
        packet.time_base = self._time_base
        self._index = (self._index + 1) % len(self._packets)
        self._count += 1
        return packet

"""A short clip, encoded once per run and replayed by every publisher.

Encoding is what limits a load machine (one VP8 encoder per peer would saturate it
long before the SFU), so the tool encodes a few seconds of VP8 and Opus once
(PyAV's libvpx and libopus, which aiortc uses too) and every publisher sends those
same packets in a loop (:class:`~control.loadtest.replay.ReplayTrack`). The picture
moves (so VP8 produces a realistic bitrate) and has a key frame every second (a
subscriber that joins late or loses packets waits at most that long).
"""

from __future__ import annotations

import array
import fractions
import math
from dataclasses import dataclass
from typing import Final

import av

__all__ = [
    "AUDIO_PTIME",
    "AUDIO_RATE",
    "RESOLUTIONS",
    "SIMULCAST_LAYERS",
    "Clip",
    "EncodedFrame",
    "VideoLayer",
    "encode_clip",
]

#: ``--video-resolution`` -> (width, height, target bitrate bps), as in ``lk load-test``'s ladder.
RESOLUTIONS: Final = {
    "180p": (320, 180, 150_000),
    "360p": (640, 360, 500_000),
    "720p": (1280, 720, 1_500_000),
}
#: ``--simulcast``: the layers (width, height, bitrate bps), lowest first, of each resolution
#: that has them: a quarter, half and full size, as browsers send (``scaleResolutionDownBy``
#: 4, 2, 1). 180p has none (a quarter of it is too small to be useful).
SIMULCAST_LAYERS: Final = {
    "360p": ((160, 90, 60_000), (320, 180, 150_000), (640, 360, 500_000)),
    "720p": ((320, 180, 150_000), (640, 360, 500_000), (1280, 720, 1_500_000)),
}
AUDIO_RATE: Final = 48_000
AUDIO_PTIME: Final = 0.02  # 20 ms Opus frames
AUDIO_BITRATE: Final = 32_000


@dataclass(frozen=True)
class EncodedFrame:
    data: bytes
    keyframe: bool


@dataclass(frozen=True)
class VideoLayer:
    """One simulcast layer: the same picture encoded at its own size and bitrate."""

    width: int
    height: int
    video: tuple[EncodedFrame, ...]


@dataclass(frozen=True)
class Clip:
    """Encoded frames of one resolution: ``video`` at ``fps``, ``audio`` every 20 ms, and
    with simulcast the ``layers`` (lowest first; the last one is ``video``)."""

    width: int
    height: int
    fps: int
    video: tuple[EncodedFrame, ...]
    audio: tuple[bytes, ...]
    layers: tuple[VideoLayer, ...] = ()

    @property
    def video_bitrate(self) -> float:
        """The clip's average video bitrate (bits per second)."""
        seconds = len(self.video) / self.fps
        return sum(len(frame.data) for frame in self.video) * 8 / seconds if seconds else 0.0


def _paint(frame: av.VideoFrame, width: int, height: int, index: int) -> None:
    """A diagonal gradient that scrolls, with a bright square moving across it."""
    row = bytes((x + index * 6) % 220 + 16 for x in range(width * 2))
    luma = bytearray()
    for y in range(height):
        start = (y * 2) % width
        luma += row[start : start + width]
    side = max(16, height // 6)
    left = (index * 12) % max(1, width - side)
    top = height // 3
    for y in range(top, top + side):
        luma[y * width + left : y * width + left + side] = b"\xeb" * side
    frame.planes[0].update(bytes(luma))
    chroma = (width // 2) * (height // 2)
    frame.planes[1].update(bytes([(index * 3) % 64 + 96]) * chroma)
    frame.planes[2].update(bytes([160 - (index * 2) % 64]) * chroma)


def encode_video(
    width: int, height: int, bitrate: int, fps: int = 30, seconds: float = 2.0
) -> tuple[EncodedFrame, ...]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.framerate = fractions.Fraction(fps, 1)
    codec.time_base = fractions.Fraction(1, fps)
    codec.bit_rate = bitrate
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "g": str(fps),
        "keyint_min": str(fps),
    }
    frames: list[EncodedFrame] = []
    for index in range(int(fps * seconds)):
        frame = av.VideoFrame(width, height, "yuv420p")
        _paint(frame, width, height, index)
        frame.pts = index
        frame.time_base = codec.time_base
        frames += [EncodedFrame(bytes(packet), bool(packet.is_keyframe)) for packet in codec.encode(frame)]
    frames += [EncodedFrame(bytes(packet), bool(packet.is_keyframe)) for packet in codec.encode(None)]
    if not frames or not frames[0].keyframe:
        raise RuntimeError("the VP8 encoder did not start with a key frame")
    return tuple(frames)


def encode_audio(seconds: float = 2.0, frequency: float = 440.0) -> tuple[bytes, ...]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_RATE
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = AUDIO_BITRATE
    codec.time_base = fractions.Fraction(1, AUDIO_RATE)
    samples = int(AUDIO_RATE * AUDIO_PTIME)
    packets: list[bytes] = []
    for index in range(int(seconds / AUDIO_PTIME)):
        start = index * samples
        pcm = array.array(
            "h",
            (int(6000 * math.sin(2 * math.pi * frequency * (start + i // 2) / AUDIO_RATE)) for i in range(samples * 2)),
        )
        frame = av.AudioFrame(format="s16", layout="stereo", samples=samples)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = codec.time_base
        packets += [bytes(packet) for packet in codec.encode(frame)]
    packets += [bytes(packet) for packet in codec.encode(None)]
    return tuple(packets)


def encode_clip(
    resolution: str, *, audio_only: bool = False, simulcast: bool = False, fps: int = 30, seconds: float = 2.0
) -> Clip:
    """Encode the clip for ``resolution`` (``RESOLUTIONS``); no video with ``audio_only``;
    with ``simulcast`` every layer of ``SIMULCAST_LAYERS[resolution]`` (the top one is
    ``video``), each encoded once like the single-layer clip."""
    width, height, bitrate = RESOLUTIONS[resolution]
    if audio_only:
        return Clip(width, height, fps, (), encode_audio(seconds))
    if not simulcast:
        return Clip(width, height, fps, encode_video(width, height, bitrate, fps, seconds), encode_audio(seconds))
    layers = tuple(
        VideoLayer(w, h, encode_video(w, h, rate, fps, seconds)) for w, h, rate in SIMULCAST_LAYERS[resolution]
    )
    return Clip(width, height, fps, layers[-1].video, encode_audio(seconds), layers)

"""What a subscriber measures without decoding: packets, sequence gaps, bytes, key frames."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["RESYNC", "Snapshot", "TrackCounter", "is_vp8_keyframe", "percentile", "vp8_keyframe_size"]

#: A jump of the sequence number this large (either way) starts a new sequence rather
#: than counting thousands of packets as lost: seen once at a consumer's start.
RESYNC = 1000


def is_vp8_keyframe(payload: bytes) -> bool:
    """True for the first packet of a VP8 key frame (RFC 7741 payload descriptor + header)."""
    return _vp8_keyframe_header(payload) is not None


def vp8_keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """(width, height) from the first packet of a VP8 key frame (RFC 6386 9.1: after the
    3-byte frame tag, the start code 9d 01 2a and two 14-bit sizes), else None: what a
    subscriber checks to see which simulcast layer it gets, without decoding."""
    pos = _vp8_keyframe_header(payload)
    if pos is None or len(payload) < pos + 10 or payload[pos + 3 : pos + 6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(payload[pos + 6 : pos + 8], "little") & 0x3FFF
    height = int.from_bytes(payload[pos + 8 : pos + 10], "little") & 0x3FFF
    return width, height


def _vp8_keyframe_header(payload: bytes) -> int | None:
    """The offset of the VP8 payload header if ``payload`` starts a key frame."""
    if not payload:
        return None
    first = payload[0]
    start, partition = first & 0x10, first & 0x0F
    if not start or partition:
        return None
    pos = 1
    if first & 0x80:  # X: extension byte
        if len(payload) <= pos:
            return None
        ext = payload[pos]
        pos += 1
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= pos:
                return None
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/KEYIDX
            pos += 1
    return pos if len(payload) > pos and not payload[pos] & 0x01 else None  # P bit 0: key frame


@dataclass
class TrackCounter:
    """One consumed track: packets of its media payload type (RTX and padding-only excluded).

    For video, ``size`` is the picture size of the last key frame and ``window_sizes``
    counts the key frames of each size in the measuring window; for a simulcast
    consumer (``consumer_type``), ``preferred_layer`` is the spatial layer this subscriber
    asked for and ``spatial_layer`` the one the server last said it sends
    (``consumerLayersChanged``)."""

    publisher: str
    kind: str
    payload_type: int
    consumer_id: str = ""
    consumer_type: str = "simple"
    preferred_layer: int | None = None
    spatial_layer: int | None = None
    size: tuple[int, int] | None = None
    window_sizes: dict[tuple[int, int], int] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)
    packets: int = 0
    received_bytes: int = 0
    keyframes: int = 0
    first_at: float | None = None
    last_at: float | None = None
    _first_seq: int | None = None
    _highest: int = 0
    _segment_packets: int = 0
    _closed_expected: int = 0
    _closed_lost: int = 0

    def add(self, payload_type: int, sequence_number: int, payload: bytes) -> None:
        if payload_type != self.payload_type or not payload:
            return
        now = time.monotonic()
        if self._first_seq is None:
            self.first_at = now
            self._restart(sequence_number)
        else:
            delta = (sequence_number - self._highest) & 0xFFFF
            if RESYNC <= delta <= 0x10000 - RESYNC:
                self._close_segment()  # a new sequence (a stray first packet, a stream switch)
                self._restart(sequence_number)
            elif delta < 0x8000:
                self._highest += delta
        self.last_at = now
        self.packets += 1
        self._segment_packets += 1
        self.received_bytes += len(payload)
        if self.kind == "video" and is_vp8_keyframe(payload):
            self.keyframes += 1
            self.size = vp8_keyframe_size(payload) or self.size
            if self.size is not None and self.marked is not None and self.ended is None:
                self.window_sizes[self.size] = self.window_sizes.get(self.size, 0) + 1

    def _restart(self, sequence_number: int) -> None:
        self._first_seq = self._highest = sequence_number
        self._segment_packets = 0

    def _close_segment(self) -> None:
        expected = self._segment_expected
        self._closed_expected += expected
        self._closed_lost += max(0, expected - self._segment_packets)

    @property
    def _segment_expected(self) -> int:
        return 0 if self._first_seq is None else self._highest - self._first_seq + 1

    @property
    def expected(self) -> int:
        """Packets the sequence numbers say were sent (RFC 3550's extended highest - first + 1)."""
        return self._closed_expected + self._segment_expected

    @property
    def lost(self) -> int:
        return self._closed_lost + max(0, self._segment_expected - self._segment_packets)

    def bitrate(self, until: float) -> float:
        """Bits per second from the first packet (or the :meth:`mark`) to ``until``."""
        since = self.first_at if self.marked is None or self.first_at is None else max(self.first_at, self.marked.at)
        if since is None or until <= since:
            return 0.0
        return self.window.received_bytes * 8 / (until - since)

    # -- the measuring window: what happened since mark() ---------------------------------

    marked: Snapshot | None = None
    ended: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        return Snapshot(time.monotonic(), self.packets, self.received_bytes, self.keyframes, self.expected, self.lost)

    def mark(self) -> None:
        """Start the steady-state window: :attr:`window` counts from here (joins excluded)."""
        self.marked = self.snapshot()

    def end(self) -> None:
        """End the window: later packets (while peers leave) are not counted in :attr:`window`,
        later layer changes (a leaving publisher's consumer has none) not in :attr:`layer`."""
        self.ended = self.snapshot()
        self._layer_at_end = self.spatial_layer

    _layer_at_end: int | None = None

    @property
    def layer(self) -> int | None:
        """The spatial layer the server said it sends, at the end of the window (or now)."""
        return self.spatial_layer if self.ended is None else self._layer_at_end

    @property
    def window(self) -> Snapshot:
        """Packets, bytes, key frames, expected and lost since :meth:`mark` (everything without one)."""
        now = self.ended or self.snapshot()
        return now if self.marked is None else now - self.marked


@dataclass(frozen=True)
class Snapshot:
    at: float
    packets: int
    received_bytes: int
    keyframes: int
    expected: int
    lost: int

    def __sub__(self, other: Snapshot) -> Snapshot:
        return Snapshot(
            self.at - other.at,
            self.packets - other.packets,
            self.received_bytes - other.received_bytes,
            self.keyframes - other.keyframes,
            self.expected - other.expected,
            max(0, self.lost - other.lost),
        )


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``nan`` for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]

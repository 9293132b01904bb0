"""Shared by the recording end-to-end tests: coloured video tracks, who sends what,
reading the MP4 back (ffprobe, pixels, audio tones), RabbitMQ queues and a broker
proxy that can be taken down and brought back on the same port."""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import math
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import av
import pika

from control.keys import OBJECTS
from control.recording import RECORDINGS
from control.storage.local import LocalStorage
from recording.segment import udp_sockets
from tests.e2e.harness import Server
from tests.e2e.media_peer import CAPTURE_BUFFER, MediaPeer, PacedVideoTrack, ToneTrack, longest_unsent, sent_fraction
from tests.integration.tcp_proxy import TcpProxy

#: (name, YUV of the solid colour, RGB it decodes to roughly, tone Hz)
PEOPLE = [
    ("alice", (81, 90, 240), (255, 0, 0), 440.0),
    ("bob", (145, 54, 34), (0, 255, 0), 660.0),
    ("carol", (41, 240, 110), (0, 0, 255), 880.0),
]
RED, GREEN, BLUE = (p[2] for p in PEOPLE)
BLACK = (0, 0, 0)
#: A name card's background (recording.layout.CARD_COLOUR 0x262626).
CARD = (38, 38, 38)
#: Frequencies nobody sends, to compare the tones with.
OFF_TONES = (550.0, 770.0, 1000.0)

WIDTH, HEIGHT = 640, 360


class SolidTrack(PacedVideoTrack):
    """160x120 frames of one colour (YUV), at ``fps``."""

    def __init__(self, yuv: tuple[int, int, int], fps: int = 15) -> None:
        super().__init__(160, 120, fps)
        self.yuv = yuv

    def paint(self, frame: av.VideoFrame, count: int) -> None:
        self.fill(frame, *self.yuv)


# -- the MP4 ----------------------------------------------------------------------------


def ffprobe(path: Path) -> dict[str, Any]:
    return json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
            check=True,
            capture_output=True,
        ).stdout
    )


def codecs_and_duration(path: Path) -> tuple[list[str], float]:
    info = ffprobe(path)
    return sorted(s["codec_name"] for s in info["streams"]), float(info["format"]["duration"])


def frame_at(path: Path, at: float) -> bytes:
    """The RGB24 frame shown at ``at`` seconds."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-ss",
            f"{at:.2f}",
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert len(raw) == WIDTH * HEIGHT * 3, f"no frame at {at:.2f} s ({len(raw)} bytes)"
    return raw


def pixel(raw: bytes, x: int, y: int) -> tuple[int, int, int]:
    i = (y * WIDTH + x) * 3
    return raw[i], raw[i + 1], raw[i + 2]


def _pixels(path: Path, at: float, points: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    raw = frame_at(path, at)
    return [pixel(raw, x, y) for x, y in points]


def _close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 60) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=False))


def bright_pixels(raw: bytes, x0: int, y0: int, x1: int, y1: int, level: int = 200) -> int:
    """How many pixels of the rectangle are near white (a name card's text)."""
    return sum(1 for y in range(y0, y1) for x in range(x0, x1) if min(pixel(raw, x, y)) >= level)


AUDIO_RATE = 8000


def audio_samples(path: Path, start: float = 0.0, length: float | None = None) -> list[int]:
    """The MP4's audio, mixed to mono, 8 kHz, signed 16-bit, from ``start`` for ``length`` s.
    Seeks by decoding (``-ss`` after ``-i``; audio only, quick): an input seek goes by the
    video's key frames and skips the audio before the video's first one (a composite
    whose video starts later, ``recording.mix``)."""
    args = ["ffmpeg", "-v", "error", "-i", str(path), "-ss", f"{start:.3f}"]
    if length is not None:
        args += ["-t", f"{length:.3f}"]
    raw = subprocess.run(
        args + ["-vn", "-ac", "1", "-ar", str(AUDIO_RATE), "-f", "s16le", "-"], check=True, capture_output=True
    ).stdout
    samples = array.array("h")
    samples.frombytes(raw[: len(raw) // 2 * 2])
    return list(samples)


def tone_amplitude(samples: list[int], frequency: float, rate: int = AUDIO_RATE) -> float:
    """Amplitude (in sample units) of the sine at ``frequency`` (Goertzel, Hann window)."""
    n = len(samples)
    if n < 2:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    step = 2 * math.pi / (n - 1)
    for i, x in enumerate(samples):
        s0 = x * (0.5 - 0.5 * math.cos(step * i)) + coeff * s1 - s2
        s2, s1 = s1, s0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / (n * 0.5)  # 0.5: the Hann window's coherent gain


def tones(samples: list[int], frequencies: tuple[float, ...]) -> dict[float, float]:
    return {f: round(tone_amplitude(samples, f), 1) for f in frequencies}


# -- continuity: holes in packet timestamps and in the samples -------------------------


def packets(path: Path, stream: str) -> list[tuple[float, float]]:
    """(pts, duration) in seconds of every packet of ``stream`` ("a:0", "v:0")."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            stream,
            "-show_entries",
            "packet=pts_time,duration_time",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
    ).stdout
    return sorted(
        (float(p["pts_time"]), float(p.get("duration_time") or 0))
        for p in json.loads(out)["packets"]
        if "pts_time" in p
    )


def largest_hole(packets: list[tuple[float, float]]) -> float:
    """The longest time between two packets beyond the usual spacing (the median
    one: a packet's own duration is no help, MP4 stretches the one before a hole)."""
    steps = sorted(b[0] - a[0] for a, b in itertools.pairwise(packets))
    if not steps:
        return 0.0
    return steps[-1] - steps[len(steps) // 2]


def pcm(path: Path, start: float = 0.0, length: float | None = None) -> list[int]:
    """Mono samples at :data:`AUDIO_RATE` placed by their timestamps: a hole in the
    packets is silence here (decoded back to back it would not show). Seeks by
    decoding, as :func:`audio_samples`."""
    args = ["ffmpeg", "-v", "error", "-i", str(path), "-ss", f"{start:.3f}"]
    if length is not None:
        args += ["-t", f"{length:.3f}"]
    timed = "aresample=async=1:min_hard_comp=0.01:first_pts=0"
    raw = subprocess.run(
        [*args, "-vn", "-af", timed, "-ac", "1", "-ar", str(AUDIO_RATE), "-f", "s16le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    samples = array.array("h")
    samples.frombytes(raw[: len(raw) // 2 * 2])
    return list(samples)


def longest_silence(samples: list[int], window: float = 0.005, level: float = 300.0) -> float:
    """The longest run of ``window``-long stretches with an RMS under ``level`` (s)."""
    size = int(AUDIO_RATE * window)
    longest = run = 0
    for i in range(0, len(samples) - size + 1, size):
        chunk = samples[i : i + size]
        rms = math.sqrt(sum(x * x for x in chunk) / size)
        run = run + 1 if rms < level else 0
        longest = max(longest, run)
    return longest * window


# -- RabbitMQ ---------------------------------------------------------------------------


def _bind_queue(url: str) -> tuple[Any, Any, str]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare("meetings", exchange_type="topic", durable=True)
    queue = f"test.recording.{secrets.token_hex(4)}"
    channel.queue_declare(queue, exclusive=True, auto_delete=True)
    channel.queue_bind(queue, "meetings", routing_key="recording.completed")
    return connection, channel, queue


async def drop_queue(connection: Any, channel: Any, queue: str) -> None:
    """Delete a test's durable queue and close the connection (off the loop)."""

    def drop() -> None:
        try:
            channel.queue_delete(queue)
        finally:
            connection.close()

    await asyncio.to_thread(drop)


def _ours(body: bytes, bucket: str) -> dict[str, Any] | None:
    """The event if it is about an object of ``bucket`` (each test has its own):
    the broker is shared, and another run's events may reach our queue."""
    event = json.loads(body)
    return event if event.get("data", {}).get("object", {}).get("bucket") == bucket else None


def _get_event(channel: Any, queue: str, timeout: float, *, bucket: str) -> dict[str, Any]:
    """The first ``recording.completed`` of ``bucket`` reaching ``queue`` (others skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            if (event := _ours(body, bucket)) is not None:
                return event
            continue
        connection_sleep(channel, 0.2)
    raise AssertionError(f"no recording.completed event for bucket {bucket}")


def _get_event_or_none(channel: Any, queue: str, *, bucket: str) -> dict[str, Any] | None:
    """An event of ``bucket`` already in ``queue``, or None."""
    while True:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return None
        if (event := _ours(body, bucket)) is not None:
            return event


def connection_sleep(channel: Any, seconds: float) -> None:
    """Sleep while servicing the connection's heartbeats."""
    channel.connection.process_data_events(time_limit=seconds)


class GatedProxy(TcpProxy):
    """A :class:`TcpProxy` that can be taken down (listener shut: connections refused,
    open ones cut) and brought back up on the same port."""

    def down(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True).start()

    def refuses(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        return False


def udp_addresses(pid: int) -> list[str]:
    """The local IPv4 addresses of process ``pid``'s UDP sockets, one per socket."""
    return [address for address, _port in sorted(udp_sockets(pid))]


# -- phases of a recording ---------------------------------------------------------------

#: Keep this far from a change when checking what a phase shows.
MARGIN = 1.5

# Two tiles side by side are 320x360 (a 4:3 camera 320x240 in the middle, black bars);
# four tiles (2x2) are 320x180 (the camera 240x180 in the middle).
LEFT, RIGHT, LEFT_TOP_BAR = (160, 180), (480, 180), (160, 20)
LEFT_CORNER, RIGHT_CORNER = (10, 10), (330, 10)
QUADRANTS = [(160, 90), (480, 90), (160, 270), (480, 270)]


def _peer(server: Server, room: str, index: int) -> MediaPeer:
    name, yuv, _rgb, tone = PEOPLE[index]
    peer = MediaPeer(server.ws_url(room, name), name, display_name=name.title())
    peer.tracks = [ToneTrack(tone), SolidTrack(yuv)]
    return peer


def tone_of(peer: MediaPeer) -> ToneTrack:
    """The peer's microphone (it knows which of its audio it really sent)."""
    return next(t for t in peer.tracks if isinstance(t, ToneTrack))


#: Under this part of a window sent, a tone check there measures the test, not the server.
MIN_SENT = 0.15


def sent_in(peer: MediaPeer, start: float, end: float) -> float:
    """The part of [start, end] (monotonic) in which ``peer`` sent its tone, weighted as
    :func:`tone_amplitude` weighs samples (Hann): the tone's amplitude over that window
    is about this part of the full one. Fails loudly below
    :data:`MIN_SENT`: the test's own sender was starved, nothing is left to check."""
    part = sent_fraction([tone_of(peer)], start, end, hann=True)
    assert part >= MIN_SENT, f"{peer.peer_id} sent its tone {part:.0%} of the time checked (the test starved)"
    return part


def silence_allowed(peers: list[MediaPeer], start: float, end: float) -> float:
    """The longest silence a mix of ``peers``' tones may hold between ``start`` and
    ``end`` (monotonic): 20 ms, plus the longest time in which no sender's audio can
    have reached the mix. Each stem starts at its first packet's arrival, which may come
    up to :data:`CAPTURE_BUFFER` after that packet's capture (the sender's own delay), so
    one sender's audio may sit that much later in the mix than another's: every stretch
    a sender sent counts from that much after it began. Where nobody sent for a while,
    that is the hole plus the buffer (measured: 1.895 s of silence for 1.867 s nobody
    sent); where a joiner's first frame was captured inside a hole the others' dropped
    frames left, the hole up to the joiner's first packet (measured: 75 ms of silence at
    carol's join, alice's and bob's frames dropped for ~95 ms in a stall, carol's first
    capture inside it, her first packet ~80 ms later)."""
    return 0.020 + longest_unsent([tone_of(p) for p in peers], start, end, placed_late=CAPTURE_BUFFER)


def clean_ratio(parts: list[float]) -> float:
    """How far above the off-frequencies a tone must stand: 100x for tones sent whole,
    25x where a sender dropped frames: each hole gates the sine off and on, and the
    edges leak into every frequency (measured with the same recording: 95x with alice
    at 56% of the window, 41x at 25%). Corrupted audio is far beyond that (issue 17:
    off-frequencies at 3,371-4,879, as loud as the tones)."""
    return 100.0 if min(parts) >= 0.999 else 25.0


async def _stored(server: Server, key: str, timeout: float = 60) -> Path:
    """The recording's file in the local store, once its upload is confirmed."""
    objects = server.app[OBJECTS]
    assert isinstance(objects, LocalStorage), "the e2e server stores objects locally"
    path = objects.path_for(key)
    recordings = server.app[RECORDINGS]
    deadline = time.monotonic() + timeout
    while not (path.exists() and not recordings._announcing):
        assert time.monotonic() < deadline, f"{key} not stored in {timeout:.0f} s"
        await asyncio.sleep(0.2)
    return path


def zero_before(server: Server, room: str, t0: float) -> float:
    """Seconds from the live recording's zero (its first media: a stem's first packet
    or the first segment's ``t0``, from its manifest) to the test's zero ``t0``
    (monotonic, taken at the start's answer): a moment of the test is that much
    later in the MP4."""
    manifest = server.app[RECORDINGS].active[room].manifest
    origin = min([manifest.segments[0].t0, *(t.t0 for t in manifest.tracks if t.t0 is not None)])
    return max(0.0, time.time() - (time.monotonic() - t0) - origin)


def _inside(start: float, end: float, count: int = 2) -> list[float]:
    """``count`` times spread inside [start + MARGIN, end - MARGIN]."""
    lo, hi = start + MARGIN, end - MARGIN
    assert hi > lo, (start, end)
    return [lo + (hi - lo) * (i + 1) / (count + 1) for i in range(count)]


def _side_by_side(path: Path, at: float) -> tuple[tuple[int, int, int], ...]:
    raw = frame_at(path, at)
    return tuple(pixel(raw, x, y) for x, y in (LEFT, RIGHT, LEFT_TOP_BAR))


def _assert_red_green(path: Path, start: float, end: float, timeline: str) -> None:
    for at in _inside(start, end):
        left_tile, right_tile, bar = _side_by_side(path, at)
        assert _close(left_tile, RED) and _close(right_tile, GREEN) and _close(bar, BLACK, 20), (
            at,
            left_tile,
            right_tile,
            bar,
            timeline,
        )

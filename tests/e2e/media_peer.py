"""A real WebRTC participant: pymediasoup + aiortc over :class:`ProtooClient`.

It speaks mediasoup-demo's protocol the way the demo's browser client does
(capabilities, send/recv transports, join, produce; ``newConsumer`` /
``newDataConsumer`` accepted by consuming locally), sends synthetic media
(a 440 Hz tone and small changing video frames, encoded by aiortc) and
decodes everything it receives, counting frames and samples per producer.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import math
import time
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from pymediasoup import AiortcHandler, Device
from pymediasoup.rtp_parameters import RtpCapabilities

from tests.e2e.protoo_client import ProtooClient

AUDIO_RATE = 48000
AUDIO_PTIME = 0.020
VIDEO_CLOCK = 90000


#: How late a microphone's frame may be read before it is lost (its capture buffer).
CAPTURE_BUFFER = 0.1


class ToneTrack(MediaStreamTrack):
    """A sine in 20 ms mono s16 frames on the wall clock, as a microphone: the frame
    with timestamp ``pts`` holds what was captured ``pts`` samples after the first.
    A reader (aiortc's sender) more than :data:`CAPTURE_BUFFER` late loses the frames
    it missed, and the next frame's timestamp jumps over them, as a capture device's.

    Why: the tone used to run on its own clock (one frame after another, however late):
    in a starved test process (the server, three aiortc peers and their codecs on one
    event loop, on a loaded 2-core machine) it fell 9 s behind in 18 s (measured: the
    worker got every packet sent, none lost, 0.55 s of audio per second), so the stems,
    placed by RTP timestamps, held less audio than the recording lasted and ended early
    (issue 15). Now what was never sent is in :attr:`dropped`, and the tests measure
    against what was sent (:func:`sent_intervals`)."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0) -> None:
        super().__init__()
        self.frequency = frequency
        #: Monotonic time of the first sample; None until the first frame was read.
        self.started: float | None = None
        #: Monotonic time at which the last frame read ends.
        self.ended: float | None = None
        #: (from, to) monotonic times whose frames were never read (lost late).
        self.dropped: list[tuple[float, float]] = []
        self._pts = 0
        self._period = _tone_period(frequency)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        samples = int(AUDIO_RATE * AUDIO_PTIME)
        now = time.monotonic()
        if self.started is None:
            self.started = now
        else:
            self._pts += samples
            late = now - (self.started + self._pts / AUDIO_RATE)
            if late > CAPTURE_BUFFER:
                caught_up = int((now - self.started) * AUDIO_RATE) // samples * samples
                self.dropped.append((self.started + self._pts / AUDIO_RATE, self.started + caught_up / AUDIO_RATE))
                self._pts = caught_up
            elif late < 0:
                await asyncio.sleep(-late)
        self.ended = self.started + (self._pts + samples) / AUDIO_RATE
        start = self._pts % (len(self._period) // 2 - samples)
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(self._period[2 * start : 2 * (start + samples)])
        frame.pts = self._pts
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


def _tone_period(frequency: float) -> bytes:
    """Whole periods of the sine (as s16 bytes) plus one frame, so that any frame is a
    slice: computed once instead of 960 ``sin`` per frame (CPU the senders lacked)."""
    length = AUDIO_RATE // math.gcd(AUDIO_RATE, round(frequency))
    frame = int(AUDIO_RATE * AUDIO_PTIME)
    pcm = array.array(
        "h", (int(8000 * math.sin(2 * math.pi * frequency * i / AUDIO_RATE)) for i in range(length + frame))
    )
    return pcm.tobytes()


def _spans(track: ToneTrack) -> list[tuple[float, float]]:
    """(from, to) monotonic times ``track`` sent audio for, in order."""
    if track.started is None or track.ended is None:
        return []
    spans, at = [], track.started
    for lost_from, lost_to in track.dropped:
        spans.append((at, lost_from))
        at = lost_to
    spans.append((at, track.ended))
    return spans


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(s for s in spans if s[1] > s[0]):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def sent_intervals(tracks: list[ToneTrack], *, placed_late: float = 0.0) -> list[tuple[float, float]]:
    """(from, to) monotonic times some of ``tracks`` sent audio for, merged;
    ``placed_late``: each stretch counted from that much after it began (see
    :func:`longest_unsent`)."""
    return _merged([(lo + placed_late, hi) for track in tracks for lo, hi in _spans(track)])


def sent_fraction(tracks: list[ToneTrack], start: float, end: float, *, hann: bool = False) -> float:
    """The part of [start, end] (monotonic) in which some of ``tracks`` sent audio;
    ``hann``: weighted by a Hann window over [start, end], as a tone's amplitude is
    measured (a hole in the middle of the window weighs twice its length)."""
    length = end - start
    if length <= 0:
        return 0.0

    def weight(t: float) -> float:  # the window's integral from start to t, over its whole
        x = (min(max(t, start), end) - start) / length
        return x - math.sin(2 * math.pi * x) / (2 * math.pi) if hann else x

    return sum(max(0.0, weight(hi) - weight(lo)) for lo, hi in sent_intervals(tracks))


def longest_unsent(tracks: list[ToneTrack], start: float, end: float, *, placed_late: float = 0.0) -> float:
    """The longest time within [start, end] (monotonic) in which none of ``tracks`` sent;
    ``placed_late``: as if each stretch a track sent (from its first frame, or from its
    first frame after frames it dropped) began that much later: how much later than
    another's a sender's audio may be placed in a recording (its stem starts at its first
    packet's arrival, not at that packet's capture)."""
    longest, at = 0.0, start
    for lo, hi in sent_intervals(tracks, placed_late=placed_late):
        if hi <= at:
            continue
        if lo >= end:
            break
        longest = max(longest, lo - at)
        at = max(at, hi)
    return max(longest, end - at)


class PacedVideoTrack(MediaStreamTrack):
    """``width`` x ``height`` YUV frames at ``fps``, paced in real time; subclasses
    paint each frame (:meth:`paint`)."""

    kind = "video"

    def __init__(self, width: int = 160, height: int = 120, fps: int = 15) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._start: float | None = None
        self._count = 0

    def paint(self, frame: av.VideoFrame, count: int) -> None:
        raise NotImplementedError

    def fill(self, frame: av.VideoFrame, y: int, u: int, v: int) -> None:
        for plane, value, rows in zip(
            frame.planes, (y, u, v), (self.height, self.height // 2, self.height // 2), strict=False
        ):
            plane.update(bytes([value]) * (plane.line_size * rows))

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._count += 1
            wait = self._start + self._count / self.fps - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        self.paint(frame, self._count)
        frame.pts = int(self._count * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class PatternTrack(PacedVideoTrack):
    """Small grey frames whose brightness changes every frame."""

    def paint(self, frame: av.VideoFrame, count: int) -> None:
        self.fill(frame, (count * 7) % 200 + 28, 128, 128)


@dataclass
class Received:
    """What arrived from one remote producer."""

    peer_id: str
    producer_id: str
    kind: str
    consumer_id: str
    frames: int = 0
    samples: int = 0
    width: int = 0
    first_frame_at: float | None = None
    first_frame: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


class MediaPeer:
    def __init__(
        self,
        ws_url: str,
        peer_id: str,
        display_name: str | None = None,
        audio: bool = True,
        video: bool = True,
        data: bool = False,
        metadata: dict | None = None,
    ) -> None:
        self.ws_url = ws_url
        self.peer_id = peer_id
        self.display_name = display_name or peer_id
        self.tracks: list[MediaStreamTrack] = []
        if audio:
            self.tracks.append(ToneTrack())
        if video:
            self.tracks.append(PatternTrack())
        self.data = data
        self.metadata = metadata or {}
        self.protoo: ProtooClient | None = None
        self.device: Device | None = None
        self.send_transport: Any = None
        self.recv_transport: Any = None
        self.producers: dict[str, Any] = {}
        self.received: dict[str, Received] = {}  # by consumer id
        self.peers: list[dict] = []
        self.data_messages: list[Any] = []
        self.data_consumers: list[Any] = []
        self.connected_at: float | None = None
        self._consume_lock = asyncio.Lock()

    # -- signaling --------------------------------------------------------------------

    @property
    def signaling(self) -> ProtooClient:
        """The protoo client of a peer that joined (``protoo`` is None before ``join``)."""
        assert self.protoo is not None, f"{self.peer_id} has not joined"
        return self.protoo

    async def _request(self, method: str, data: dict | None = None) -> Any:
        assert self.protoo is not None
        return await self.protoo.request(method, data or {}, timeout=20)

    async def join(self) -> None:
        """Connect, create transports, join and produce every track."""
        self.connected_at = time.monotonic()
        self.protoo = await ProtooClient.connect(self.ws_url)
        self.protoo.on_request = self._on_server_request
        caps = await self._request("getRouterRtpCapabilities")
        self.device = Device(handlerFactory=AiortcHandler.createFactory(tracks=self.tracks))
        await self.device.load(RtpCapabilities(**caps))
        sctp = self.device.sctpCapabilities.model_dump(exclude_none=True) if self.data else None
        if self.tracks or self.data:
            info = await self._request(
                "createWebRtcTransport",
                {"forceTcp": False, "producing": True, "consuming": False, "sctpCapabilities": sctp},
            )
            self.send_transport = self.device.createSendTransport(
                id=info["id"],
                iceParameters=info["iceParameters"],
                iceCandidates=info["iceCandidates"],
                dtlsParameters=info["dtlsParameters"],
                sctpParameters=info["sctpParameters"],
            )
            self._wire(self.send_transport)
        info = await self._request(
            "createWebRtcTransport",
            {"forceTcp": False, "producing": False, "consuming": True, "sctpCapabilities": sctp},
        )
        self.recv_transport = self.device.createRecvTransport(
            id=info["id"],
            iceParameters=info["iceParameters"],
            iceCandidates=info["iceCandidates"],
            dtlsParameters=info["dtlsParameters"],
            sctpParameters=info["sctpParameters"],
        )
        self._wire(self.recv_transport)
        result = await self._request(
            "join",
            {
                "displayName": self.display_name,
                "device": {"flag": "pymediasoup", "name": "aiortc", "version": "1"},
                "rtpCapabilities": self.device.rtpCapabilities.model_dump(exclude_none=True),
                "sctpCapabilities": sctp,
                **self.metadata,
            },
        )
        self.peers = result["peers"]
        for track in self.tracks:
            producer = await self.send_transport.produce(track=track, stopTracks=False, appData={})
            self.producers[producer.id] = producer

    def _wire(self, transport: Any) -> None:
        @transport.on("connect")
        async def on_connect(dtlsParameters: Any) -> None:
            await self._request(
                "connectWebRtcTransport",
                {"transportId": transport.id, "dtlsParameters": dtlsParameters.model_dump(exclude_none=True)},
            )

        @transport.on("produce")
        async def on_produce(kind: str, rtpParameters: Any, appData: dict) -> str:
            result = await self._request(
                "produce",
                {
                    "transportId": transport.id,
                    "kind": kind,
                    "rtpParameters": rtpParameters.model_dump(exclude_none=True),
                    "appData": appData,
                },
            )
            return result["id"]

        @transport.on("producedata")
        async def on_producedata(sctpStreamParameters: Any, label: str, protocol: str, appData: dict) -> str:
            result = await self._request(
                "produceData",
                {
                    "transportId": transport.id,
                    "sctpStreamParameters": sctpStreamParameters.model_dump(exclude_none=True),
                    "label": label,
                    "protocol": protocol,
                    "appData": appData,
                },
            )
            return result["id"]

    async def _on_server_request(self, method: str, data: dict[str, Any]) -> dict[str, Any]:
        if method == "newConsumer":
            async with self._consume_lock:
                consumer = await self.recv_transport.consume(
                    id=data["id"],
                    producerId=data["producerId"],
                    kind=data["kind"],
                    rtpParameters=data["rtpParameters"],
                    appData=data.get("appData"),
                )
            received = Received(data["peerId"], data["producerId"], data["kind"], data["id"])
            self.received[data["id"]] = received
            received.task = asyncio.ensure_future(self._drain(consumer.track, received))
            return {}
        if method == "newDataConsumer":
            async with self._consume_lock:
                data_consumer = await self.recv_transport.consumeData(
                    id=data["id"],
                    dataProducerId=data["dataProducerId"],
                    sctpStreamParameters=data["sctpStreamParameters"],
                    label=data.get("label"),
                    protocol=data.get("protocol"),
                    appData=data.get("appData"),
                )

            self.data_consumers.append(data_consumer)

            @data_consumer.on("message")
            def on_message(message: Any) -> None:
                self.data_messages.append(message)

            return {}
        return {}

    async def _drain(self, track: MediaStreamTrack, received: Received) -> None:
        try:
            while True:
                frame = await track.recv()
                received.frames += 1
                if received.kind == "audio":
                    assert isinstance(frame, av.AudioFrame)
                    received.samples += frame.samples
                else:
                    assert isinstance(frame, av.VideoFrame)
                    received.width = frame.width
                if received.first_frame_at is None:
                    received.first_frame_at = time.monotonic()
                    received.first_frame.set()
        except (MediaStreamError, asyncio.CancelledError):
            pass

    # -- checks -----------------------------------------------------------------------

    def from_peer(self, peer_id: str, kind: str | None = None) -> list[Received]:
        return [r for r in self.received.values() if r.peer_id == peer_id and (kind is None or r.kind == kind)]

    async def wait_media(
        self, peer_id: str, *, video_frames: int = 5, audio_samples: int = 9600, timeout: float = 30
    ) -> None:
        """Until decoded video frames and audio samples from ``peer_id`` arrived."""
        deadline = time.monotonic() + timeout
        while True:
            video = self.from_peer(peer_id, "video")
            audio = self.from_peer(peer_id, "audio")
            if (
                video
                and max(r.frames for r in video) >= video_frames
                and audio
                and max(r.samples for r in audio) >= audio_samples
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.peer_id}: media from {peer_id} missing: "
                    f"video frames {[r.frames for r in video]}, audio samples {[r.samples for r in audio]}"
                )
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        for received in self.received.values():
            if received.task is not None:
                received.task.cancel()
        for transport in (self.send_transport, self.recv_transport):
            if transport is not None:
                try:
                    await asyncio.wait_for(transport.close(), 5)
                except Exception:
                    pass
        for track in self.tracks:
            track.stop()
        if self.protoo is not None and not self.protoo.closed.is_set():
            await self.protoo.close()
        elif self.protoo is not None and self.protoo._own_session:
            await self.protoo.session.close()

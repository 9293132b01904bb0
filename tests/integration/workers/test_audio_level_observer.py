"""AudioLevelObserver, against the real worker (after mediasoup's
test-AudioLevelObserver.ts), plus real audio: opus RTP tagged with the
ssrc-audio-level header extension enters a Producer on a comedia
PlainTransport from a UDP socket, and the observer reports that producer's
volume, then silence once it stops.

The RTP helpers here are shared with ``test_active_speaker_observer.py``.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from typing import Any
from unittest.mock import Mock

import av
import pytest

from workers.errors import MediasoupTypeError, NotFoundError
from workers.router import Router

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
AUDIO_LEVEL_EXT_ID = 10  # the endpoint's id; the router maps it to its own
OPUS_PT = 100
SAMPLES_PER_FRAME = 960  # 20 ms at 48 kHz


# -- audio and RTP helpers (shared with the active speaker tests) ------------------------


def tone_pcm(frames: int, amplitude: float, frequency: float = 440.0) -> list[bytes]:
    """``frames`` 20 ms frames of a stereo s16 sine tone (amplitude 0..1)."""
    result = []
    for index in range(frames):
        samples: list[int] = []
        for k in range(SAMPLES_PER_FRAME):
            value = int(amplitude * 32767 * math.sin(2 * math.pi * frequency * (index * SAMPLES_PER_FRAME + k) / 48000))
            samples += (value, value)
        result.append(struct.pack(f"<{len(samples)}h", *samples))
    return result


def audio_level(pcm: bytes) -> int:
    """RFC 6464 level of a frame: -dBov of its RMS, 0 (loudest) to 127 (silence)."""
    values = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    rms = math.sqrt(sum(v * v for v in values) / len(values))
    if rms == 0:
        return 127
    return min(127, max(0, round(-20 * math.log10(rms / 32768))))


def encode_opus(pcm_frames: list[bytes]) -> list[bytes]:
    """Real opus packets (libopus through PyAV, which aiortc depends on)."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 64000
    packets = []
    for index, pcm in enumerate(pcm_frames):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=SAMPLES_PER_FRAME)
        frame.planes[0].update(pcm)
        frame.sample_rate = 48000
        frame.pts = index * SAMPLES_PER_FRAME
        packets += [bytes(packet) for packet in codec.encode(frame)]
    packets += [bytes(packet) for packet in codec.encode(None)]
    return packets


def rtp_with_audio_level(seq: int, ssrc: int, payload: bytes, level: int, voice: bool = True) -> bytes:
    """An RTP packet with a one-byte header extension (RFC 8285) carrying the level (RFC 6464)."""
    header = struct.pack("!BBHII", 0x90, OPUS_PT, seq & 0xFFFF, seq * SAMPLES_PER_FRAME, ssrc)
    element = bytes([AUDIO_LEVEL_EXT_ID << 4, (0x80 if voice else 0) | level, 0, 0])  # padded to 32 bits
    return header + struct.pack("!HH", 0xBEDE, 1) + element + payload


def opus_rtp_parameters(ssrc: int) -> dict:
    return {
        "codecs": [{"mimeType": "audio/opus", "payloadType": OPUS_PT, "clockRate": 48000, "channels": 2}],
        "headerExtensions": [{"uri": AUDIO_LEVEL_URI, "id": AUDIO_LEVEL_EXT_ID}],
        "encodings": [{"ssrc": ssrc}],
    }


class AudioSender:
    """A comedia PlainTransport with an opus Producer, fed from a UDP socket."""

    def __init__(self, transport, producer, ssrc: int) -> None:
        self.transport = transport
        self.producer = producer
        self.ssrc = ssrc
        self.seq = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._target = (transport.tuple["localAddress"], transport.tuple["localPort"])

    @classmethod
    async def create(cls, router: Router, ssrc: int) -> AudioSender:
        transport = await router.create_plain_transport(
            listen_info={"protocol": "udp", "ip": "127.0.0.1"}, comedia=True
        )
        producer = await transport.produce("audio", opus_rtp_parameters(ssrc))
        return cls(transport, producer, ssrc)

    def send(self, payload: bytes, level: int) -> None:
        self.seq += 1
        self._socket.sendto(rtp_with_audio_level(self.seq, self.ssrc, payload, level), self._target)

    async def play(self, pcm_frames: list[bytes]) -> None:
        """Send the frames as opus in real time, each tagged with its own level."""
        for pcm, payload in zip(pcm_frames, encode_opus(pcm_frames), strict=False):
            self.send(payload, audio_level(pcm))
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self._socket.close()


# -- creation and lifecycle --------------------------------------------------------------


async def test_create_audio_level_observer_succeeds(router: Router) -> None:
    on_new = Mock()
    router.observer.once("newrtpobserver", on_new)
    observer = await router.create_audio_level_observer()

    on_new.assert_called_once_with(observer)
    assert isinstance(observer.id, str)
    assert observer.closed is False and observer.paused is False
    assert observer.type == "audiolevel"
    assert observer.app_data == {}
    assert router.rtp_observers[observer.id] is observer
    assert (await router.dump())["rtpObserverIds"] == [observer.id]


async def test_create_audio_level_observer_with_wrong_arguments_raises_type_error(router: Router) -> None:
    for kwargs in (
        {"max_entries": 0},
        {"max_entries": -10},
        {"threshold": "foo"},
        {"threshold": -128},
        {"threshold": 1},
        {"interval": False},
        {"app_data": "NOT-AN-OBJECT"},
    ):
        with pytest.raises(MediasoupTypeError):
            await router.create_audio_level_observer(**kwargs)
    assert (await router.dump())["rtpObserverIds"] == []


async def test_pause_and_resume(router: Router) -> None:
    observer = await router.create_audio_level_observer()
    on_pause, on_resume = Mock(), Mock()
    observer.observer.on("pause", on_pause)
    observer.observer.on("resume", on_resume)
    await observer.pause()
    assert observer.paused is True
    await observer.pause()
    await observer.resume()
    assert observer.paused is False
    assert on_pause.call_count == 1 and on_resume.call_count == 1


async def test_close(router: Router) -> None:
    observer = await router.create_audio_level_observer(max_entries=8)
    assert len((await router.dump())["rtpObserverIds"]) == 1
    on_close = Mock()
    observer.observer.once("close", on_close)
    observer.close()
    observer.close()  # idempotent
    on_close.assert_called_once_with()
    assert observer.closed and observer.id not in router.rtp_observers
    assert (await router.dump())["rtpObserverIds"] == []


async def test_routerclose_when_the_router_closes(router: Router) -> None:
    observer = await router.create_audio_level_observer()
    on_router_close, on_close = Mock(), Mock()
    observer.once("routerclose", on_router_close)
    observer.observer.once("close", on_close)
    router.close()
    on_router_close.assert_called_once_with()
    on_close.assert_called_once_with()
    assert observer.closed


async def test_routerclose_when_the_worker_closes(worker, router: Router) -> None:
    observer = await router.create_audio_level_observer()
    on_router_close = Mock()
    observer.once("routerclose", on_router_close)
    worker.close()
    on_router_close.assert_called_once_with()
    assert observer.closed


async def test_add_and_remove_producer(router: Router) -> None:
    sender = await AudioSender.create(router, ssrc=1111)
    try:
        observer = await router.create_audio_level_observer()
        added, removed = Mock(), Mock()
        observer.observer.on("addproducer", added)
        observer.observer.on("removeproducer", removed)

        await observer.add_producer(sender.producer.id)
        added.assert_called_once_with(sender.producer)
        dump = await router.dump()
        assert {"key": sender.producer.id, "values": [observer.id]} in dump["mapProducerIdObserverIds"]

        await observer.remove_producer(sender.producer.id)
        removed.assert_called_once_with(sender.producer)
        dump = await router.dump()
        assert {"key": sender.producer.id, "values": []} in dump["mapProducerIdObserverIds"]

        with pytest.raises(NotFoundError):
            await observer.add_producer("unknown-producer")
        with pytest.raises(NotFoundError):
            await observer.remove_producer("unknown-producer")
    finally:
        sender.close()


# -- real audio ---------------------------------------------------------------------------


async def test_volumes_of_a_speaking_producer_then_silence(router: Router) -> None:
    sender = await AudioSender.create(router, ssrc=2222)
    try:
        observer = await router.create_audio_level_observer(interval=300, threshold=-70)
        await observer.add_producer(sender.producer.id)
        events: list[tuple[str, Any]] = []
        observed: list[str] = []
        silence = asyncio.Event()
        observer.on("volumes", lambda volumes: events.append(("volumes", volumes)))
        observer.on("silence", lambda: (events.append(("silence", None)), silence.set()))
        observer.observer.on("volumes", lambda _volumes: observed.append("volumes"))
        observer.observer.on("silence", lambda: observed.append("silence"))

        pcm = tone_pcm(50, amplitude=0.3)  # one second of a 440 Hz tone, about -13 dBov
        expected_volume = -audio_level(pcm[10])
        await sender.play(pcm)
        await asyncio.wait_for(silence.wait(), 3)  # sending stopped: the next interval is silent

        volumes_events = [payload for kind, payload in events if kind == "volumes"]
        assert len(volumes_events) >= 2
        for volumes in volumes_events:
            assert len(volumes) == 1  # max_entries=1
            assert volumes[0]["producer"] is sender.producer
            assert abs(volumes[0]["volume"] - expected_volume) <= 1
        assert events[-1] == ("silence", None)
        assert [kind for kind, _ in events].count("silence") == 1  # silence is notified once
        assert observed == [kind for kind, _ in events]
        assert (await sender.producer.get_stats())[0]["packetCount"] >= 50
    finally:
        sender.close()


async def test_quiet_producer_below_threshold_and_paused_observer_report_nothing(router: Router) -> None:
    sender = await AudioSender.create(router, ssrc=3333)
    try:
        observer = await router.create_audio_level_observer(interval=250, threshold=-30)
        await observer.add_producer(sender.producer.id)
        events: list[str] = []
        observer.on("volumes", lambda _volumes: events.append("volumes"))
        observer.on("silence", lambda: events.append("silence"))

        await sender.play(tone_pcm(20, amplitude=0.001))  # about -63 dBov: under -30
        await asyncio.sleep(0.3)
        assert events == []  # never loud, so never a change to silence either

        await observer.pause()
        await sender.play(tone_pcm(20, amplitude=0.5))
        await asyncio.sleep(0.3)
        assert events == []
    finally:
        sender.close()


async def test_volumes_rank_the_loudest_producers(router: Router) -> None:
    loud, quiet = await AudioSender.create(router, ssrc=4444), await AudioSender.create(router, ssrc=5555)
    try:
        observer = await router.create_audio_level_observer(max_entries=2, interval=300)
        await observer.add_producer(loud.producer.id)
        await observer.add_producer(quiet.producer.id)
        got: asyncio.Future = asyncio.get_running_loop().create_future()
        observer.on("volumes", lambda volumes: len(volumes) == 2 and not got.done() and got.set_result(volumes))

        loud_pcm, quiet_pcm = tone_pcm(30, amplitude=0.5), tone_pcm(30, amplitude=0.02)
        loud_opus, quiet_opus = encode_opus(loud_pcm), encode_opus(quiet_pcm)
        for index in range(30):
            loud.send(loud_opus[index], audio_level(loud_pcm[index]))
            quiet.send(quiet_opus[index], audio_level(quiet_pcm[index]))
            await asyncio.sleep(0.02)
        volumes = await asyncio.wait_for(got, 2)

        assert [entry["producer"] for entry in volumes] == [loud.producer, quiet.producer]
        assert volumes[0]["volume"] > volumes[1]["volume"]
    finally:
        loud.close()
        quiet.close()

"""ActiveSpeakerObserver, against the real worker (after mediasoup's
test-ActiveSpeakerObserver.ts), plus real audio.

What the worker does, as observed with this build: with one producer
observed, that producer is announced dominant at the next interval, audio or
not. When a second producer is added and speaks (opus tagged with
ssrc-audio-level) while the first sends only silence, dominance moves to it
after well under two seconds of speech (about 0.7 s here, at interval=100).
"""

from __future__ import annotations

import asyncio
from unittest.mock import Mock

import pytest

from tests.integration.workers.test_audio_level_observer import AudioSender, audio_level, encode_opus, tone_pcm
from workers.errors import MediasoupTypeError, NotFoundError
from workers.router import Router


class DominantSpeakers:
    def __init__(self, observer) -> None:
        self.producers: list = []
        self._changed = asyncio.Event()
        observer.on("dominantspeaker", self._on_dominant_speaker)

    def _on_dominant_speaker(self, dominant_speaker: dict) -> None:
        self.producers.append(dominant_speaker["producer"])
        self._changed.set()

    async def wait_for(self, producer, timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.producers or self.producers[-1] is not producer:
                self._changed.clear()
                await self._changed.wait()


# -- creation and lifecycle --------------------------------------------------------------


async def test_create_active_speaker_observer_succeeds(router: Router) -> None:
    on_new = Mock()
    router.observer.once("newrtpobserver", on_new)
    observer = await router.create_active_speaker_observer()

    on_new.assert_called_once_with(observer)
    assert isinstance(observer.id, str)
    assert observer.closed is False and observer.paused is False
    assert observer.type == "activespeaker"
    assert observer.app_data == {}
    assert (await router.dump())["rtpObserverIds"] == [observer.id]


async def test_create_active_speaker_observer_with_wrong_arguments_raises_type_error(router: Router) -> None:
    with pytest.raises(MediasoupTypeError):
        await router.create_active_speaker_observer(interval=False)
    with pytest.raises(MediasoupTypeError):
        await router.create_active_speaker_observer(app_data="NOT-AN-OBJECT")  # type: ignore[arg-type]
    assert (await router.dump())["rtpObserverIds"] == []


async def test_pause_and_resume(router: Router) -> None:
    observer = await router.create_active_speaker_observer()
    await observer.pause()
    assert observer.paused is True
    await observer.resume()
    assert observer.paused is False


async def test_close(router: Router) -> None:
    observer = await router.create_active_speaker_observer()
    assert len((await router.dump())["rtpObserverIds"]) == 1
    observer.close()
    assert observer.closed and observer.id not in router.rtp_observers
    assert (await router.dump())["rtpObserverIds"] == []


async def test_routerclose_when_the_router_closes(router: Router) -> None:
    observer = await router.create_active_speaker_observer()
    on_router_close = Mock()
    observer.once("routerclose", on_router_close)
    router.close()
    on_router_close.assert_called_once_with()
    assert observer.closed


async def test_routerclose_when_the_worker_closes(worker, router: Router) -> None:
    observer = await router.create_active_speaker_observer()
    on_router_close = Mock()
    observer.once("routerclose", on_router_close)
    worker.close()
    on_router_close.assert_called_once_with()
    assert observer.closed


async def test_add_unknown_producer_raises_not_found(router: Router) -> None:
    observer = await router.create_active_speaker_observer()
    with pytest.raises(NotFoundError):
        await observer.add_producer("unknown-producer")


# -- real audio ---------------------------------------------------------------------------


async def test_single_producer_is_dominant(router: Router) -> None:
    sender = await AudioSender.create(router, ssrc=1111)
    try:
        observer = await router.create_active_speaker_observer(interval=100)
        speakers = DominantSpeakers(observer)
        observed = Mock()
        observer.observer.on("dominantspeaker", observed)
        await observer.add_producer(sender.producer.id)
        await speakers.wait_for(sender.producer, timeout=2)
        observed.assert_called_once_with({"producer": sender.producer})
    finally:
        sender.close()


async def test_dominance_moves_to_the_producer_that_speaks(router: Router) -> None:
    silent, speaker = await AudioSender.create(router, ssrc=2222), await AudioSender.create(router, ssrc=3333)
    try:
        observer = await router.create_active_speaker_observer(interval=100)
        speakers = DominantSpeakers(observer)
        await observer.add_producer(silent.producer.id)
        await speakers.wait_for(silent.producer, timeout=2)  # alone, so dominant
        await observer.add_producer(speaker.producer.id)

        # Speech-like: a tone whose loudness changes every half second.
        pcm = []
        for amplitude in (0.5, 0.1, 0.6, 0.2, 0.5, 0.1, 0.6, 0.2):
            pcm += tone_pcm(25, amplitude)
        silence_opus = encode_opus(tone_pcm(1, 0.0))[0]
        speech_opus = encode_opus(pcm)

        async def talk() -> None:
            for index, frame in enumerate(pcm):
                silent.send(silence_opus, 127)
                speaker.send(speech_opus[index], audio_level(frame))
                await asyncio.sleep(0.02)

        # Control: while both only send silence, dominance stays where it is.
        for _ in range(25):
            silent.send(silence_opus, 127)
            speaker.send(silence_opus, 127)
            await asyncio.sleep(0.02)
        assert speakers.producers == [silent.producer]

        talking = asyncio.ensure_future(talk())
        try:
            await speakers.wait_for(speaker.producer, timeout=4)
        finally:
            talking.cancel()
        assert speakers.producers == [silent.producer, speaker.producer]
    finally:
        silent.close()
        speaker.close()

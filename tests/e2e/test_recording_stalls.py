"""A camera that stops sending without pausing (network loss) does not stall the
recording: real aiortc peers, bob's video track stops giving frames (his producer
stays open and unpaused) while alice goes on; the recorder notices within about a
second and shows bob as a name card, alice's video and everyone's audio go on
without a hole, and bob's picture comes back once he sends again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import av
import pytest

from tests.e2e.harness import running_server
from tests.e2e.recording_helpers import (
    CARD,
    PEOPLE,
    RED,
    SolidTrack,
    _assert_red_green,
    _close,
    _inside,
    _peer,
    _stored,
    codecs_and_duration,
    frame_at,
    largest_hole,
    longest_silence,
    packets,
    pcm,
    pixel,
    silence_allowed,
    zero_before,
)

pytestmark = pytest.mark.timeout(180)


class StallingTrack(SolidTrack):
    """A solid colour track whose frames stop while :attr:`sending` is clear (no
    RTP at all, as when the network drops), then go on at the usual pace."""

    def __init__(self, yuv: tuple[int, int, int]) -> None:
        super().__init__(yuv)
        self.sending = asyncio.Event()
        self.sending.set()

    async def recv(self) -> av.VideoFrame:
        if not self.sending.is_set():
            stalled = time.monotonic()
            await self.sending.wait()
            if self._start is not None:  # no burst of catching-up frames afterwards
                self._start += time.monotonic() - stalled
        return await super().recv()


async def test_a_camera_that_stops_sending_becomes_a_name_card(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        alice, bob = (_peer(server, "stall", i) for i in range(2))
        camera = StallingTrack(PEOPLE[1][1])
        bob.tracks = [bob.tracks[0], camera]
        try:
            for peer in (alice, bob):
                await peer.join()
            await alice.wait_media("bob", timeout=45)
            await bob.wait_media("alice", timeout=45)

            async with aiohttp.ClientSession() as http:
                async with http.post(f"{server.base_url}/api/rooms/stall/recording") as response:
                    assert response.status == 201, await response.text()
            t0 = time.monotonic()
            await asyncio.sleep(4)

            stalled = time.monotonic() - t0
            camera.sending.clear()
            await asyncio.sleep(6)

            resumed = time.monotonic() - t0
            camera.sending.set()
            await asyncio.sleep(5)

            lag = zero_before(server, "stall", t0)  # the recording began before t0
            wall = time.monotonic() - t0
            stopped = await alice.signaling.request("stopRecording", {}, timeout=60)
            path = await _stored(server, stopped["key"])
        finally:
            for peer in (alice, bob):
                await peer.close()

    timeline = f"stalled at {stalled:.2f} s, resumed at {resumed:.2f} s, stop at {wall:.2f} s; answer {stopped}"
    assert stopped["segments"] >= 3, timeline
    codecs, duration = await asyncio.to_thread(codecs_and_duration, path)
    assert codecs == ["aac", "h264"]
    assert wall - 0.2 <= duration <= wall + lag + 1.0, (duration, timeline)

    (await asyncio.to_thread(_assert_red_green, path, lag, stalled, timeline))
    # Noticed within about a second: from then on alice is red, bob a name card.
    for at in _inside(stalled + 0.5 + lag, resumed, count=3):
        raw = await asyncio.to_thread(frame_at, path, at)
        corners = [pixel(raw, x, y) for x, y in ((330, 10), (630, 10), (330, 350), (630, 350))]
        assert _close(pixel(raw, 160, 180), RED), (at, pixel(raw, 160, 180), timeline)
        assert all(_close(c, CARD, 10) for c in corners), (at, corners, timeline)
    (await asyncio.to_thread(_assert_red_green, path, resumed + lag, duration, timeline))

    # alice's video never waited for bob's: no frame further than two frame
    # intervals from the one before; and the audio went on all the time.
    video = await asyncio.to_thread(packets, path, "v:0")
    assert largest_hole(video) <= 1 / 15 + 0.001, (largest_hole(video), timeline)
    audio = await asyncio.to_thread(packets, path, "a:0")
    assert largest_hole(audio) <= 0.020, (largest_hole(audio), timeline)
    # Silence only where neither sent (a starved test drops microphone frames: ToneTrack).
    origin = t0 - lag  # the recording's zero, monotonic
    allowed = silence_allowed([alice, bob], origin + 0.3, origin + duration - 0.3)
    silence = await asyncio.to_thread(longest_silence, await asyncio.to_thread(pcm, path, 0.3, duration - 0.6))
    assert silence <= allowed, (silence, allowed, timeline)

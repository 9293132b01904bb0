"""The recording follows the room: real WebRTC peers (aiortc) join, leave and mute
while the room is recorded, and the one MP4 shows each layout in turn, with the
audio of whoever was there.

Times are measured from the ``startRecording`` answer; the recording's zero (its
first media) is before it, so a moment of the test is ``lag`` later in the MP4 (read
from the live recording's manifest, ``zero_before``): each phase starts and ends ``lag`` later
and is checked well inside its bounds (1.5 s from the moment the test made the
change), since a new layout appears once the new segment's FFmpeg records, a few
hundred milliseconds after the change."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import running_server
from tests.e2e.media_peer import MediaPeer
from tests.e2e.recording_helpers import (
    BLACK,
    BLUE,
    CARD,
    GREEN,
    LEFT,
    LEFT_TOP_BAR,
    MARGIN,
    OFF_TONES,
    PEOPLE,
    QUADRANTS,
    RED,
    _assert_red_green,
    _close,
    _inside,
    _peer,
    _side_by_side,
    _stored,
    audio_samples,
    bright_pixels,
    clean_ratio,
    codecs_and_duration,
    frame_at,
    largest_hole,
    longest_silence,
    packets,
    pcm,
    pixel,
    sent_in,
    silence_allowed,
    tones,
    zero_before,
)

pytestmark = pytest.mark.timeout(180)


def _window(start: float, end: float) -> tuple[float, float]:
    """(offset, length) of the audio well inside a phase."""
    return start + MARGIN, end - start - 2 * MARGIN


async def test_a_join_and_a_leave_change_the_layout(tmp_path: Path) -> None:
    """alice+bob side by side (red|green); carol joins: 2x2 (red, green, blue, black);
    alice leaves: side by side (green|blue). The tones follow the same people."""
    async with running_server(tmp_path) as server:
        alice, bob, carol = (_peer(server, "changes", i) for i in range(3))
        try:
            for peer in (alice, bob):
                await peer.join()
            await alice.wait_media("bob", timeout=45)
            await bob.wait_media("alice", timeout=45)

            info = await bob.signaling.request("startRecording", {}, timeout=30)
            t0 = time.monotonic()
            assert set(info) == {"recordingId", "startedAt"}
            await asyncio.sleep(5)

            joining = time.monotonic() - t0
            await carol.join()
            joined = time.monotonic() - t0
            await asyncio.sleep(6)

            leaving = time.monotonic() - t0
            await alice.close()
            left = time.monotonic() - t0
            await asyncio.sleep(5)

            lag = zero_before(server, "changes", t0)  # the recording began before t0
            wall = time.monotonic() - t0
            stopped = await bob.signaling.request("stopRecording", {}, timeout=60)
            path = await _stored(server, stopped["key"])
        finally:
            for peer in (alice, bob, carol):
                await peer.close()

    timeline = (
        f"carol joined {joining:.2f}-{joined:.2f} s, alice left {leaving:.2f}-{left:.2f} s, "
        f"stop at {wall:.2f} s; answer {stopped}"
    )
    assert stopped["recordingId"] == info["recordingId"]
    assert stopped["segments"] >= 3, timeline
    assert wall - 0.2 <= stopped["duration"] <= wall + lag + 1.0, timeline
    codecs, duration = await asyncio.to_thread(codecs_and_duration, path)
    assert codecs == ["aac", "h264"]
    assert abs(duration - stopped["duration"]) <= 0.1, (duration, timeline)

    # 1. alice | bob
    (await asyncio.to_thread(_assert_red_green, path, lag, joining + lag, timeline))
    # 2. alice, bob / carol, nobody
    for at in _inside(joined + lag, leaving + lag):
        raw = await asyncio.to_thread(frame_at, path, at)
        quads = [pixel(raw, x, y) for x, y in QUADRANTS]
        assert (
            _close(quads[0], RED) and _close(quads[1], GREEN) and _close(quads[2], BLUE) and _close(quads[3], BLACK, 20)
        ), (at, quads, timeline)
    # 3. bob | carol
    for at in _inside(left + lag, duration):
        left_tile, right_tile, bar = await asyncio.to_thread(_side_by_side, path, at)
        assert _close(left_tile, GREEN) and _close(right_tile, BLUE) and _close(bar, BLACK, 20), (
            at,
            left_tile,
            right_tile,
            bar,
            timeline,
        )

    # The mix: who is there is heard, who is not is not; each as much as they sent (a
    # starved test process drops microphone frames: media_peer.ToneTrack).
    sent = {name: tone for name, *_rest, tone in PEOPLE}
    peers = {"alice": alice, "bob": bob, "carol": carol}
    origin = t0 - lag  # the recording's zero, monotonic
    for (start, end), present in [
        ((lag, joining + lag), {"alice", "bob"}),
        ((joined + lag, leaving + lag), {"alice", "bob", "carol"}),
        ((left + lag, duration), {"bob", "carol"}),
    ]:
        offset, length = _window(start, end)
        heard = await asyncio.to_thread(
            tones,
            (await asyncio.to_thread(audio_samples, path, offset, length)),
            tuple(sent.values()) + OFF_TONES,
        )
        loudest = max(heard[sent[name]] for name in present)
        noise = max(heard[f] for f in OFF_TONES)
        parts = {name: sent_in(peers[name], origin + offset, origin + offset + length) for name in present}
        ratio = clean_ratio(list(parts.values()))
        for name, tone in sent.items():
            if name in present:
                part = parts[name]
                assert heard[tone] > 2000 * part and heard[tone] > ratio * noise, (
                    start,
                    end,
                    name,
                    part,
                    heard,
                    timeline,
                )
            else:
                assert heard[tone] < loudest / 50, (start, end, name, heard, timeline)


async def _pause_video(peer: MediaPeer, pause: bool) -> None:
    producer = next(p for p in peer.producers.values() if p.kind == "video")
    if pause:
        producer.pause()
        await peer.signaling.request("pauseProducer", {"producerId": producer.id}, timeout=10)
    else:
        await peer.signaling.request("resumeProducer", {"producerId": producer.id}, timeout=10)
        producer.resume()


async def test_a_muted_camera_becomes_a_name_card(tmp_path: Path) -> None:
    """bob pauses his camera: his tile is a dark grey card with his name in white
    (alice stays red beside it, bob is still heard); he resumes: green again."""
    async with running_server(tmp_path) as server:
        alice, bob = (_peer(server, "mute", i) for i in range(2))
        try:
            for peer in (alice, bob):
                await peer.join()
            await alice.wait_media("bob", timeout=45)
            await bob.wait_media("alice", timeout=45)

            async with aiohttp.ClientSession() as http:
                async with http.post(f"{server.base_url}/api/rooms/mute/recording") as response:
                    assert response.status == 201, await response.text()
            t0 = time.monotonic()
            await asyncio.sleep(4)

            pausing = time.monotonic() - t0
            await _pause_video(bob, True)
            paused = time.monotonic() - t0
            await asyncio.sleep(5)

            resuming = time.monotonic() - t0
            await _pause_video(bob, False)
            resumed = time.monotonic() - t0
            await asyncio.sleep(5)

            lag = zero_before(server, "mute", t0)  # the recording began before t0
            wall = time.monotonic() - t0
            stopped = await alice.signaling.request("stopRecording", {}, timeout=60)
            path = await _stored(server, stopped["key"])
        finally:
            for peer in (alice, bob):
                await peer.close()

    timeline = (
        f"paused {pausing:.2f}-{paused:.2f} s, resumed {resuming:.2f}-{resumed:.2f} s, "
        f"stop at {wall:.2f} s; answer {stopped}"
    )
    assert stopped["segments"] >= 3, timeline
    codecs, duration = await asyncio.to_thread(codecs_and_duration, path)
    assert codecs == ["aac", "h264"]
    assert wall - 0.2 <= duration <= wall + lag + 1.0, (duration, timeline)

    (await asyncio.to_thread(_assert_red_green, path, lag, pausing + lag, timeline))
    for at in _inside(paused + lag, resuming + lag):
        raw = await asyncio.to_thread(frame_at, path, at)
        left_tile, bar = pixel(raw, *LEFT), pixel(raw, *LEFT_TOP_BAR)
        # bob's card fills its whole 320x360 tile: corners dark grey, not black.
        corners = [pixel(raw, x, y) for x, y in ((330, 10), (630, 10), (330, 350), (630, 350))]
        text = bright_pixels(raw, 330, 120, 630, 240)
        assert _close(left_tile, RED) and _close(bar, BLACK, 20), (at, left_tile, bar, timeline)
        assert all(_close(c, CARD, 10) for c in corners), (at, corners, timeline)
        assert text >= 100, (at, text, timeline)  # the name, in white
    for at in _inside(resumed + lag, duration):
        left_tile, right_tile, bar = await asyncio.to_thread(_side_by_side, path, at)
        assert _close(left_tile, RED) and _close(right_tile, GREEN) and _close(bar, BLACK, 20), (
            at,
            left_tile,
            right_tile,
            bar,
            timeline,
        )

    # No audio lost in any phase (issue 17: a segment showing a name card delivered
    # 1.4 s of audio and then none; the MP4 closed the hole, and the tone check read the
    # next phase's audio): both send a tone all the time, so any silence is a loss.
    audio = await asyncio.to_thread(packets, path, "a:0")
    assert largest_hole(audio) <= 0.020, (largest_hole(audio), timeline)
    # Silence only where neither sent (a starved test drops microphone frames).
    origin = t0 - lag
    allowed = silence_allowed([alice, bob], origin + 0.3, origin + duration - 0.3)
    silence = await asyncio.to_thread(longest_silence, await asyncio.to_thread(pcm, path, 0.3, duration - 0.6))
    assert silence <= allowed, (silence, allowed, timeline)
    # ... nor video: no frame further than two frame intervals from the one before.
    video = await asyncio.to_thread(packets, path, "v:0")
    assert largest_hole(video) <= 1 / 15 + 0.001, (largest_hole(video), timeline)

    # A muted camera does not mute the microphone.
    offset, length = _window(paused + lag, resuming + lag)
    heard = await asyncio.to_thread(
        tones,
        (await asyncio.to_thread(audio_samples, path, offset, length)),
        (440.0, 660.0) + OFF_TONES,
    )
    noise = max(heard[f] for f in OFF_TONES)
    parts = [sent_in(peer, origin + offset, origin + offset + length) for peer in (alice, bob)]
    assert heard[440.0] > 2000 * parts[0] and heard[660.0] > 2000 * parts[1], (heard, parts, timeline)
    assert min(heard[440.0], heard[660.0]) > clean_ratio(parts) * noise, (heard, parts, timeline)

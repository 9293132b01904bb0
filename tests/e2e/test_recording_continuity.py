"""Nothing lost at layout changes: a join, a mute and a leave while the room is
recorded (real aiortc peers, the real worker, FFmpeg/ffprobe), and the composite
lasts as long as the recording, its audio has no hole over 20 ms (packet
timestamps and samples), its video none over two frame intervals; each
participant's stem holds their tone (silent while muted); the timeline and the
``recording.completed`` event list them."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.keys import OBJECTS
from control.storage.local import LocalStorage
from tests.e2e.harness import running_server
from tests.e2e.media_peer import MediaPeer
from tests.e2e.recording_helpers import (
    _peer,
    _stored,
    largest_hole,
    longest_silence,
    packets,
    pcm,
    sent_in,
    silence_allowed,
    tone_amplitude,
    zero_before,
)

pytestmark = pytest.mark.timeout(240)

FPS = 15
RATE = 8000  # recording_helpers.pcm's rate


async def _pause_audio(peer: MediaPeer, pause: bool) -> None:
    producer = next(p for p in peer.producers.values() if p.kind == "audio")
    method = "pauseProducer" if pause else "resumeProducer"
    await peer.signaling.request(method, {"producerId": producer.id}, timeout=10)


async def _completed_event(base_url: str, timeout: float = 30) -> dict[str, Any]:
    """``recording.completed`` from the outbox, once there: it is published by the
    MP4's upload hook, which may finish after the file is in the store."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{base_url}/api/events/outbox") as response:
                outbox = await response.json()
            found = [e["event"] for e in outbox["events"] if e["type"] == "recording.completed"]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no recording.completed in the outbox in {timeout:.0f} s"
            await asyncio.sleep(0.2)


async def test_a_join_a_mute_and_a_leave_lose_nothing(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        alice, bob, carol = (_peer(server, "whole", i) for i in range(3))
        try:
            for peer in (alice, bob):
                await peer.join()
            await alice.wait_media("bob", timeout=45)
            await bob.wait_media("alice", timeout=45)

            asked = time.monotonic()
            info = await bob.signaling.request("startRecording", {}, timeout=30)
            t0 = time.monotonic()
            t0_wall = time.time()
            await asyncio.sleep(3)
            await carol.join()
            joined = time.monotonic() - t0
            await asyncio.sleep(3)
            muting = time.monotonic() - t0
            await _pause_audio(bob, True)
            await asyncio.sleep(3)
            unmuting = time.monotonic() - t0
            await _pause_audio(bob, False)
            await asyncio.sleep(2)
            leaving = time.monotonic() - t0
            await alice.close()
            await asyncio.sleep(3)
            lag = zero_before(server, "whole", t0)  # the recording began before t0
            wall = time.monotonic() - t0
            stopped = await bob.signaling.request("stopRecording", {}, timeout=60)
            path = await _stored(server, stopped["key"])
            event = await _completed_event(server.base_url)
            store = server.app[OBJECTS]
            assert isinstance(store, LocalStorage), "the e2e server stores objects locally"
        finally:
            for peer in (alice, bob, carol):
                await peer.close()

    story = (
        f"carol joined {joined:.2f} s, bob muted {muting:.2f}-{unmuting:.2f} s, alice left {leaving:.2f} s, "
        f"stop {wall:.2f} s; {stopped}"
    )
    # 1. As long as the recording.
    duration = float(
        json.loads(
            (
                await asyncio.to_thread(
                    subprocess.run,
                    ["ffprobe", "-v", "error", "-show_format", "-of", "json", str(path)],
                    check=True,
                    capture_output=True,
                )
            ).stdout
        )["format"]["duration"]
    )
    # The recording begins between the request and its answer (its first media): the
    # composite lasts from then to the stop, within 0.2 s.
    since_asked = wall + (t0 - asked)
    assert wall - 0.2 <= duration <= since_asked + 0.2, (duration, since_asked, story)

    # 2. Audio: no hole in the packets, no silence in the samples (someone always sends a tone).
    audio = await asyncio.to_thread(packets, path, "a:0")
    assert largest_hole(audio) <= 0.020, (largest_hole(audio), story)
    assert audio[-1][0] + audio[-1][1] >= wall - 0.2, (audio[-1], story)
    # Silence only where nobody sent: a starved test drops microphone frames (ToneTrack).
    origin = t0 - lag  # the recording's zero, monotonic
    allowed = silence_allowed([alice, bob, carol], origin + 0.3, origin + duration - 0.3)
    silence = await asyncio.to_thread(longest_silence, await asyncio.to_thread(pcm, path, 0.3, duration - 0.6))
    assert silence <= allowed, (silence, allowed, story)

    # 3. Video: no hole over two frame intervals (at the leave, the old segment's grid
    # waits for the closed input; its frames are drained when its input ends).
    video = await asyncio.to_thread(packets, path, "v:0")
    holes = [b[0] - a[0] for a, b in itertools.pairwise(video)]
    big = [(round(video[i][0], 2), round(h, 3)) for i, h in enumerate(holes) if h > 2 / FPS + 0.001]
    assert not big, (big, story)
    # The composite starts with its first media (the stems start before the first
    # segment, which began before the start was answered).
    assert video[0][0] <= (t0 - asked) + 0.5 and video[-1][0] >= wall - 0.5, (video[0], video[-1], story)

    # 4. The event: the composite as before, plus one track per participant and the timeline.
    data = event["data"]
    assert data["object"]["key"] == stopped["key"] and data["recordingId"] == info["recordingId"]
    folder = f"recordings/whole/{info['recordingId']}/"
    tracks = {t["peerId"]: t for t in data["tracks"]}
    assert set(tracks) == {"alice", "bob", "carol"}, data["tracks"]
    for peer_id, track in tracks.items():
        assert track["displayName"] == peer_id.title() and track["kind"] == "audio", track
        assert track["object"]["key"].startswith(folder) and track["object"]["contentType"] == "audio/ogg", track
        assert track["durationMs"] > 0, track
    # Offsets count from the composite's zero, up to (t0 - asked) before the test's zero.
    assert -1.0 <= tracks["carol"]["offsetMs"] / 1000 - joined <= 1.0 + (t0 - asked), (tracks["carol"], story)
    # Those there at the start: their stems begin inside the composite (none of their
    # audio cut), before the start was answered; the composite begins with the first media.
    starts = [tracks[p]["offsetMs"] for p in ("alice", "bob")]
    assert all(0 <= at <= (t0 - asked) * 1000 + 100 for at in starts), data["tracks"]
    assert min([*starts, video[0][0] * 1000]) <= 1, (starts, video[0], story)
    assert data["timeline"]["key"] == folder + "timeline.json"

    # 5. Each stem: its own tone; bob's silent while muted.
    tones = {"alice": 440.0, "bob": 660.0, "carol": 880.0}
    peers = {"alice": alice, "bob": bob, "carol": carol}
    for peer_id, track in tracks.items():
        stem = store.path_for(track["object"]["key"])
        samples = await asyncio.to_thread(pcm, stem, 0.5, 2.0)
        heard = {f: (await asyncio.to_thread(tone_amplitude, samples, f, RATE)) for f in (440.0, 660.0, 880.0, 550.0)}
        at = origin + track["offsetMs"] / 1000 + 0.5
        part = sent_in(peers[peer_id], at, at + 2.0)
        assert heard[tones[peer_id]] > 2000 * part and heard[tones[peer_id]] > 50 * heard[550.0], (peer_id, part, heard)
    bob_stem = store.path_for(tracks["bob"]["object"]["key"])
    # The test's zero in the composite (which starts with its first media, before it).
    document: dict[str, Any] = json.loads(store.path_for(data["timeline"]["key"]).read_text())
    shift = t0_wall - datetime.fromisoformat(document["startedAt"].replace("Z", "+00:00")).timestamp()
    assert -0.05 <= shift <= (t0 - asked) + 0.05, (shift, story)
    start = muting + shift + 0.8 - tracks["bob"]["offsetMs"] / 1000
    muted = await asyncio.to_thread(pcm, bob_stem, start, unmuting - muting - 1.6)
    assert muted and (await asyncio.to_thread(tone_amplitude, muted, 660.0, RATE)) < 100, story
    stem_audio = await asyncio.to_thread(packets, bob_stem, "a:0")
    assert largest_hole(stem_audio) <= 0.020, largest_hole(stem_audio)

    # 6. The timeline.
    kinds = [(e["type"], e["peerId"]) for e in document["events"]]
    for expected in [("join", "alice"), ("join", "bob"), ("join", "carol"), ("mute", "bob"), ("unmute", "bob")]:
        assert expected in kinds, (expected, kinds)
    assert ("leave", "alice") in kinds, kinds
    at = {(e["type"], e["peerId"]): e["atMs"] / 1000 for e in document["events"]}
    # The timeline counts from the composite's first instant, which is up to (t0 - asked)
    # before the test's zero; an event is recorded once the server has handled the action.
    late = 0.5 + (t0 - asked)
    assert 3.0 - 0.1 <= at[("join", "carol")] <= joined + late, (at, story)  # joined: after her join
    assert muting - 0.1 <= at[("mute", "bob")] <= muting + late, (at, story)  # muting: before the request
    assert leaving - 0.1 <= at[("leave", "alice")] <= leaving + late, (at, story)  # leaving: before she left
    # The recording's length, as the stop said; the MP4 ends within a frame of it (AAC
    # frames are 21.3 ms, video frames 66.7 ms).
    assert abs(document["durationMs"] - stopped["duration"] * 1000) <= 1, (document["durationMs"], stopped)
    assert abs(document["durationMs"] / 1000 - duration) <= 0.1, (document["durationMs"], duration)
    assert document["activeSpeakers"], document
    for interval in document["activeSpeakers"]:
        assert 0 <= interval["startMs"] < interval["endMs"] <= document["durationMs"], interval

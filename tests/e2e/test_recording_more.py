"""The recording follows a screen share, and survives the room's media worker dying.

Real aiortc/pymediasoup peers send solid colours and tones; the MP4 the local
store ends up with is read back (ffprobe, pixels). Times are measured from the
``startRecording`` answer; each phase is checked well inside its bounds
(:data:`MARGIN` from the moment the test made the change)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from control.recording import RECORDINGS
from tests.e2e.harness import running_server
from tests.e2e.media_peer import MediaPeer
from tests.e2e.recording_helpers import (
    BLACK,
    CARD,
    GREEN,
    LEFT,
    LEFT_CORNER,
    MARGIN,
    OFF_TONES,
    QUADRANTS,
    RED,
    RIGHT,
    RIGHT_CORNER,
    SolidTrack,
    _assert_red_green,
    _close,
    _inside,
    _peer,
    _stored,
    audio_samples,
    clean_ratio,
    codecs_and_duration,
    frame_at,
    pixel,
    sent_in,
    tones,
    zero_before,
)

pytestmark = pytest.mark.timeout(180)

#: How long the peers wait after the worker died before they reconnect.
GAP = 4.0

#: The screen share: solid yellow (YUV) and what it decodes to (RGB).
YELLOW_YUV, YELLOW = (210, 16, 146), (255, 255, 0)


async def _wait_frames(peer: MediaPeer, from_peer: str, videos: int, frames: int = 5, timeout: float = 20) -> None:
    """Until ``peer`` decoded ``frames`` frames of each of ``videos`` videos of ``from_peer``."""
    deadline = time.monotonic() + timeout
    while True:
        counts = sorted((r.frames for r in peer.from_peer(from_peer, "video")), reverse=True)
        if len(counts) >= videos and counts[videos - 1] >= frames:
            return
        assert time.monotonic() < deadline, f"{peer.peer_id}: videos of {from_peer}: {counts}"
        await asyncio.sleep(0.1)


# -- a screen share ------------------------------------------------------------------------


async def _share(peer: MediaPeer, yuv: tuple[int, int, int]) -> Any:
    """A second video producer, as a browser's screen share (appData ``share``)."""
    track = SolidTrack(yuv)
    peer.tracks.append(track)  # stopped with the peer
    producer = await peer.send_transport.produce(track=track, stopTracks=False, appData={"share": True})
    peer.producers[producer.id] = producer
    return producer


async def _unshare(peer: MediaPeer, producer: Any) -> None:
    """The share stops: closed on the server (``closeProducer``), then locally."""
    assert peer.protoo is not None
    await peer.protoo.request("closeProducer", {"producerId": producer.id}, timeout=10)
    await producer.close()
    peer.producers.pop(producer.id, None)
    producer.track.stop()


async def test_a_screen_share_gets_its_own_tile(tmp_path: Path) -> None:
    """alice (red) | bob (green); alice shares her screen (yellow): 2x2 with alice's
    camera, alice's share, bob's camera, black; the share stops: red | green again."""
    async with running_server(tmp_path) as server:
        alice, bob = (_peer(server, "share", i) for i in range(2))
        try:
            for peer in (alice, bob):
                await peer.join()
            await alice.wait_media("bob", timeout=45)
            await bob.wait_media("alice", timeout=45)

            info = await bob.signaling.request("startRecording", {}, timeout=30)
            t0 = time.monotonic()
            await asyncio.sleep(4)

            sharing = time.monotonic() - t0
            share = await _share(alice, YELLOW_YUV)
            shared = time.monotonic() - t0
            await _wait_frames(bob, "alice", videos=2)  # the share really flows
            await asyncio.sleep(max(0.0, 5 - (time.monotonic() - t0 - shared)))

            unsharing = time.monotonic() - t0
            await _unshare(alice, share)
            unshared = time.monotonic() - t0
            await asyncio.sleep(4.5)

            lag = zero_before(server, "share", t0)  # the recording began before t0
            wall = time.monotonic() - t0
            stopped = await alice.signaling.request("stopRecording", {}, timeout=60)
            path = await _stored(server, stopped["key"])
        finally:
            for peer in (alice, bob):
                await peer.close()

    timeline = (
        f"share {sharing:.2f}-{shared:.2f} s, unshare {unsharing:.2f}-{unshared:.2f} s, "
        f"stop at {wall:.2f} s; answer {stopped}"
    )
    assert stopped["recordingId"] == info["recordingId"]
    assert stopped["segments"] >= 3, timeline
    assert wall - 0.2 <= stopped["duration"] <= wall + lag + 1.0, timeline
    codecs, duration = await asyncio.to_thread(codecs_and_duration, path)
    assert codecs == ["aac", "h264"]
    assert wall - 0.2 <= duration <= wall + lag + 1.0, (duration, timeline)

    # 1. alice | bob
    (await asyncio.to_thread(_assert_red_green, path, lag, sharing, timeline))
    # 2. alice's camera, alice's share / bob's camera, nobody
    for at in _inside(shared + lag, unsharing):
        raw = await asyncio.to_thread(frame_at, path, at)
        quads = [pixel(raw, x, y) for x, y in QUADRANTS]
        assert (
            _close(quads[0], RED)
            and _close(quads[1], YELLOW)
            and _close(quads[2], GREEN)
            and _close(quads[3], BLACK, 20)
        ), (at, quads, timeline)
    # 3. alice | bob again
    (await asyncio.to_thread(_assert_red_green, path, unshared + lag, duration, timeline))


# -- the room's worker dies ----------------------------------------------------------------


async def test_recording_follows_the_room_to_a_new_worker(tmp_path: Path) -> None:
    """The worker hosting the room's router is killed mid-recording: the peers are
    told to reconnect (4002), rejoin and produce on the room's new router, and the
    recording follows them there. One MP4 covering the whole wall time: red | green
    before, the gap as a frozen frame or name cards, red | green after."""
    async with running_server(tmp_path, mediasoup_num_workers=2, peer_reconnect_grace_seconds=15) as server:
        alice, bob = (_peer(server, "dies", i) for i in range(2))
        replaced: list[MediaPeer] = []
        errors: list[tuple[str, dict]] = []
        try:
            for peer in (alice, bob):
                await peer.join()
            await alice.wait_media("bob", timeout=45)
            await bob.wait_media("alice", timeout=45)
            room = server.rooms.rooms["dies"]
            doomed = room.primary.worker

            info = await bob.signaling.request("startRecording", {}, timeout=30)
            t0 = time.monotonic()
            session = server.app[RECORDINGS].active["dies"].session
            assert session.current is not None and session.current.router.worker is doomed
            await asyncio.sleep(4)

            killed = time.monotonic() - t0
            os.kill(doomed.pid, signal.SIGKILL)
            for peer in (alice, bob):
                await asyncio.wait_for(peer.signaling.closed.wait(), 10)
                assert peer.signaling.close_code == 4002, (peer.peer_id, peer.signaling.close_code)
            await alice.close()
            await bob.close()
            # A client waits a moment before it reconnects; long enough here that a gap
            # cut out of the recording would show in its duration.
            await asyncio.sleep(GAP)

            # They reconnect with the same peerIds, rejoin and produce again.
            replaced = [_peer(server, "dies", i) for i in range(2)]
            for peer in replaced:
                await peer.join()
            await replaced[0].wait_media("bob", timeout=30)
            await replaced[1].wait_media("alice", timeout=30)
            rejoined = time.monotonic() - t0
            assert server.rooms.rooms["dies"] is room and room.primary.worker is not doomed
            assert server.app[RECORDINGS].active["dies"].session is session, "the recording did not go on"
            await asyncio.sleep(5)

            # The recording records the new producers, from the room's new router.
            current = session.current
            history = [(s.path.name, s.router.worker.pid, len(s.sources)) for s in session.segments]
            assert current is not None and current.router is room.primary, history
            assert {s.producer_id for s in current.sources} == {
                p.id for peer in replaced for p in peer.producers.values()
            }, history
            lag = zero_before(server, "dies", t0)  # the recording began before t0
            wall = time.monotonic() - t0
            stopped = await replaced[1].signaling.request("stopRecording", {}, timeout=60)
            path = await _stored(server, stopped["key"])
            errors = [
                (peer.peer_id, data)
                for peer in (alice, bob, *replaced)
                if peer.protoo is not None
                for method, data in peer.protoo.notifications
                if method == "recordingError"
            ]
        finally:
            for peer in (*replaced, alice, bob):
                await peer.close()

    timeline = (
        f"worker killed at {killed:.2f} s, rejoined at {rejoined:.2f} s, stop at {wall:.2f} s; "
        f"answer {stopped}; errors {errors}"
    )
    assert stopped["recordingId"] == info["recordingId"]
    assert stopped["segments"] >= 2, timeline
    codecs, duration = await asyncio.to_thread(codecs_and_duration, path)
    assert codecs == ["aac", "h264"], timeline
    # The gap while the peers come back is in the file, not cut out of it.
    assert rejoined - killed >= GAP
    assert wall - 0.2 <= duration <= wall + lag + 2.0, (duration, timeline)

    # 1. alice | bob on the old worker
    (await asyncio.to_thread(_assert_red_green, path, lag, killed + lag, timeline))
    # 2. the gap: each tile the last frame (frozen) or a name card (dark grey to its
    # corners; the name is in the middle)
    for at in _inside(killed - MARGIN + lag, rejoined + MARGIN, count=3):
        raw = await asyncio.to_thread(frame_at, path, at)
        tiles = [(pixel(raw, *LEFT), pixel(raw, *LEFT_CORNER)), (pixel(raw, *RIGHT), pixel(raw, *RIGHT_CORNER))]
        assert all(
            _close(middle, colour) or _close(corner, CARD, 10)
            for (middle, corner), colour in zip(tiles, (RED, GREEN), strict=False)
        ), (at, tiles, timeline)
    # 3. alice | bob on the new worker, and both heard
    (await asyncio.to_thread(_assert_red_green, path, rejoined + lag, duration, timeline))
    start = rejoined + MARGIN
    heard = await asyncio.to_thread(
        tones,
        (await asyncio.to_thread(audio_samples, path, start, duration - MARGIN - start)),
        (440.0, 660.0) + OFF_TONES,
    )
    noise = max(heard[f] for f in OFF_TONES)
    # Each as much as it sent (a starved test process drops microphone frames: ToneTrack).
    origin = t0 - lag  # the recording's zero, monotonic
    parts = [sent_in(peer, origin + start, origin + duration - MARGIN) for peer in replaced]
    assert heard[440.0] > 2000 * parts[0] and heard[660.0] > 2000 * parts[1], (heard, parts, timeline)
    assert min(heard[440.0], heard[660.0]) > clean_ratio(parts) * noise, (heard, parts, timeline)


async def test_a_segment_that_cannot_start_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process takes FFmpeg's port pair between the pick and FFmpeg's bind
    (a real socket on it, so FFmpeg's bind really fails), at every pick until the
    room is told (the segment tried other ports, ``BIND_ATTEMPTS`` in all): the old
    layout goes on, and the change is tried again until the share is in the grid."""
    import socket

    import recording.segment as segment_module

    held: list[socket.socket] = []
    armed = {"on": False}
    pick = segment_module._free_port_pair

    def taken_after_the_pick(taken: set[int]) -> int:
        port = pick(taken)
        if armed["on"]:
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", p))
                held.append(s)
        return port

    monkeypatch.setattr(segment_module, "_free_port_pair", taken_after_the_pick)
    async with running_server(tmp_path) as server:
        alice, bob = (_peer(server, "retry", i) for i in range(2))
        try:
            for p in (alice, bob):
                await p.join()
            await bob.wait_media("alice", timeout=45)
            await bob.signaling.request("startRecording", {}, timeout=30)
            t0 = time.monotonic()
            session = server.app[RECORDINGS].active["retry"].session
            await asyncio.sleep(4)
            armed["on"] = True
            await _share(alice, YELLOW_YUV)
            shared = time.monotonic() - t0
            error = await bob.signaling.wait_for("recordingError", timeout=10)
            armed["on"] = False
            assert "new segment not started" in error["error"], error
            deadline = time.monotonic() + 10
            while not any(len(s.sources) == 5 for s in session.segments):  # 2 audio, 3 video
                assert time.monotonic() < deadline, [(s.path.name, len(s.sources)) for s in session.segments]
                await asyncio.sleep(0.1)
            retried = time.monotonic() - t0
            await asyncio.sleep(4)
            lag = zero_before(server, "retry", t0)  # the recording began before t0
            wall = time.monotonic() - t0
            stopped = await alice.signaling.request("stopRecording", {}, timeout=60)
            path = await _stored(server, stopped["key"])
        finally:
            for p in (alice, bob):
                await p.close()
            for s in held:
                s.close()
    timeline = f"shared at {shared:.2f} s, retried segment at {retried:.2f} s, stop at {wall:.2f} s; {stopped}"
    assert retried - shared < 5, timeline
    codecs, duration = await asyncio.to_thread(codecs_and_duration, path)
    assert codecs == ["aac", "h264"] and wall - 0.2 <= duration <= wall + lag + 1.0, (duration, timeline)
    # Before the share: red | green; once the retried segment runs: the share has its tile.
    (await asyncio.to_thread(_assert_red_green, path, lag, shared, timeline))
    at = min(retried + MARGIN, wall - 0.5)
    raw = await asyncio.to_thread(frame_at, path, at)
    quads = [pixel(raw, x, y) for x, y in QUADRANTS]
    assert _close(quads[0], RED) and _close(quads[1], YELLOW) and _close(quads[2], GREEN), (at, quads, timeline)

"""Composite recording end to end: three real WebRTC peers (aiortc) send distinct
solid colours and tones; the room is recorded; the MP4 lands in the S3 server and
``recording.completed`` reaches RabbitMQ with every participant's metadata."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from control.recording import RECORDINGS
from tests.e2e.harness import running_server
from tests.e2e.media_peer import MediaPeer, ToneTrack
from tests.e2e.recording_helpers import (
    OFF_TONES,
    PEOPLE,
    SolidTrack,
    _bind_queue,
    _close,
    _get_event,
    _pixels,
    audio_samples,
    clean_ratio,
    drop_queue,
    sent_in,
    tones,
    udp_addresses,
    zero_before,
)

pytestmark = pytest.mark.timeout(240)


async def test_three_peers_recorded_to_s3_with_event(tmp_path: Path, s3: Any, rabbitmq: Any) -> None:
    bucket = f"rec-{secrets.token_hex(4)}"
    ai_queue = f"test.ai.{secrets.token_hex(4)}"
    connection, channel, queue = await asyncio.to_thread(_bind_queue, rabbitmq.url)
    try:
        async with running_server(
            tmp_path,
            minio_endpoint=s3.endpoint,
            minio_access_key=s3.access_key,
            minio_secret_key=s3.secret_key,
            minio_region=s3.region,
            minio_bucket=bucket,
            rabbitmq_url=rabbitmq.url,
            rabbitmq_ai_queue=ai_queue,
        ) as server:
            peers = []
            for name, yuv, _rgb, tone in PEOPLE:
                peer = MediaPeer(
                    server.ws_url("rec", name),
                    name,
                    display_name=name.title(),
                    metadata={
                        "email": f"{name}@example.org",
                        "aiSettings": {"language": "en", "who": name},
                        "integrations": {"notion": {"token": f"secret-{name}"}},
                    },
                )
                peer.tracks = [ToneTrack(tone), SolidTrack(yuv)]
                peers.append(peer)
            try:
                for peer in peers:
                    await peer.join()
                for peer in peers:
                    for other, *_ in PEOPLE:
                        if other != peer.peer_id:
                            await peer.wait_media(other, video_frames=5, timeout=45)

                asked = time.monotonic()
                info = await peers[0].signaling.request("startRecording", {}, timeout=30)
                started = time.monotonic()  # FFmpeg listens on every input, media flows
                assert started - asked < 15
                assert set(info) == {"recordingId", "startedAt"}
                for peer in peers:
                    note = await peer.signaling.wait_for("recordingStarted", timeout=10)
                    assert note["recordingId"] == info["recordingId"] and note["peerId"] == "alice"
                with pytest.raises(Exception, match="already_recording"):
                    await peers[1].signaling.request("startRecording", {}, timeout=10)
                # FFmpeg's RTP/RTCP sockets are on loopback only: nothing from the
                # network reaches the recording.
                session = server.app[RECORDINGS].active["rec"].session
                assert session.current is not None and session.current.pid is not None
                pids = [session.current.pid, *(stem.pid for stem in session.stems.values() if stem.pid is not None)]
                addresses = [a for pid in pids for a in (await asyncio.to_thread(udp_addresses, pid))]
                # 3 videos in the segment, 3 audio stems: 6 inputs x 2
                assert len(addresses) >= 12 and set(addresses) == {"127.0.0.1"}, addresses
                await asyncio.sleep(8)
                lag = zero_before(server, "rec", started)  # the recording began before
                stop_sent = time.monotonic()
                stopped = await peers[1].signaling.request("stopRecording", {}, timeout=60)
                stop_answered = time.monotonic()
                for peer in peers:
                    await peer.signaling.wait_for("recordingStopped", timeout=10)
                key = stopped["key"]
                assert key.startswith("recordings/rec/") and key.endswith(".mp4")
                # The composite runs from its first media (a stem's first packet, or the
                # first segment's) to the stop: at least from the answer to the stop
                # asked, at most from the ask to the stop answered.
                assert stop_sent - started - 0.01 <= stopped["duration"] <= stop_answered - asked + 0.01, (
                    stopped,
                    stop_sent - started,
                    stop_answered - asked,
                )

                event = await asyncio.to_thread(_get_event, channel, queue, 60, bucket=bucket)
            finally:
                for peer in peers:
                    await peer.close()

        # The event points at the object and names everyone, with their metadata.
        data = event["data"]
        assert event["type"] == "recording.completed"
        assert data["roomId"] == "rec" and data["object"]["key"] == key
        assert data["object"]["bucket"] == bucket and data["object"]["contentType"] == "video/mp4"
        assert key.split("/")[-1].startswith(data["meetingId"] + "-")
        by_id = {p["peerId"]: p for p in data["participants"]}
        assert set(by_id) == {"alice", "bob", "carol"}
        for name, *_ in PEOPLE:
            assert by_id[name]["displayName"] == name.title()
            assert by_id[name]["email"] == f"{name}@example.org"
            assert by_id[name]["aiSettings"] == {"language": "en", "who": name}
            assert by_id[name]["integrations"] == {"notion": {"token": f"secret-{name}"}}
        # ... one audio file per participant and the timeline, in the recording's folder.
        folder = f"recordings/rec/{info['recordingId']}/"
        tracks = {t["peerId"]: t for t in data["tracks"]}
        assert set(tracks) == {"alice", "bob", "carol"}, data["tracks"]
        for name, track in tracks.items():
            assert track["displayName"] == name.title() and track["kind"] == "audio", track
            assert track["object"]["key"].startswith(folder) and track["object"]["bucket"] == bucket, track
            # Each stem lies inside the composite (none of its audio is cut: the
            # composite starts with the first media), from before the answer to the
            # stop (what its FFmpeg heard after the stop is cut).
            assert track["durationMs"] > 7000 and track["offsetMs"] >= 0, track
            assert track["offsetMs"] + track["durationMs"] <= stopped["duration"] * 1000 + 60, (track, stopped)
        assert data["timeline"]["key"] == folder + "timeline.json" and data["recordingId"] == info["recordingId"]

        # The MP4 in S3: H.264 + AAC, about as long as the recording lasted, the grid.
        local = tmp_path / "downloaded.mp4"
        client = s3.client()
        await asyncio.to_thread(client.download_file, bucket, key, str(local))
        probe = json.loads(
            (
                await asyncio.to_thread(
                    subprocess.run,
                    ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(local)],
                    check=True,
                    capture_output=True,
                )
            ).stdout
        )
        codecs = sorted(s["codec_name"] for s in probe["streams"])
        assert codecs == ["aac", "h264"]
        duration = float(probe["format"]["duration"])
        assert abs(duration - stopped["duration"]) <= 0.1, (duration, stopped)
        video = next(s for s in probe["streams"] if s["codec_type"] == "video")
        # The composite's zero is its first media: the earliest stem's first sample,
        # or the video's first frame if it came first (black before it otherwise).
        first_media_ms = min([float(video["start_time"]) * 1000, *(t["offsetMs"] for t in tracks.values())])
        assert first_media_ms <= 1, (video["start_time"], data["tracks"])
        assert (video["width"], video["height"]) == (640, 360)
        # 3 participants: 2x2 grid of 320x180 tiles, the fourth black.
        tiles = await asyncio.to_thread(_pixels, local, duration - 2, [(160, 90), (480, 90), (160, 270), (480, 270)])
        colours = [rgb for _n, _yuv, rgb, _t in PEOPLE]
        for colour in colours:
            assert sum(_close(t, colour) for t in tiles[:3]) == 1, (tiles, colour)
        assert _close(tiles[3], (0, 0, 0), 20), tiles

        # Everyone's audio is mixed: each tone is there, well above frequencies nobody sent.
        sent = tuple(tone for *_rest, tone in PEOPLE)
        heard = await asyncio.to_thread(
            tones, (await asyncio.to_thread(audio_samples, local, 1.0, duration - 1.5)), sent + OFF_TONES
        )
        noise = max(heard[f] for f in OFF_TONES)
        # Each as much as it sent (a starved test process drops microphone frames: ToneTrack).
        origin = started - lag  # the recording's zero, monotonic
        parts = [sent_in(peer, origin + 1.0, origin + duration - 0.5) for peer in peers]
        for tone, part in zip(sent, parts, strict=True):
            # Each peer sends amplitude 8000 (s16); the mix is not normalised.
            assert heard[tone] > 2000 * part and heard[tone] > clean_ratio(parts) * noise, (heard, parts)
        # ... from where the stems start, before the video if it came later.
        latest = max(t["offsetMs"] for t in tracks.values()) / 1000
        heard = await asyncio.to_thread(tones, await asyncio.to_thread(audio_samples, local, latest + 0.1, 0.5), sent)
        parts = [sent_in(peer, origin + latest + 0.1, origin + latest + 0.6) for peer in peers]
        assert all(heard[tone] > 2000 * part for tone, part in zip(sent, parts, strict=True)), (
            heard,
            parts,
            latest,
            video["start_time"],
        )
    finally:
        await drop_queue(connection, channel, ai_queue)


async def test_admin_rest_recording_stops_when_the_room_closes(tmp_path: Path) -> None:
    """POST/DELETE /api/rooms/{roomId}/recording; two peers side by side; the room
    closing stops the recording, which lands in the local store; chat says so."""
    import aiohttp

    async with running_server(tmp_path) as server:
        async with aiohttp.ClientSession() as http:
            url = f"{server.base_url}/api/rooms/duo/recording"
            async with http.post(url) as response:
                assert response.status == 404  # no such room
            peers = []
            for name, yuv, _rgb, tone in PEOPLE[:2]:
                peer = MediaPeer(server.ws_url("duo", name), name, display_name=name.title())
                peer.tracks = [ToneTrack(tone), SolidTrack(yuv)]
                peers.append(peer)
            try:
                for peer in peers:
                    await peer.join()
                await peers[1].wait_media("alice", video_frames=5, timeout=45)
                await peers[0].wait_media("bob", video_frames=5, timeout=45)
                async with http.delete(url) as response:
                    assert response.status == 404 and (await response.json())["error"]["code"] == "not_recording"
                async with http.post(url) as response:
                    assert response.status == 201, await response.text()
                    info = await response.json()
                async with http.post(url) as response:
                    assert response.status == 409
                note = await peers[0].signaling.wait_for("recordingStarted", timeout=10)
                assert note == info  # started by an operator: no peerId
                await asyncio.sleep(5)
            finally:
                for peer in peers:
                    await peer.close()
            # Everyone left: the room closes and the recording stops by itself; once the
            # upload is confirmed the chat says "Recording stopped" (an MP4 appears before
            # that: the mix writes it while the recording is no longer active).
            deadline = time.monotonic() + 30
            texts: list[str] = []
            while time.monotonic() < deadline:
                async with http.get(f"{server.base_url}/api/rooms/duo/messages") as response:
                    messages = (await response.json())["messages"]
                texts = [m["text"] for m in messages]
                if "Recording stopped" in texts:
                    break
                await asyncio.sleep(0.2)
            files = list((tmp_path / "data" / "recordings").rglob("*.mp4"))
            assert len(files) == 1 and files[0].parent.name == "duo", files
        assert "Recording started" in texts and "Recording stopped" in texts
        stopped = next(m for m in messages if m["text"] == "Recording stopped")
        assert stopped["data"]["recording"]["key"].endswith(files[0].name)
    probe = json.loads(
        (
            await asyncio.to_thread(
                subprocess.run,
                ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(files[0])],
                check=True,
                capture_output=True,
            )
        ).stdout
    )
    assert sorted(s["codec_name"] for s in probe["streams"]) == ["aac", "h264"]
    duration = float(probe["format"]["duration"])
    assert duration > 3
    left, right = await asyncio.to_thread(_pixels, files[0], duration - 1.5, [(160, 180), (480, 180)])
    assert _close(left, PEOPLE[0][2]) and _close(right, PEOPLE[1][2]), (left, right)


async def test_shutdown_finishes_the_recording(tmp_path: Path) -> None:
    """A recording still running when the server stops is finished and stored; one
    participant fills the frame."""
    import aiohttp

    name, yuv, rgb, tone = PEOPLE[2]
    peer = MediaPeer("", name)
    try:
        async with running_server(tmp_path) as server:
            peer.ws_url = server.ws_url("solo", name)
            peer.tracks = [ToneTrack(tone), SolidTrack(yuv)]
            await peer.join()
            await asyncio.sleep(1)
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{server.base_url}/api/rooms/solo/recording") as response:
                    assert response.status == 201, await response.text()
            await asyncio.sleep(4)
    finally:
        await peer.close()
    files = list((tmp_path / "data" / "recordings").rglob("*.mp4"))
    assert len(files) == 1 and files[0].parent.name == "solo", files
    duration = float(
        json.loads(
            (
                await asyncio.to_thread(
                    subprocess.run,
                    ["ffprobe", "-v", "error", "-show_format", "-of", "json", str(files[0])],
                    check=True,
                    capture_output=True,
                )
            ).stdout
        )["format"]["duration"]
    )
    assert duration > 2
    bar, edge, centre = await asyncio.to_thread(_pixels, files[0], duration - 1, [(40, 180), (100, 180), (320, 180)])
    # 160x120 scaled into 640x360 keeps 4:3: 480x360 centred, black bars at the sides.
    assert _close(edge, rgb) and _close(centre, rgb) and _close(bar, (0, 0, 0), 20), (bar, edge, centre)

"""startRecording/stopRecording over the real signaling: bad requests refused
without harm, the disk space check, and a room of participants without media
recorded as name cards (FFmpeg, the real worker, ffprobe)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from control.recording import RECORDINGS
from recording.manifest import Manifest, SegmentEntry
from tests.e2e.harness import Server, running_server
from tests.e2e.protoo_client import ProtooClient
from tests.integration.signaling.conftest import OPUS, Connect, setup_peer
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)

CARD = (38, 38, 38)  # recording.layout.CARD_COLOUR


def _rgb_at(path: Path, at: float, points: list[tuple[int, int]]) -> list[tuple[int, ...]]:
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
    return [tuple(raw[(y * 640 + x) * 3 : (y * 640 + x) * 3 + 3]) for x, y in points]


async def test_bad_recording_requests_are_refused_and_the_room_goes_on(connect: Connect) -> None:
    alice = await connect("rec-bad", "alice")
    with pytest.raises(Exception, match=r"403|join"):
        await alice.request("startRecording", {})  # not joined yet
    await alice.request("join", {"displayName": "Alice"})
    with pytest.raises(Exception, match="invalid_request"):
        await alice.request("startRecording", {"layout": "speaker"})
    with pytest.raises(Exception, match="not_recording"):
        await alice.request("stopRecording", {})
    with pytest.raises(Exception, match="invalid_request"):
        await alice.request("stopRecording", {"now": True})
    # Nothing was harmed: the peer is still served.
    assert "codecs" in await alice.request("getRouterRtpCapabilities")


async def test_too_little_disk_space_refuses_to_start(tmp_path: Path) -> None:
    async with running_server(tmp_path, recording_min_free_mb=10**9) as server:
        client = await ProtooClient.connect(server.ws_url("rec-disk", "alice"))
        try:
            await client.request("join", {"displayName": "Alice"})
            with pytest.raises(Exception, match="insufficient_storage"):
                await client.request("startRecording", {})
            assert not list((tmp_path / "data" / "recording-work").glob("*"))
            assert "codecs" in await client.request("getRouterRtpCapabilities")
        finally:
            await client.close()


async def test_participants_without_media_are_recorded_as_name_cards(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        alice = await ProtooClient.connect(server.ws_url("rec-cards", "alice"))
        bob = await ProtooClient.connect(server.ws_url("rec-cards", "bob"))
        try:
            await alice.request("join", {"displayName": "Alice"})
            await bob.request("join", {"displayName": "Bob"})
            started = await alice.request("startRecording", {})
            note = await bob.wait_for("recordingStarted", timeout=10)
            assert note["recordingId"] == started["recordingId"]
            work = tmp_path / "data" / "recording-work" / started["recordingId"]
            assert (work / "manifest.json").exists()
            await asyncio.sleep(4)
            stopped = await bob.request("stopRecording", {}, timeout=60)
            assert stopped["segments"] == 1 and 3 < stopped["duration"] < 8
            await alice.wait_for("recordingStopped", timeout=10)
            # The segments go once the upload (here the local store) is confirmed.
            await eventually(lambda: not work.exists(), timeout=20)
            # Stored, attached to the meeting, then announced (no broker here: the
            # event waits in the durable outbox).
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.base_url}/api/events/outbox") as response:
                    outbox = await response.json()
                event = next(e["event"] for e in outbox["events"] if e["type"] == "recording.completed")
                assert event["data"]["object"]["key"] == stopped["key"]
                meeting_id = event["data"]["meetingId"]
                assert {p["peerId"] for p in event["data"]["participants"]} == {"alice", "bob"}
                async with http.get(f"{server.base_url}/api/meetings/{meeting_id}") as response:
                    meeting = await response.json()
            assert [r["key"] for r in meeting["recordings"]] == [stopped["key"]], meeting
        finally:
            await alice.close()
            await bob.close()
    files = list((tmp_path / "data" / "recordings").rglob("*.mp4"))
    assert len(files) == 1
    info = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(files[0])],
            check=True,
            capture_output=True,
        ).stdout
    )
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    # Two name cards side by side: dark grey at the tiles' corners, the names in white.
    corners = _rgb_at(files[0], 2.0, [(10, 10), (330, 10), (310, 350), (630, 350)])
    assert all(max(abs(a - b) for a, b in zip(c, CARD, strict=False)) <= 12 for c in corners), corners
    middle_rows = _rgb_at(files[0], 2.0, [(x, 180) for x in range(100, 540, 2)])
    assert sum(1 for p in middle_rows if min(p) > 200) > 10, "no white name text on the cards"


def _leftover(work: Path, recording_id: str, segments: list[tuple[str, float]], *, room: str = "left") -> Manifest:
    """What a process that died while recording leaves: a manifest naming a dead owner."""
    directory = work / recording_id
    directory.mkdir(parents=True)
    manifest = Manifest(
        directory,
        recording_id,
        room,
        "01J0000000000000000000000A",
        f"m-{recording_id}.mp4",
        1_700_000_000.0,
        participants={"ann": {"peerId": "ann", "displayName": "Ann"}},
        owner_pid=999_999_999,
        owner_started=1,
    )
    manifest.segments = [SegmentEntry(name, t0) for name, t0 in segments]
    manifest.save()
    return manifest


async def test_leftovers_of_a_dead_process_finished_or_dropped_at_start(tmp_path: Path) -> None:
    """One leftover recording with two real segments is joined, stored and announced
    at start-up; one whose only segment is empty (stopped before any media) is dropped."""
    work = tmp_path / "data" / "recording-work"
    kept = _leftover(work, "kept", [("segment-000.ts", 1_700_000_000.0), ("segment-001.ts", 1_700_000_002.5)])
    for name, colour in (("segment-000.ts", "red"), ("segment-001.ts", "green")):
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"color=c={colour}:s=640x360:r=15",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "3",
                "-c:v",
                "libx264",
                "-bf",
                "0",
                "-c:a",
                "aac",
                "-f",
                "mpegts",
                str(kept.directory / name),
            ],
            check=True,
        )
    empty = _leftover(work, "empty", [("segment-000.ts", 1_700_000_000.0)])
    (empty.directory / "segment-000.ts").write_bytes(b"")
    async with running_server(tmp_path) as server:
        await eventually(lambda: not kept.directory.exists(), timeout=30)
        assert not empty.directory.exists()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.base_url}/api/events/outbox") as response:
                events = [e["event"] for e in (await response.json())["events"] if e["type"] == "recording.completed"]
    assert [e["data"]["object"]["key"] for e in events] == ["recordings/left/m-kept.mp4"]
    assert [(p["peerId"], p["displayName"]) for p in events[0]["data"]["participants"]] == [("ann", "Ann")]
    stored = tmp_path / "data" / "recordings" / "recordings" / "left" / "m-kept.mp4"
    info = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(stored)],
            check=True,
            capture_output=True,
        ).stdout
    )
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    assert abs(float(info["format"]["duration"]) - 5.5) < 0.3  # 2.5 s of the first, all 3 s of the second
    assert _rgb_at(stored, 1.0, [(320, 180)])[0][0] > 200 and _rgb_at(stored, 4.0, [(320, 180)])[0][1] > 100


async def test_a_second_recording_of_a_room_follows_its_existing_producers(connect: Connect, server: Server) -> None:
    """A pause or close of a producer the room already had is followed by each
    recording, not only by the first one that saw the producer."""
    alice = await connect("rec-again", "alice")
    sent = await setup_peer(alice, consume=False, display_name="Alice")
    audio = await alice.request("produce", {"transportId": sent["send"]["id"], "kind": "audio", "rtpParameters": OPUS})
    recordings = server.app[RECORDINGS]
    for attempt in range(2):
        await alice.request("startRecording", {})
        session = recordings.active["rec-again"].session
        assert [len(s.sources) for s in session.segments] == [1], attempt
        await alice.request("pauseProducer", {"producerId": audio["id"]})
        # Paused: a new segment without it (a name card and silence).
        await eventually(lambda: [len(s.sources) for s in session.segments] == [1, 0], timeout=10)
        await alice.request("resumeProducer", {"producerId": audio["id"]})
        await eventually(lambda: [len(s.sources) for s in session.segments] == [1, 0, 1], timeout=10)
        with contextlib.suppress(Exception):  # no RTP was ever sent: little or nothing recorded
            await alice.request("stopRecording", {}, timeout=60)
        await eventually(lambda: "rec-again" not in recordings.active, timeout=30)

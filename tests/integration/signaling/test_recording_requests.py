"""startRecording/stopRecording over the real signaling: bad requests refused
without harm, the disk space check, and a room of participants without media
recorded as name cards (FFmpeg, the real worker, ffprobe)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import running_server
from tests.e2e.protoo_client import ProtooClient
from tests.integration.signaling.conftest import Connect, eventually

pytestmark = pytest.mark.timeout(120)

CARD = (38, 38, 38)  # recording.layout.CARD_COLOUR


def _rgb_at(path: Path, at: float, points: list[tuple[int, int]]) -> list[tuple[int, ...]]:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", f"{at:.2f}", "-i", str(path), "-frames:v", "1",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    return [tuple(raw[(y * 640 + x) * 3:(y * 640 + x) * 3 + 3]) for x, y in points]


async def test_bad_recording_requests_are_refused_and_the_room_goes_on(connect: Connect) -> None:
    alice = await connect("rec-bad", "alice")
    with pytest.raises(Exception, match="403|join"):
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
    info = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json",
                                      str(files[0])], check=True, capture_output=True).stdout)
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    # Two name cards side by side: dark grey at the tiles' corners, the names in white.
    corners = _rgb_at(files[0], 2.0, [(10, 10), (330, 10), (310, 350), (630, 350)])
    assert all(max(abs(a - b) for a, b in zip(c, CARD)) <= 12 for c in corners), corners
    middle_rows = _rgb_at(files[0], 2.0, [(x, 180) for x in range(100, 540, 2)])
    assert sum(1 for p in middle_rows if min(p) > 200) > 10, "no white name text on the cards"

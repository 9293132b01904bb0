"""Segments on paper: what a segment shows, how segments join, the manifest on disk."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from recording.concat import Part, parts
from recording.manifest import Manifest, SegmentEntry, process_start_time
from recording.segment import Source, shown_tiles


def test_videos_first_in_join_order_then_name_cards() -> None:
    names = {"ann": "Ann", "bo": "Bo", "cy": "Cy"}
    sources = [
        Source("p1", "audio", "ann"),
        Source("p2", "video", "cy"),
        Source("p3", "video", "ann"),
        Source("p4", "video", "ann"),
    ]  # Ann: camera and screen share; Bo: nothing
    shown = shown_tiles(sources, names)
    assert [(peer, s.producer_id if s else None) for peer, s in shown] == [
        ("ann", "p3"),
        ("ann", "p4"),
        ("cy", "p2"),
        ("bo", None),
    ]


def test_at_most_nine_tiles_videos_kept_first() -> None:
    names = {f"p{i}": f"P{i}" for i in range(12)}
    sources = [Source(f"v{i}", "video", f"p{i}") for i in range(6, 12)]
    shown = shown_tiles(sources, names)
    assert len(shown) == 9 and all(s is not None for _p, s in shown[:6]) and shown[6] == ("p0", None)


def test_each_part_lasts_until_the_next_segment_began() -> None:
    a, b, c = Path("a.ts"), Path("b.ts"), Path("c.ts")
    segments = [(a, 100.0), (b, 104.5), (c, 110.0)]
    assert parts(segments, {a, b, c}) == [Part(a, 4.5), Part(b, 5.5), Part(c, None)]


def test_an_unreadable_segment_leaves_its_time_to_the_part_before() -> None:
    a, b, c = Path("a.ts"), Path("b.ts"), Path("c.ts")
    segments = [(a, 100.0), (b, 104.5), (c, 110.0)]
    assert parts(segments, {a, c}) == [Part(a, 10.0), Part(c, None)]
    assert parts(segments, {a, b}) == [Part(a, 4.5), Part(b, None)]
    assert parts(segments, {b, c}) == [Part(b, 5.5), Part(c, None)]
    assert parts(segments, set()) == []


def test_manifest_round_trip_private_and_atomic(tmp_path: Path) -> None:
    directory = tmp_path / "rec1"
    directory.mkdir()
    manifest = Manifest(
        directory,
        "rec1",
        "room",
        "m1",
        "m1-20260101T000000Z.mp4",
        1_700_000_000.0,
        participants={"ann": {"peerId": "ann", "integrations": {"x": {"token": "t"}}}},
    )
    manifest.segments.append(SegmentEntry("segment-000.ts", 1_700_000_000.5, pid=123, layout=["ann"]))
    manifest.save()
    assert stat.S_IMODE(manifest.path.stat().st_mode) == 0o600  # it holds integration credentials
    assert not list(directory.glob("*.tmp"))
    loaded = Manifest.load(directory)
    assert loaded == manifest
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    assert Manifest.find(tmp_path) == [manifest]
    assert json.loads(manifest.path.read_text())["state"] == "recording"


def test_a_recording_of_another_live_process_is_not_ours(tmp_path: Path) -> None:
    import os
    import subprocess

    mine = Manifest(tmp_path, "r", "room", "m", "f.mp4", 0.0)
    assert mine.owner_pid == os.getpid() and not mine.owned_by_another_process()
    other = subprocess.Popen(["sleep", "30"])
    try:
        mine.owner_pid, mine.owner_started = other.pid, process_start_time(other.pid)
        assert mine.owned_by_another_process()
        assert mine.owner_started is not None
        mine.owner_started -= 1  # the same pid, another process (reused): not the owner
        assert not mine.owned_by_another_process()
        mine.owner_started += 1
    finally:
        other.kill()
        other.wait()
    assert not mine.owned_by_another_process()  # it died: its recordings are ours to finish
    mine.adopt()
    assert mine.owner_pid == os.getpid() and mine.owner_started == process_start_time(os.getpid())


def test_a_port_counts_as_ffmpegs_only_if_its_process_holds_it() -> None:
    import os
    import socket
    import subprocess

    from recording.segment import udp_sockets

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mine:
        mine.bind(("127.0.0.1", 0))
        port = mine.getsockname()[1]
        assert ("127.0.0.1", port) in udp_sockets(os.getpid())
        other = subprocess.Popen(["sleep", "30"])
        try:
            assert not any(p == port for _a, p in udp_sockets(other.pid))  # bound, but by someone else
        finally:
            other.kill()
            other.wait()
    assert not any(p == port for _a, p in udp_sockets(os.getpid()))


def test_ffmpeg_consumes_without_bandwidth_estimation() -> None:
    from recording.segment import recording_capabilities

    caps: dict[str, Any] = {
        "codecs": [
            {
                "mimeType": "video/VP8",
                "kind": "video",
                "clockRate": 90000,
                "rtcpFeedback": [
                    {"type": "nack"},
                    {"type": "nack", "parameter": "pli"},
                    {"type": "goog-remb"},
                    {"type": "transport-cc"},
                    {"type": "ccm", "parameter": "fir"},
                ],
            }
        ],
        "headerExtensions": [
            {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "kind": "video", "preferredId": 1},
            {"uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "kind": "video", "preferredId": 4},
            {
                "uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                "kind": "video",
                "preferredId": 5,
            },
        ],
    }
    out = recording_capabilities(caps)
    assert [f["type"] for f in out["codecs"][0]["rtcpFeedback"]] == ["nack", "nack", "ccm"]
    assert [e["preferredId"] for e in out["headerExtensions"]] == [1]
    assert len(caps["codecs"][0]["rtcpFeedback"]) == 5  # the router's own are untouched

"""The composite's time zero, with real FFmpeg files: a stem whose first packet came
before the first video segment (its FFmpeg slow to listen) is not cut; the video
starts later in the MP4 and every offset is counted from the first media; a stem that
ran on past the stop (its FFmpeg reads the ``q`` at its next packet) is cut there."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from recording.manifest import Manifest, SegmentEntry, TrackEntry
from recording.session import finish_recording, plan
from tests.e2e.recording_helpers import audio_samples, tones

T0 = 1_700_000_000.0
TONE = 440.0


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, capture_output=True)


def _streams(path: Path) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    found = json.loads(out)
    return {s["codec_type"]: s for s in found["streams"]} | {"format": found["format"]}


async def test_audio_before_the_first_segment_is_kept(tmp_path: Path) -> None:
    directory = tmp_path / "rec"
    directory.mkdir()
    # The segment: 3 s of H.264 in MPEG-TS (as a segment's FFmpeg writes), from T0 + 1.5.
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-t", "3",
        "-c:v", "libx264", "-bf", "0", "-f", "mpegts", str(directory / "segment-000.ts"),
    )  # fmt: skip
    # The stem: 4.5 s of a tone from T0 (its first packet).
    _ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency={TONE:g}:sample_rate=48000", "-t", "4.5",
        "-c:a", "libopus", "-f", "ogg", str(directory / "stem-000.ogg"),
    )  # fmt: skip
    manifest = Manifest(directory, "rec", "room", "m", "m-out.mp4", T0)
    manifest.segments.append(SegmentEntry("segment-000.ts", T0 + 1.5, ended_at=T0 + 4.5))
    manifest.tracks.append(TrackEntry("stem-000.ogg", "ann", "p1", t0=T0, ended_at=T0 + 4.5))
    manifest.ended_at = T0 + 4.0  # the stop: the stem ran on half a second

    planned = await plan(manifest)
    assert planned.origin == T0 and abs(planned.video_delay - 1.5) < 1e-6
    done = await finish_recording(manifest, directory / "m-out.mp4", planned=planned)

    assert done.origin == T0 and abs(done.duration - 4.0) < 1e-6
    assert [(t.peer_id, t.offset) for t in done.tracks] == [("ann", 0.0)]
    assert abs(done.tracks[0].duration - 4.0) <= 0.03, done.tracks  # cut at a 20 ms packet
    found = _streams(directory / "m-out.mp4")
    assert abs(float(found["video"]["start_time"]) - 1.5) < 0.05, found["video"]
    assert abs(float(found["format"]["duration"]) - 4.0) < 0.1, found["format"]
    # The tone is there in the 1.5 s before the video, not cut.
    heard = tones(audio_samples(directory / "m-out.mp4", 0.2, 1.0), (TONE, 1000.0))
    assert heard[TONE] > 1000 and heard[TONE] > 50 * heard[1000.0], heard
    timeline = json.loads(done.timeline.read_text())
    assert timeline["durationMs"] == 4000 and timeline["startedAt"].startswith("2023-11-14T22:13:20")

"""The pure parts of stems, mixing and the timeline: the filter graph that places
each stem to the sample, and the timeline's events and active-speaker intervals."""

from __future__ import annotations

from pathlib import Path

from recording.mix import StemInput, _mix_graph
from recording.timeline import active_speakers, timeline


def test_stems_are_delayed_to_the_sample_and_mixed_without_normalising() -> None:
    graph = _mix_graph([StemInput(Path("a.ogg"), 0.0), StemInput(Path("b.ogg"), 1.5)], 1, 10.0, "stereo")
    assert "[2:a]aresample=48000" in graph and "adelay=delays=72000S:all=1" in graph
    assert "[1:a]aresample=48000,aformat=sample_fmts=fltp:sample_rates=48000[s0]" in graph  # no delay at 0
    assert "amix=inputs=2:duration=longest:dropout_transition=0:normalize=0" in graph
    assert graph.endswith("apad,atrim=end_sample=480000,aformat=channel_layouts=stereo[a]")


def test_a_stem_that_began_before_the_composite_is_trimmed() -> None:
    graph = _mix_graph([StemInput(Path("a.ogg"), -0.25)], 0, None, "mono")
    assert "atrim=start_sample=12000,asetpts=PTS-STARTPTS" in graph and "amix" not in graph


def test_the_timeline_is_in_ms_from_the_composite_s_start() -> None:
    origin = 1000.0
    raw = [
        {"at": 999.0, "type": "join", "peerId": "ann", "displayName": "Ann"},
        {"at": 1000.5, "type": "dominantSpeaker", "peerId": "ann"},
        {"at": 1002.0, "type": "join", "peerId": "bob", "displayName": "Bob"},
        {"at": 1003.0, "type": "dominantSpeaker", "peerId": "bob"},
        {"at": 1004.0, "type": "mute", "peerId": "bob", "producerId": "p"},
        {"at": 1005.0, "type": "leave", "peerId": "bob"},
    ]
    doc = timeline(raw, origin=origin, duration=8.0, recording_id="r", room_id="room", meeting_id="m")
    assert doc["durationMs"] == 8000 and doc["startedAt"] == "1970-01-01T00:16:40Z"
    assert [(e["atMs"], e["type"], e["peerId"]) for e in doc["events"]] == [
        (0, "join", "ann"),
        (500, "dominantSpeaker", "ann"),
        (2000, "join", "bob"),
        (3000, "dominantSpeaker", "bob"),
        (4000, "mute", "bob"),
        (5000, "leave", "bob"),
    ]
    assert doc["events"][4]["producerId"] == "p"
    assert doc["activeSpeakers"] == [
        {"peerId": "ann", "startMs": 500, "endMs": 3000},
        {"peerId": "bob", "startMs": 3000, "endMs": 5000},
    ]


def test_a_speaker_named_twice_is_one_interval_to_the_end() -> None:
    events = [
        {"atMs": 0, "type": "dominantSpeaker", "peerId": "ann"},
        {"atMs": 100, "type": "dominantSpeaker", "peerId": "ann"},
    ]
    assert active_speakers(events, 900) == [{"peerId": "ann", "startMs": 0, "endMs": 900}]

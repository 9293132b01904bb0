"""Composite recording: PlainTransports + Consumers feeding FFmpeg (grid video,
mixed audio), in video segments that follow the room and audio stems (one per
audio producer) that never restart, joined and mixed into one H.264/AAC MP4 at stop,
beside one audio file per participant and a timeline.
Imports only ``workers`` (through the router it is given)."""

from recording.concat import Part, join, parts
from recording.layout import MAX_TILES, NameCard, composite, grid, tiles
from recording.manifest import Manifest, SegmentEntry
from recording.sdp import Media, consumer_sdp, session_sdp
from recording.segment import (
    NothingRecorded,
    RecordingError,
    Segment,
    SegmentOptions,
    SegmentResult,
    Source,
    probe,
    shown_tiles,
)
from recording.session import (
    Finished,
    FinishedTrack,
    Plan,
    RecordingResult,
    RecordingSession,
    Snapshot,
    finish_recording,
    finish_segments,
    plan,
)
from recording.stem import Stem
from recording.timeline import timeline

__all__ = [
    "MAX_TILES",
    "Finished",
    "FinishedTrack",
    "Manifest",
    "Media",
    "NameCard",
    "NothingRecorded",
    "Part",
    "Plan",
    "RecordingError",
    "RecordingResult",
    "RecordingSession",
    "Segment",
    "SegmentEntry",
    "SegmentOptions",
    "SegmentResult",
    "Snapshot",
    "Source",
    "Stem",
    "composite",
    "consumer_sdp",
    "finish_recording",
    "finish_segments",
    "grid",
    "join",
    "parts",
    "plan",
    "probe",
    "session_sdp",
    "shown_tiles",
    "tiles",
    "timeline",
]

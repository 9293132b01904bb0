"""Composite recording: PlainTransports + Consumers feeding FFmpeg (grid video,
mixed audio), in segments that follow the room, joined into one H.264/AAC MP4.
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
from recording.session import RecordingResult, RecordingSession, Snapshot, finish_segments

__all__ = [
    "MAX_TILES",
    "Manifest",
    "Media",
    "NameCard",
    "NothingRecorded",
    "Part",
    "RecordingError",
    "RecordingResult",
    "RecordingSession",
    "Segment",
    "SegmentEntry",
    "SegmentOptions",
    "SegmentResult",
    "Snapshot",
    "Source",
    "composite",
    "consumer_sdp",
    "finish_segments",
    "grid",
    "join",
    "parts",
    "probe",
    "session_sdp",
    "shown_tiles",
    "tiles",
]

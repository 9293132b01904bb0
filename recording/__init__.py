"""Composite recording: PlainTransports + Consumers feeding FFmpeg (grid video,
mixed audio, H.264/AAC MP4). Imports only ``workers`` (via the router it is given)."""

from recording.layout import MAX_TILES, composite, grid, tiles
from recording.recorder import Recorder, RecordingError, RecordingResult, Source, probe
from recording.sdp import consumer_sdp

__all__ = ["MAX_TILES", "Recorder", "RecordingError", "RecordingResult", "Source", "composite",
           "consumer_sdp", "grid", "probe", "tiles"]

"""Composite recording of a room (see :mod:`control.recording.service`)."""

from control.recording.service import RECORDINGS, RecordingService, recording_ctx, routes

__all__ = ["RECORDINGS", "RecordingService", "recording_ctx", "routes"]

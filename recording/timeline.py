"""The timeline of a recording: what happened, in milliseconds from the composite's start.

Built at stop from the manifest's events (wall-clock times recorded as they
happened: joins, leaves, mutes, cameras, screen shares, dominant speaker changes)
so an AI service can attribute speech without diarization. The JSON:

``{"version": 1, "recordingId", "roomId", "meetingId", "startedAt", "durationMs",
"events": [{"atMs", "type", "peerId", ...}], "activeSpeakers": [{"peerId",
"startMs", "endMs"}]}``

Event types: ``join``, ``leave``, ``mute``, ``unmute``, ``cameraOff``,
``cameraOn``, ``screenShareStart``, ``screenShareStop``, ``dominantSpeaker``.
A dominant speaker's interval ends at the next change, when they leave, or at
the end. Events before the composite's start are at 0.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["EVENT_TYPES", "active_speakers", "timeline"]

EVENT_TYPES = (
    "join",
    "leave",
    "mute",
    "unmute",
    "cameraOff",
    "cameraOn",
    "screenShareStart",
    "screenShareStop",
    "dominantSpeaker",
)


def _ms(at: float, origin: float, duration_ms: int) -> int:
    return max(0, min(duration_ms, round((at - origin) * 1000)))


def active_speakers(events: list[dict[str, Any]], duration_ms: int) -> list[dict[str, Any]]:
    """Intervals of the dominant speaker from ``events`` (already in ms, in order)."""
    intervals: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for event in events:
        if event["type"] == "dominantSpeaker":
            if current is not None and current["peerId"] == event["peerId"]:
                continue
            if current is not None:
                current["endMs"] = event["atMs"]
            current = {"peerId": event["peerId"], "startMs": event["atMs"], "endMs": duration_ms}
            intervals.append(current)
        elif event["type"] == "leave" and current is not None and current["peerId"] == event["peerId"]:
            current["endMs"] = event["atMs"]
            current = None
    return [i for i in intervals if i["endMs"] > i["startMs"]]


def timeline(
    raw: list[dict[str, Any]],
    *,
    origin: float,
    duration: float,
    recording_id: str,
    room_id: str,
    meeting_id: str,
) -> dict[str, Any]:
    """The timeline document from the manifest's ``raw`` events (``at`` in wall-clock
    seconds), ``origin`` the composite's first instant, ``duration`` its length (s)."""
    duration_ms = round(duration * 1000)
    events = []
    for entry in sorted(raw, key=lambda e: e["at"]):  # stable: same-time events keep their order
        event = {k: v for k, v in entry.items() if k != "at"}
        events.append({"atMs": _ms(entry["at"], origin, duration_ms), **event})
    return {
        "version": 1,
        "recordingId": recording_id,
        "roomId": room_id,
        "meetingId": meeting_id,
        "startedAt": datetime.fromtimestamp(origin, UTC).isoformat().replace("+00:00", "Z"),
        "durationMs": duration_ms,
        "events": events,
        "activeSpeakers": active_speakers(events, duration_ms),
    }

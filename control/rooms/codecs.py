"""Media codecs and transport options of every room (mediasoup-demo's config)."""

from __future__ import annotations

from typing import Any, TypedDict

#: The router's codecs: Opus, VP8, VP9 (profile 2) and two H.264 profiles.
MEDIA_CODECS: list[dict[str, Any]] = [
    {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000, "parameters": {"x-google-start-bitrate": 1000}},
    {
        "kind": "video",
        "mimeType": "video/VP9",
        "clockRate": 90000,
        "parameters": {"profile-id": 2, "x-google-start-bitrate": 1000},
    },
    {
        "kind": "video",
        "mimeType": "video/h264",
        "clockRate": 90000,
        "parameters": {
            "packetization-mode": 1,
            "profile-level-id": "4d0032",
            "level-asymmetry-allowed": 1,
            "x-google-start-bitrate": 1000,
        },
    },
    {
        "kind": "video",
        "mimeType": "video/h264",
        "clockRate": 90000,
        "parameters": {
            "packetization-mode": 1,
            "profile-level-id": "42e01f",
            "level-asymmetry-allowed": 1,
            "x-google-start-bitrate": 1000,
        },
    },
]

#: WebRtcTransport: initial outgoing estimate and the cap on what a client may send.
INITIAL_AVAILABLE_OUTGOING_BITRATE = 1_000_000
MAX_INCOMING_BITRATE = 1_500_000
#: SCTP message size (both directions), as the demo's ``maxSctpMessageSize``.
MAX_SCTP_MESSAGE_SIZE = 262_144


class AudioLevelOptions(TypedDict):
    max_entries: int
    threshold: int
    interval: int


#: AudioLevelObserver options (``activeSpeaker`` notifications).
AUDIO_LEVEL_OPTIONS: AudioLevelOptions = {"max_entries": 1, "threshold": -80, "interval": 800}

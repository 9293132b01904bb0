"""The codecs and header extensions mediasoup supports.

A port of mediasoup's ``supportedRtpCapabilities.ts``. A Router's capabilities
are built from this list (``ortc.generate_router_rtp_capabilities``): each
codec a Router is configured with must match one of these, and the Router
announces all of these header extensions. It is kept as raw mediasoup JSON so
it reads (and diffs) like the original; ``ortc`` normalises it once.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SUPPORTED_RTP_CAPABILITIES"]


def _video_feedback() -> list[dict[str, str]]:
    return [
        {"type": "nack"},
        {"type": "nack", "parameter": "pli"},
        {"type": "ccm", "parameter": "fir"},
        {"type": "goog-remb"},
        {"type": "transport-cc"},
    ]


def _audio(mime_type: str, clock_rate: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "audio", "mimeType": mime_type, "clockRate": clock_rate, **extra}


def _video(mime_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "video",
        "mimeType": mime_type,
        "clockRate": 90000,
        **extra,
        "rtcpFeedback": _video_feedback(),
    }


def _header_extension(kind: str, uri: str, preferred_id: int, direction: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "uri": uri,
        "preferredId": preferred_id,
        "preferredEncrypt": False,
        "direction": direction,
    }


_OPUS_FEEDBACK = [{"type": "nack"}, {"type": "transport-cc"}]
_TRANSPORT_CC = [{"type": "transport-cc"}]

_CODECS: list[dict[str, Any]] = [
    _audio("audio/opus", 48000, channels=2, rtcpFeedback=_OPUS_FEEDBACK),
    # Quad channel.
    _audio(
        "audio/multiopus",
        48000,
        channels=4,
        parameters={"channel_mapping": "0,1,2,3", "num_streams": 2, "coupled_streams": 2},
        rtcpFeedback=_OPUS_FEEDBACK,
    ),
    # 5.1.
    _audio(
        "audio/multiopus",
        48000,
        channels=6,
        parameters={"channel_mapping": "0,4,1,2,3,5", "num_streams": 4, "coupled_streams": 2},
        rtcpFeedback=_OPUS_FEEDBACK,
    ),
    # 7.1.
    _audio(
        "audio/multiopus",
        48000,
        channels=8,
        parameters={"channel_mapping": "0,6,1,2,3,4,5,7", "num_streams": 5, "coupled_streams": 3},
        rtcpFeedback=_OPUS_FEEDBACK,
    ),
    _audio("audio/PCMU", 8000, preferredPayloadType=0, rtcpFeedback=_TRANSPORT_CC),
    _audio("audio/PCMA", 8000, preferredPayloadType=8, rtcpFeedback=_TRANSPORT_CC),
    _audio("audio/ISAC", 32000, rtcpFeedback=_TRANSPORT_CC),
    _audio("audio/ISAC", 16000, rtcpFeedback=_TRANSPORT_CC),
    _audio("audio/G722", 8000, preferredPayloadType=9, rtcpFeedback=_TRANSPORT_CC),
    _audio("audio/iLBC", 8000, rtcpFeedback=_TRANSPORT_CC),
    _audio("audio/SILK", 24000, rtcpFeedback=_TRANSPORT_CC),
    _audio("audio/SILK", 16000, rtcpFeedback=_TRANSPORT_CC),
    _audio("audio/SILK", 12000, rtcpFeedback=_TRANSPORT_CC),
    _audio("audio/SILK", 8000, rtcpFeedback=_TRANSPORT_CC),
    _audio("audio/CN", 32000, preferredPayloadType=13),
    _audio("audio/CN", 16000, preferredPayloadType=13),
    _audio("audio/CN", 8000, preferredPayloadType=13),
    _audio("audio/telephone-event", 48000),
    _audio("audio/telephone-event", 32000),
    _audio("audio/telephone-event", 16000),
    _audio("audio/telephone-event", 8000),
    _video("video/VP8"),
    _video("video/VP9"),
    _video("video/H264", parameters={"level-asymmetry-allowed": 1}),
    _video("video/AV1", parameters={}),
]

_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
_RTP_STREAM_ID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
_REPAIRED_RTP_STREAM_ID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_TRANSPORT_WIDE_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
_DEPENDENCY_DESCRIPTOR = "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"
_VIDEO_ORIENTATION = "urn:3gpp:video-orientation"
_TOFFSET = "urn:ietf:params:rtp-hdrext:toffset"
_ABS_CAPTURE_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"
_PLAYOUT_DELAY = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
_PACKET_ID = "urn:mediasoup:params:rtp-hdrext:packet-id"

_HEADER_EXTENSIONS: list[dict[str, Any]] = [
    _header_extension("audio", _MID, 1, "sendrecv"),
    _header_extension("video", _MID, 1, "sendrecv"),
    _header_extension("video", _RTP_STREAM_ID, 2, "recvonly"),
    _header_extension("video", _REPAIRED_RTP_STREAM_ID, 3, "recvonly"),
    _header_extension("audio", _ABS_SEND_TIME, 4, "sendrecv"),
    _header_extension("video", _ABS_SEND_TIME, 4, "sendrecv"),
    # For audio, transport-wide-cc-01 is only enabled when receiving media.
    _header_extension("audio", _TRANSPORT_WIDE_CC, 5, "recvonly"),
    _header_extension("video", _TRANSPORT_WIDE_CC, 5, "sendrecv"),
    _header_extension("audio", _AUDIO_LEVEL, 6, "sendrecv"),
    _header_extension("video", _DEPENDENCY_DESCRIPTOR, 7, "recvonly"),
    _header_extension("video", _VIDEO_ORIENTATION, 8, "sendrecv"),
    _header_extension("video", _TOFFSET, 9, "sendrecv"),
    _header_extension("audio", _ABS_CAPTURE_TIME, 10, "sendrecv"),
    _header_extension("video", _ABS_CAPTURE_TIME, 10, "sendrecv"),
    _header_extension("audio", _PLAYOUT_DELAY, 11, "sendrecv"),
    _header_extension("video", _PLAYOUT_DELAY, 11, "sendrecv"),
    _header_extension("audio", _PACKET_ID, 12, "sendrecv"),
    _header_extension("video", _PACKET_ID, 12, "sendrecv"),
]

#: mediasoup's supported RTP capabilities, as mediasoup JSON (not normalised).
SUPPORTED_RTP_CAPABILITIES: dict[str, Any] = {
    "codecs": _CODECS,
    "headerExtensions": _HEADER_EXTENSIONS,
}

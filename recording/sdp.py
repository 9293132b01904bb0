"""SDP for FFmpeg: what mediasoup Consumers send, one ``m=`` line per consumer.

One session description for every input of a segment, so FFmpeg opens (and
binds) every RTP port at once, probes the streams together, and aligns them by
the RTCP sender reports of the consumers (FFmpeg's RTP demuxer syncs the
streams of one session on their NTP times; separate SDP inputs are never
aligned with each other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Media", "consumer_sdp", "session_sdp"]


@dataclass(frozen=True)
class Media:
    """One RTP stream: the consumer's kind and RTP parameters, received on ``port``
    (RTCP on ``port + 1``)."""

    kind: str
    rtp_parameters: dict[str, Any]
    port: int


def _media_lines(kind: str, rtp_parameters: dict[str, Any], port: int, rtcp_port: int) -> list[str]:
    codec = rtp_parameters["codecs"][0]
    pt = codec["payloadType"]
    name = codec["mimeType"].split("/", 1)[1]
    rtpmap = f"{name}/{codec['clockRate']}"
    if kind == "audio" and codec.get("channels", 1) > 1:
        rtpmap += f"/{codec['channels']}"
    lines = [f"m={kind} {port} RTP/AVP {pt}", f"a=rtcp:{rtcp_port}", f"a=rtpmap:{pt} {rtpmap}"]
    params = codec.get("parameters") or {}
    if params:
        lines.append(f"a=fmtp:{pt} " + ";".join(f"{k}={v}" for k, v in params.items()))
    lines.append("a=recvonly")
    return lines


def _session_lines(ip: str) -> list[str]:
    return ["v=0", f"o=- 0 0 IN IP4 {ip}", "s=parley-recording", f"c=IN IP4 {ip}", "t=0 0"]


def session_sdp(media: list[Media], *, ip: str) -> str:
    """An SDP with one ``m=`` line per stream, in order (FFmpeg's stream index)."""
    if not media:
        raise ValueError("an SDP needs at least one stream")
    lines = _session_lines(ip)
    for m in media:
        lines += _media_lines(m.kind, m.rtp_parameters, m.port, m.port + 1)
    return "\r\n".join(lines) + "\r\n"


def consumer_sdp(kind: str, rtp_parameters: dict[str, Any], *, ip: str, port: int, rtcp_port: int) -> str:
    """An SDP describing one consumer's first codec, received on ``ip:port`` (RTCP
    on ``rtcp_port``)."""
    return "\r\n".join(_session_lines(ip) + _media_lines(kind, rtp_parameters, port, rtcp_port)) + "\r\n"

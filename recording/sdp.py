"""SDP files for FFmpeg: one RTP stream (what a mediasoup Consumer sends) per file."""

from __future__ import annotations

from typing import Any

__all__ = ["consumer_sdp"]


def consumer_sdp(kind: str, rtp_parameters: dict[str, Any], *, ip: str, port: int, rtcp_port: int) -> str:
    """An SDP describing the consumer's first codec, received on ``ip:port`` (RTCP on
    ``rtcp_port``)."""
    codec = rtp_parameters["codecs"][0]
    pt = codec["payloadType"]
    name = codec["mimeType"].split("/", 1)[1]
    rtpmap = f"{name}/{codec['clockRate']}"
    if kind == "audio" and codec.get("channels", 1) > 1:
        rtpmap += f"/{codec['channels']}"
    lines = [
        "v=0",
        f"o=- 0 0 IN IP4 {ip}",
        "s=parley-recording",
        f"c=IN IP4 {ip}",
        "t=0 0",
        f"m={kind} {port} RTP/AVP {pt}",
        f"a=rtcp:{rtcp_port}",
        f"a=rtpmap:{pt} {rtpmap}",
    ]
    params = codec.get("parameters") or {}
    if params:
        lines.append(f"a=fmtp:{pt} " + ";".join(f"{k}={v}" for k, v in params.items()))
    lines.append("a=recvonly")
    return "\r\n".join(lines) + "\r\n"

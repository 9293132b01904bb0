"""Fixtures for the signaling tests: the real app on loopback and raw protoo clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Server, running_server
from tests.e2e.protoo_client import ProtooClient

# Fake but well-formed client parameters (what mediasoup-client would send).
OPUS = {
    "mid": "0",
    "codecs": [
        {
            "mimeType": "audio/opus",
            "payloadType": 111,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"useinbandfec": 1},
            "rtcpFeedback": [],
        }
    ],
    "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 1}],
    "encodings": [{"ssrc": 11111111}],
    "rtcp": {"cname": "test"},
}
VP8 = {
    "mid": "1",
    "codecs": [
        {
            "mimeType": "video/VP8",
            "payloadType": 96,
            "clockRate": 90000,
            "rtcpFeedback": [
                {"type": "nack"},
                {"type": "nack", "parameter": "pli"},
                {"type": "ccm", "parameter": "fir"},
            ],
        },
        {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": 96}},
    ],
    "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 1}],
    "encodings": [{"ssrc": 22222222, "rtx": {"ssrc": 22222223}}],
    "rtcp": {"cname": "test"},
}
SCTP_CAPS = {"numStreams": {"OS": 1024, "MIS": 1024}}
DTLS = {"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": ":".join(["AB"] * 32)}]}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path) as srv:
        yield srv


Connect = Callable[..., Awaitable[ProtooClient]]


@pytest.fixture
async def connect(server: Server) -> AsyncIterator[Connect]:
    """``await connect(room, peer)``: a protoo client, closed after the test."""
    clients: list[ProtooClient] = []

    async def _connect(room_id: str, peer_id: str, **kwargs: Any) -> ProtooClient:
        client = await ProtooClient.connect(server.ws_url(room_id, peer_id), **kwargs)
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        if not client.closed.is_set():
            await client.close()
        elif client._own_session:
            await client.session.close()


async def setup_peer(
    client: ProtooClient,
    *,
    produce: bool = True,
    consume: bool = True,
    join: bool = True,
    sctp: bool = False,
    display_name: str = "peer",
    **join_extra: Any,
) -> dict[str, Any]:
    """Capabilities, transports and join, as the demo client does; returns what it got."""
    caps = await client.request("getRouterRtpCapabilities")
    out: dict[str, Any] = {"caps": caps}
    if produce:
        out["send"] = await client.request(
            "createWebRtcTransport",
            {"producing": True, "consuming": False, "sctpCapabilities": SCTP_CAPS if sctp else None},
        )
    if consume:
        out["recv"] = await client.request(
            "createWebRtcTransport",
            {"producing": False, "consuming": True, "sctpCapabilities": SCTP_CAPS if sctp else None},
        )
    if join:
        out["join"] = await client.request(
            "join",
            {
                "displayName": display_name,
                "device": {"name": "test"},
                "rtpCapabilities": caps,
                "sctpCapabilities": SCTP_CAPS if sctp else None,
                **join_extra,
            },
        )
    return out

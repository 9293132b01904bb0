"""The demo's broadcaster REST API: every route, its answers and its errors."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import Server
from tests.integration.signaling.conftest import DTLS, OPUS, SCTP_CAPS, VP8, Connect, setup_peer
from tests.polling import eventually

pytestmark = pytest.mark.timeout(60)


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def test_broadcaster_routes_and_errors(server: Server, connect: Connect) -> None:
    alice = await connect("r", "alice")
    a = await setup_peer(alice, display_name="Alice")
    produced = await alice.request("produce", {"transportId": a["send"]["id"], "kind": "video", "rtpParameters": VP8})
    base = f"{server.base_url}/rooms/r"
    async with aiohttp.ClientSession() as http:
        status, body = await call(http, "GET", f"{server.base_url}/rooms/nope")
        assert status == 404 and body["error"]["code"] == "not_found"
        status, caps = await call(http, "GET", base)
        assert status == 200 and caps == server.rooms.rooms["r"].primary.rtp_capabilities

        # Creation: validation, the peers it may consume, duplicates.
        for bad in [
            {},
            {"id": "b"},
            {"id": "b", "displayName": "B"},
            {"id": "b", "displayName": "B", "device": {}},
            {"id": "b", "displayName": "B", "device": {"name": "x"}, "rtpCapabilities": {"codecs": 1}},
        ]:
            status, body = await call(http, "POST", f"{base}/broadcasters", json=bad)
            assert status == 400, (bad, body)
        status, body = await call(
            http, "POST", f"{base}/broadcasters", data=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert status == 400 and body["error"]["code"] == "invalid_json"
        status, body = await call(
            http,
            "POST",
            f"{base}/broadcasters",
            json={
                "id": "bc",
                "displayName": "Bcast",
                "device": {"name": "GStreamer", "version": "1.22"},
                "rtpCapabilities": caps,
            },
        )
        assert status == 200
        assert body == {
            "peers": [
                {
                    "id": "alice",
                    "displayName": "Alice",
                    "device": {"name": "test"},
                    "producers": [{"id": produced["id"], "kind": "video"}],
                }
            ]
        }
        assert await alice.wait_for("newPeer") == {
            "id": "bc",
            "displayName": "Bcast",
            "device": {"flag": "broadcaster", "name": "GStreamer", "version": "1.22"},
        }
        status, body = await call(
            http, "POST", f"{base}/broadcasters", json={"id": "bc", "displayName": "Again", "device": {"name": "x"}}
        )
        assert status == 409
        status, body = await call(
            http, "POST", f"{base}/broadcasters", json={"id": "alice", "displayName": "Fake", "device": {"name": "x"}}
        )
        assert status == 409

        # Transports.
        status, body = await call(http, "POST", f"{base}/broadcasters/nobody/transports", json={"type": "plain"})
        assert status == 404
        status, body = await call(http, "POST", f"{base}/broadcasters/bc/transports", json={"type": "srt"})
        assert status == 400 and "type" in body["error"]["message"]
        status, webrtc = await call(
            http, "POST", f"{base}/broadcasters/bc/transports", json={"type": "webrtc", "sctpCapabilities": SCTP_CAPS}
        )
        assert status == 200 and set(webrtc) == {
            "id",
            "iceParameters",
            "iceCandidates",
            "dtlsParameters",
            "sctpParameters",
        }
        status, body = await call(
            http, "POST", f"{base}/broadcasters/bc/transports/{webrtc['id']}/connect", json={"dtlsParameters": DTLS}
        )
        assert status == 200
        status, body = await call(
            http,
            "POST",
            f"{base}/broadcasters/bc/transports/{webrtc['id']}/connect",
            json={"dtlsParameters": {"fingerprints": []}},
        )
        assert status == 400
        status, plain = await call(
            http,
            "POST",
            f"{base}/broadcasters/bc/transports",
            json={"type": "plain", "comedia": False, "rtcpMux": True},
        )
        assert status == 200 and plain["ip"] == "127.0.0.1" and "rtcpPort" not in plain
        status, body = await call(
            http, "POST", f"{base}/broadcasters/bc/transports/{plain['id']}/connect", json={"dtlsParameters": DTLS}
        )
        assert status == 400 and "not a WebRtcTransport" in body["error"]["message"]
        status, body = await call(
            http,
            "POST",
            f"{base}/broadcasters/bc/transports/nope/producers",
            json={"kind": "audio", "rtpParameters": OPUS},
        )
        assert status == 404

        # Producing through the WebRTC transport: Alice consumes it.
        status, body = await call(
            http,
            "POST",
            f"{base}/broadcasters/bc/transports/{webrtc['id']}/producers",
            json={"kind": "audio", "rtpParameters": {**OPUS, "codecs": [{"mimeType": "x"}]}},
        )
        assert status == 400
        status, body = await call(
            http,
            "POST",
            f"{base}/broadcasters/bc/transports/{webrtc['id']}/producers",
            json={"kind": "audio", "rtpParameters": OPUS},
        )
        assert status == 200
        request = await alice.wait_for("newConsumer", kind="request")
        assert request["peerId"] == "bc" and request["producerId"] == body["id"]

        # Consuming Alice's video over the plain transport, sent to our own UDP socket.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            port = sock.getsockname()[1]
            status, body = await call(
                http,
                "POST",
                f"{base}/broadcasters/bc/transports/{plain['id']}/plain/connect",
                json={"ip": "127.0.0.1", "port": port},
            )
            assert status == 200
            status, body = await call(http, "POST", f"{base}/broadcasters/bc/transports/{plain['id']}/consume")
            assert status == 400 and "producerId" in body["error"]["message"]
            status, body = await call(
                http, "POST", f"{base}/broadcasters/bc/transports/{plain['id']}/consume", params={"producerId": "nope"}
            )
            assert status == 404
            status, consumer = await call(
                http,
                "POST",
                f"{base}/broadcasters/bc/transports/{plain['id']}/consume",
                params={"producerId": produced["id"]},
            )
            assert status == 200
            assert set(consumer) == {"id", "producerId", "kind", "rtpParameters", "type"}
            assert consumer["kind"] == "video" and consumer["type"] == "simple"
            room = server.rooms.rooms["r"]
            assert consumer["id"] in room.broadcasters["bc"].consumers

        # Data: a data producer on the WebRTC transport, consumed by... the broadcaster itself.
        status, dp = await call(
            http,
            "POST",
            f"{base}/broadcasters/bc/transports/{webrtc['id']}/produce/data",
            json={"sctpStreamParameters": {"streamId": 3}, "label": "bot", "protocol": "x"},
        )
        assert status == 200 and "id" in dp
        status, dc = await call(
            http,
            "POST",
            f"{base}/broadcasters/bc/transports/{webrtc['id']}/consume/data",
            json={"dataProducerId": dp["id"]},
        )
        assert status == 200 and set(dc) == {"id", "streamId"}
        status, body = await call(
            http,
            "POST",
            f"{base}/broadcasters/bc/transports/{plain['id']}/consume/data",
            json={"dataProducerId": dp["id"]},
        )
        assert status == 400  # no SCTP on that transport

        # The room view shows the broadcaster.
        status, view = await call(http, "GET", f"{server.base_url}/api/rooms/r")
        assert status == 200
        [bc] = view["broadcasters"]
        assert bc["id"] == "bc" and len(bc["transports"]) == 2 and len(bc["producers"]) == 1

        # Deletion.
        status, body = await call(http, "DELETE", f"{base}/broadcasters/bc")
        assert status == 200 and body == "broadcaster deleted"
        assert await alice.wait_for("peerClosed") == {"peerId": "bc"}
        await alice.wait_for("consumerClosed", lambda d: d["consumerId"] == request["id"])
        await eventually(lambda: not room.broadcasters)
        status, body = await call(http, "DELETE", f"{base}/broadcasters/bc")
        assert status == 404
    await asyncio.sleep(0)


async def test_broadcaster_joins_are_seen_by_peers_joining_later(server: Server, connect: Connect) -> None:
    first = await connect("r", "first")
    await setup_peer(first)
    async with aiohttp.ClientSession() as http:
        base = f"{server.base_url}/rooms/r"
        await call(http, "POST", f"{base}/broadcasters", json={"id": "b1", "displayName": "B", "device": {"name": "x"}})
        status, t = await call(http, "POST", f"{base}/broadcasters/b1/transports", json={"type": "plain"})
        assert status == 200 and "rtcpPort" in t  # comedia, no rtcpMux by default, as the demo
        status, p = await call(
            http,
            "POST",
            f"{base}/broadcasters/b1/transports/{t['id']}/producers",
            json={"kind": "audio", "rtpParameters": OPUS},
        )
        assert status == 200
        late = await connect("r", "late")
        got = await setup_peer(late)
        assert {"id": "b1", "displayName": "B", "device": {"flag": "broadcaster", "name": "x", "version": None}} in got[
            "join"
        ]["peers"]
        request = await late.wait_for("newConsumer", kind="request")
        assert request["peerId"] == "b1" and request["producerId"] == p["id"]

"""Limits (issue 15): each refused with 429 (or 413/1007) and a stable code, nothing else harmed.

Every test runs the real app with one limit set low and checks the refusal, that what
existed goes on working, and that the limit frees up when what counted goes away.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import Server, running_server
from tests.e2e.protoo_client import ProtooClient
from tests.integration.signaling.conftest import OPUS, VP8, setup_peer
from tests.polling import eventually

pytestmark = pytest.mark.timeout(60)


async def raw_request(client: ProtooClient, method: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The raw protoo response (with ``code`` on errors)."""
    request_id = client.next_id()
    await client.send_raw(json.dumps({"request": True, "id": request_id, "method": method, "data": data or {}}))
    return await client.wait_response(request_id)


async def refused_upgrade(server: Server, room: str, peer: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of an upgrade the server refuses."""
    async with aiohttp.ClientSession() as http:
        headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Protocol": "protoo"}
        headers |= {"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        async with http.get(server.ws_url(room, peer).replace("ws://", "http://"), headers=headers) as resp:
            return resp.status, await resp.json()


class Clients:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.all: list[ProtooClient] = []

    async def connect(self, room: str, peer: str) -> ProtooClient:
        """A connected client whose peer the room has taken in: the room is made after
        the upgrade's answer, so the socket being open does not yet mean the peer (and the
        room) count against a limit; ``mediasoup-version`` is sent once they do."""
        client = await ProtooClient.connect(self.server.ws_url(room, peer))
        self.all.append(client)
        await client.wait_for("mediasoup-version")
        return client

    async def close(self) -> None:
        for client in self.all:
            if not client.closed.is_set():
                await client.close()
            elif client._own_session:
                await client.session.close()


async def test_rooms_per_node(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=1, max_rooms=2) as server:
        clients = Clients(server)
        try:
            a = await clients.connect("r1", "a")
            await clients.connect("r2", "b")
            status, body = await refused_upgrade(server, "r3", "c")
            assert status == 429 and body["error"]["code"] == "rooms_limit", body
            assert "MAX_ROOMS" in body["error"]["message"]
            assert set(server.rooms.rooms) == {"r1", "r2"}
            # A full node still takes peers into its rooms.
            await clients.connect("r1", "d")
            await a.close()
            await clients.all[2].close()
            await eventually(lambda: "r1" not in server.rooms.rooms)
            c = await clients.connect("r3", "c")
            assert (await c.request("getRouterRtpCapabilities"))["codecs"]
        finally:
            await clients.close()


async def test_peers_per_room_and_a_takeover_still_works(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=1, max_peers_per_room=2) as server:
        clients = Clients(server)
        try:
            await setup_peer(await clients.connect("r", "a"), produce=False, consume=False)
            await clients.connect("r", "b")
            status, body = await refused_upgrade(server, "r", "c")
            assert status == 429 and body["error"]["code"] == "peers_limit", body
            again = await clients.connect("r", "a")  # the same peerId takes over its session
            await setup_peer(again, produce=False, consume=False)
            assert set(server.rooms.rooms["r"].peers) == {"a", "b"}
        finally:
            await clients.close()


async def test_transports_producers_and_data_producers_per_peer(tmp_path: Path) -> None:
    async with running_server(
        tmp_path,
        mediasoup_num_workers=1,
        max_transports_per_peer=2,
        max_producers_per_peer=1,
        max_data_producers_per_peer=1,
    ) as server:
        clients = Clients(server)
        try:
            alice = await clients.connect("r", "alice")
            a = await setup_peer(alice, sctp=True)
            response = await raw_request(alice, "createWebRtcTransport", {"producing": True})
            assert (response["errorCode"], response["code"]) == (429, "transports_limit"), response
            assert "MAX_TRANSPORTS_PER_PEER" in response["errorReason"]
            send = a["send"]["id"]
            await alice.request("produce", {"transportId": send, "kind": "audio", "rtpParameters": OPUS})
            response = await raw_request(alice, "produce", {"transportId": send, "kind": "video", "rtpParameters": VP8})
            assert (response["errorCode"], response["code"]) == (429, "producers_limit"), response
            stream = {"transportId": send, "sctpStreamParameters": {"streamId": 0, "ordered": True}, "label": "chat"}
            await alice.request("produceData", stream)
            stream["sctpStreamParameters"] = {"streamId": 1, "ordered": True}
            response = await raw_request(alice, "produceData", stream)
            assert (response["errorCode"], response["code"]) == (429, "data_producers_limit"), response
            peer = server.rooms.rooms["r"].peers["alice"]
            assert (len(peer.transports), len(peer.producers), len(peer.data_producers)) == (2, 1, 1)
            assert (await alice.request("getRouterRtpCapabilities"))["codecs"]  # the connection goes on
        finally:
            await clients.close()


async def test_consumers_per_peer(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=1, max_consumers_per_peer=1) as server:
        clients = Clients(server)
        try:
            alice = await clients.connect("r", "alice")
            a = await setup_peer(alice)
            bob = await clients.connect("r", "bob")
            await setup_peer(bob)
            send = a["send"]["id"]
            await alice.request("produce", {"transportId": send, "kind": "audio", "rtpParameters": OPUS})
            await alice.request("produce", {"transportId": send, "kind": "video", "rtpParameters": VP8})
            await bob.wait_for("newConsumer", kind="request")
            await asyncio.sleep(0.3)
            assert bob.count("newConsumer", kind="request") == 1
            assert len(server.rooms.rooms["r"].peers["bob"].consumers) == 1
        finally:
            await clients.close()


async def test_request_rate_per_peer(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, mediasoup_num_workers=1, signaling_requests_per_second=1, signaling_request_burst=5
    ) as server:
        clients = Clients(server)
        try:
            alice = await clients.connect("r", "alice")
            answers = await asyncio.gather(*(raw_request(alice, "getRouterRtpCapabilities") for _ in range(10)))
            refused = [a for a in answers if not a["ok"]]
            assert sum(1 for a in answers if a["ok"]) == 5
            assert len(refused) == 5 and all((a["errorCode"], a["code"]) == (429, "rate_limited") for a in refused)
            await asyncio.sleep(1.1)  # a token came back
            assert (await raw_request(alice, "getRouterRtpCapabilities"))["ok"]
        finally:
            await clients.close()


async def test_unjoined_sockets_are_closed_and_their_room_goes(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=1, signaling_join_timeout_seconds=0.5) as server:
        clients = Clients(server)
        try:
            idle = await clients.connect("idle", "x")
            joined = await clients.connect("busy", "y")
            await setup_peer(joined, produce=False, consume=False)
            await asyncio.wait_for(idle.closed.wait(), 5)
            assert idle.close_code == 4000
            await eventually(lambda: "idle" not in server.rooms.rooms)
            await asyncio.sleep(0.6)
            assert not joined.closed.is_set() and "busy" in server.rooms.rooms
        finally:
            await clients.close()


async def test_deep_json_closes_cleanly_with_1007(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=1) as server:
        clients = Clients(server)
        try:
            client = await clients.connect("deep", "x")
            await client.send_raw('{"request":true,"id":1,"method":"join","data":' + "[" * 5000 + "]" * 5000 + "}")
            await asyncio.wait_for(client.closed.wait(), 5)
            assert client.close_code == 1007
            await eventually(lambda: "deep" not in server.rooms.rooms)
            ok = await clients.connect("deep", "y")  # the room can be made again
            app_data: dict[str, Any] = {}
            cursor = app_data
            for _ in range(20):
                cursor["x"] = {}
                cursor = cursor["x"]
            send = (await setup_peer(ok))["send"]["id"]
            response = await raw_request(
                ok, "produce", {"transportId": send, "kind": "audio", "rtpParameters": OPUS, "appData": app_data}
            )
            assert response["errorCode"] == 400 and "appData" in response["errorReason"], response
        finally:
            await clients.close()


async def test_a_connection_aborted_during_the_upgrade_leaves_no_room(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=1) as server:
        path = server.ws_url("aborted", "x").removeprefix(f"ws://127.0.0.1:{server.port}")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: protoo\r\n\r\n"
        ).encode()
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(request)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST, before reading the 101
        await asyncio.sleep(0.3)
        await eventually(lambda: not server.rooms.rooms)


async def test_broadcasters_per_room_and_recordings_per_node(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, mediasoup_num_workers=1, max_broadcasters_per_room=1, max_recordings=0
    ) as server:
        clients = Clients(server)
        try:
            alice = await clients.connect("r", "alice")
            a = await setup_peer(alice)
            body = {"displayName": "B", "device": {"name": "x"}, "rtpCapabilities": a["caps"]}
            async with aiohttp.ClientSession() as http:
                url = f"{server.base_url}/rooms/r/broadcasters"
                async with http.post(url, json={"id": "b1", **body}) as resp:
                    assert resp.status == 200, await resp.text()
                async with http.post(url, json={"id": "b2", **body}) as resp:
                    error = (await resp.json())["error"]
                    assert resp.status == 429 and error["code"] == "broadcasters_limit", error
                async with http.post(f"{server.base_url}/api/rooms/r/recording") as resp:
                    error = (await resp.json())["error"]
                    assert resp.status == 429 and error["code"] == "recordings_limit", error
            assert set(server.rooms.rooms["r"].broadcasters) == {"b1"}
            assert (await alice.request("getRouterRtpCapabilities"))["codecs"]
        finally:
            await clients.close()


async def test_the_issues_500s_are_400s_now(tmp_path: Path) -> None:
    """What answered 500 with the exception text on the issue's server: NaN, infinite,
    string or list maxBitrate, a dict rid, a lone surrogate in mid; CR/LF in codec
    parameters and names. Each is a 400 naming the field; the peer goes on."""
    async with running_server(tmp_path, mediasoup_num_workers=1) as server:
        clients = Clients(server)
        try:
            alice = await clients.connect("r", "alice")
            send = (await setup_peer(alice))["send"]["id"]
            encoding = {"ssrc": 22222222, "rtx": {"ssrc": 22222223}}
            bad_encodings = [{"maxBitrate": value} for value in ("NaN", "Infinity", '"100000"', "[1]")]
            bad_encodings.append({"rid": "{}"})
            for extra in bad_encodings:
                fields = ", ".join(f'"{key}": {value}' for key, value in extra.items())
                rtp = json.dumps({**VP8, "encodings": []})[:-1] + ', "encodings": ['
                rtp += json.dumps(encoding)[:-1] + ", " + fields + "}]}"
                rtp = rtp.replace('"encodings": [], ', "")
                request_id = alice.next_id()
                frame = f'{{"request": true, "id": {request_id}, "method": "produce", "data": '
                frame += f'{{"transportId": "{send}", "kind": "video", "rtpParameters": {rtp}}}}}'
                await alice.send_raw(frame)
                response = await alice.wait_response(request_id)
                assert response["errorCode"] == 400, (extra, response)
                assert "encodings" in response["errorReason"], response
            vp8: dict[str, Any] = VP8
            bad_parameters: list[dict[str, Any]] = [
                {**vp8, "mid": "\ud800"},
                {**vp8, "codecs": [{**vp8["codecs"][0], "parameters": {"x-google\r\nstart": "1"}}]},
                {**vp8, "encodings": [{**encoding, "scalabilityMode": "L1T3\r\na=inject"}]},
            ]
            for parameters in bad_parameters:
                response = await raw_request(
                    alice, "produce", {"transportId": send, "kind": "video", "rtpParameters": parameters}
                )
                assert response["errorCode"] == 400 and "internal" not in response["errorReason"], response
            response = await raw_request(alice, "changeDisplayName", {"displayName": "Eve\u202eevil"})
            assert response["errorCode"] == 400, response
            await alice.request("produce", {"transportId": send, "kind": "video", "rtpParameters": VP8})
        finally:
            await clients.close()

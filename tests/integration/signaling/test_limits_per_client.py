"""Per-client limits (issue 15): open WebSockets and new ones per address, REST requests
per address and per principal, broadcaster creations per address; X-Forwarded-For
from trusted proxies only; bounded tables.

Each test runs the real app on 127.0.0.1 with one limit set low; clients bind distinct
loopback source addresses (127.0.0.2, .3...: all of 127/8 is loopback on Linux), so
one address is refused while another is served. Loopback is not exempt.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.auth import ACCESS, VideoGrants, mint
from control.cluster import Registry
from control.ratelimit import CLIENT_LIMITS
from tests.e2e.cluster_nodes import cluster_node
from tests.e2e.harness import Server, running_server
from tests.e2e.protoo_client import ProtooClient
from tests.integration.test_cluster import redis_url, registry  # noqa: F401 (fixtures)
from tests.polling import eventually

pytestmark = pytest.mark.timeout(60)

#: The cluster test's names (its Redis database may be shared with other runs on this machine).
ROOM = "limits-relayed"
RELAY_JOIN = {"displayName": "x", "device": {"name": "test"}, "rtpCapabilities": {"codecs": [], "headerExtensions": []}}

API_KEY = "limitskey"
API_SECRET = "s" * 40
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Protocol": "protoo",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@contextlib.asynccontextmanager
async def from_address(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client whose connections come from ``address`` (a loopback address)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0))) as http:
        yield http


async def refusal(resp: aiohttp.ClientResponse, code: str) -> dict[str, Any]:
    """Check a 429 of the one error shape with ``code`` and a Retry-After; its body."""
    body = await resp.json()
    assert resp.status == 429 and body["error"]["code"] == code, (resp.status, body)
    assert set(body["error"]) >= {"code", "message"}
    assert int(resp.headers["Retry-After"]) >= 1
    return body


async def upgrade(http: aiohttp.ClientSession, server: Server, room: str, peer: str) -> aiohttp.ClientResponse:
    """An upgrade request the server refuses (read before the connection is reused)."""
    resp = await http.get(server.ws_url(room, peer).replace("ws://", "http://"), headers=UPGRADE)
    await resp.read()
    return resp


async def test_open_connections_per_address(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=1, max_connections_per_ip=2) as server:
        limits = server.app[CLIENT_LIMITS]
        async with from_address("127.0.0.2") as two, from_address("127.0.0.3") as three:
            a = await ProtooClient.connect(server.ws_url("r", "a"), session=two)
            b = await ProtooClient.connect(server.ws_url("r", "b"), session=two)
            try:
                await a.wait_for("mediasoup-version")
                await b.wait_for("mediasoup-version")
                resp = await upgrade(two, server, "r2", "c")
                body = await refusal(resp, "ip_connections_limit")
                assert "MAX_CONNECTIONS_PER_IP" in body["error"]["message"]
                assert "r2" not in server.rooms.rooms  # refused before anything was made
                # Another address is served; the open connections keep working.
                c = await ProtooClient.connect(server.ws_url("r", "c"), session=three)
                await c.wait_for("mediasoup-version")
                assert (await a.request("getRouterRtpCapabilities"))["codecs"]
                assert (await c.request("getRouterRtpCapabilities"))["codecs"]
                assert limits.connections == {"127.0.0.2": 2, "127.0.0.3": 1}
                # A closed socket frees its place.
                await b.close()
                await eventually(lambda: limits.connections.get("127.0.0.2") == 1)
                d = await ProtooClient.connect(server.ws_url("r", "d"), session=two)
                await d.wait_for("mediasoup-version")
                for client in (c, d):
                    await client.close()
            finally:
                for client in (a, b):
                    if not client.closed.is_set():
                        await client.close()
        await eventually(lambda: not limits.connections)


async def try_connect(http: aiohttp.ClientSession, server: Server, room: str, peer: str) -> ProtooClient | None:
    """A connected client, or None when the upgrade is refused with 429."""
    try:
        return await ProtooClient.connect(server.ws_url(room, peer), session=http)
    except aiohttp.WSServerHandshakeError as error:
        assert error.status == 429, error
        return None


async def test_new_connections_per_address_and_the_bucket_refills(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, mediasoup_num_workers=1, connections_per_second_per_ip=4, connection_burst_per_ip=2
    ) as server:
        clients: list[ProtooClient] = []
        async with from_address("127.0.0.4") as four, from_address("127.0.0.5") as five:
            try:
                for peer in ("a", "b"):
                    clients.append(await ProtooClient.connect(server.ws_url("r", peer), session=four))
                await refusal(await upgrade(four, server, "r", "c"), "ip_connection_rate_limited")
                clients.append(await ProtooClient.connect(server.ws_url("r", "e"), session=five))
                # The bucket refills (4 a second) and the address is served again; a
                # refused attempt takes no token.
                again = await eventually(
                    lambda: try_connect(four, server, "r", "c"), timeout=10, what="the bucket refilled"
                )
                clients.append(again)
                for client in clients:
                    assert (await client.request("getRouterRtpCapabilities"))["codecs"]
            finally:
                for client in clients:
                    await client.close()


async def test_x_forwarded_for_only_from_trusted_proxies(tmp_path: Path) -> None:
    async with running_server(
        tmp_path,
        mediasoup_num_workers=1,
        trusted_proxies="127.0.0.6/32",
        rest_requests_per_second_per_ip=0.01,
        rest_request_burst_per_ip=2,
    ) as server:
        url = f"{server.base_url}/api/health"

        async def get(http: aiohttp.ClientSession, forwarded: str) -> aiohttp.ClientResponse:
            resp = await http.get(url, headers={"X-Forwarded-For": forwarded})
            await resp.read()
            return resp

        async with from_address("127.0.0.6") as proxy, from_address("127.0.0.7") as stranger:
            # Untrusted peer: its own address counts, whatever the header says.
            assert [(await get(stranger, f"10.0.0.{i}")).status for i in (1, 2)] == [200, 200]
            await refusal(await get(stranger, "10.0.0.3"), "ip_rate_limited")
            # Trusted proxy: the client it names counts (and the proxy itself is not limited).
            assert [(await get(proxy, "10.0.0.1")).status for _ in range(2)] == [200, 200]
            await refusal(await get(proxy, "10.0.0.1"), "ip_rate_limited")
            assert (await get(proxy, "10.0.0.2")).status == 200
            # A client cannot pick its address by prepending one: the rightmost untrusted entry counts.
            await refusal(await get(proxy, "192.0.2.9, 10.0.0.1"), "ip_rate_limited")
            # Through a chain of trusted proxies (127.0.0.6 again), the client before them.
            await refusal(await get(proxy, "10.0.0.1, 127.0.0.6"), "ip_rate_limited")
            assert (await get(proxy, "10.0.0.3, 127.0.0.6")).status == 200
            # A malformed entry stops the walk: the proxy itself counts, not what precedes it.
            assert [(await get(proxy, f"10.0.1.{i}, not-an-ip")).status for i in (1, 2)] == [200, 200]
            await refusal(await get(proxy, "10.0.1.3, not-an-ip"), "ip_rate_limited")
            assert (await get(proxy, "10.0.1.3")).status == 200
        limits = server.app[CLIENT_LIMITS]
        assert "192.0.2.9" not in limits.rest_by_address
        assert "10.0.1.1" not in limits.rest_by_address and "127.0.0.6" in limits.rest_by_address


async def test_rest_requests_per_principal_and_per_address(tmp_path: Path) -> None:
    async with running_server(
        tmp_path,
        mediasoup_num_workers=1,
        api_key=API_KEY,
        api_secret=API_SECRET,
        rest_requests_per_second=0.01,
        rest_request_burst=3,
        rest_requests_per_second_per_ip=0.01,
        rest_request_burst_per_ip=8,
    ) as server:
        url = f"{server.base_url}/api/rooms"
        keys = server.app[ACCESS].keys
        ops = {"Authorization": f"Bearer {mint(keys, identity='ops', grants=VideoGrants(room_list=True))}"}
        other = {"Authorization": f"Bearer {mint(keys, identity='other', grants=VideoGrants(room_list=True))}"}

        async def get(http: aiohttp.ClientSession, headers: dict[str, str]) -> aiohttp.ClientResponse:
            resp = await http.get(url, headers=headers)
            await resp.read()
            return resp

        async with from_address("127.0.0.8") as eight, from_address("127.0.0.9") as nine:
            assert [(await get(eight, ops)).status for _ in range(3)] == [200, 200, 200]
            body = await refusal(await get(eight, ops), "principal_rate_limited")
            assert "REST_REQUESTS_PER_SECOND" in body["error"]["message"]
            # The principal's bucket holds from every address; another principal is served.
            await refusal(await get(nine, ops), "principal_rate_limited")
            assert (await get(eight, other)).status == 200
            # Bad tokens count against the address, and are refused before being verified.
            bad = {"Authorization": "Bearer not.a.token"}
            statuses = [(await get(nine, bad)).status for _ in range(7)]  # 8, less the one above
            assert statuses == [401] * 7, statuses
            await refusal(await get(nine, bad), "ip_rate_limited")
            await refusal(await get(nine, other), "ip_rate_limited")
            assert (await get(eight, other)).status == 200


async def test_broadcaster_creations_per_address(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=1, broadcasters_per_minute_per_ip=2) as server:
        alice = await ProtooClient.connect(server.ws_url("r", "alice"))
        try:
            await alice.wait_for("mediasoup-version")
            url = f"{server.base_url}/rooms/r/broadcasters"

            async def create(http: aiohttp.ClientSession, broadcaster: str) -> aiohttp.ClientResponse:
                body = {"id": broadcaster, "displayName": broadcaster, "device": {"name": "x"}}
                resp = await http.post(url, json=body)
                await resp.read()
                return resp

            async with from_address("127.0.0.10") as ten, from_address("127.0.0.11") as eleven:
                assert [(await create(ten, b)).status for b in ("b1", "b2")] == [200, 200]
                body = await refusal(await create(ten, "b3"), "ip_broadcasters_limit")
                assert "BROADCASTERS_PER_MINUTE_PER_IP" in body["error"]["message"]
                assert (await create(eleven, "b4")).status == 200
                # Other requests of the refused address are served; what it made is intact.
                async with ten.get(f"{server.base_url}/api/rooms/r") as resp:
                    assert resp.status == 200
                assert set(server.rooms.rooms["r"].broadcasters) == {"b1", "b2", "b4"}
                async with ten.delete(f"{url}/b1") as resp:
                    assert resp.status == 200
        finally:
            await alice.close()


async def test_a_flood_of_addresses_keeps_the_tables_bounded(tmp_path: Path) -> None:
    async with running_server(
        tmp_path,
        mediasoup_num_workers=1,
        trusted_proxies="127.0.0.12",
        rate_limit_max_clients=16,
        rest_requests_per_second_per_ip=0.01,
        rest_request_burst_per_ip=1,
    ) as server:
        limits = server.app[CLIENT_LIMITS]
        url = f"{server.base_url}/api/health"
        async with from_address("127.0.0.12") as proxy, from_address("127.0.0.13") as direct:
            for i in range(300):
                async with proxy.get(url, headers={"X-Forwarded-For": f"10.9.{i // 256}.{i % 256}"}) as resp:
                    assert resp.status == 200, i
                assert len(limits.rest_by_address) <= 16
            assert limits.rest_by_address.evicted >= 300 - 16
            # A client seen last is still limited (its bucket is among the newest kept).
            async with proxy.get(url, headers={"X-Forwarded-For": "10.9.1.43"}) as resp:
                await refusal(resp, "ip_rate_limited")
            async with direct.get(url) as resp:
                assert resp.status == 200
        assert all(len(table) <= 16 for table in limits.tables().values())


async def test_relayed_connections_count_on_the_node_the_client_reached(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 (fixture)
    registry: Registry,  # noqa: F811 (fixture)
) -> None:
    async with (
        cluster_node(tmp_path, redis_url, "limits-a", rtc_base=45000, max_connections_per_ip=3) as a,
        cluster_node(tmp_path, redis_url, "limits-b", rtc_base=46000, max_connections_per_ip=1) as b,
    ):
        assert await registry.place(ROOM, "limits-b") == "limits-b"
        clients: list[ProtooClient] = []
        try:
            # Three clients reach A; B serves them all over A's relay (from A's address).
            for peer in ("p1", "p2", "p3"):
                clients.append(await ProtooClient.connect(a.ws_url(ROOM, peer)))
                await clients[-1].request("join", RELAY_JOIN)
            assert set(b.rooms.rooms[ROOM].peers) == {"p1", "p2", "p3"}
            assert b.app[CLIENT_LIMITS].connections == {}
            # A counted them under their own address: a fourth is refused there.
            async with aiohttp.ClientSession() as http:
                await refusal(await upgrade(http, a, ROOM, "p4"), "ip_connections_limit")
                # B counts the clients that reach it, and a forged relay header is refused.
                clients.append(await ProtooClient.connect(b.ws_url(ROOM, "p5")))
                await refusal(await upgrade(http, b, ROOM, "p6"), "ip_connections_limit")
                forged = await http.get(
                    b.ws_url(ROOM, "p7").replace("ws://", "http://"), headers={**UPGRADE, "X-Parley-Relay": "x"}
                )
                assert forged.status == 403 and (await forged.json())["error"]["code"] == "relay_token_invalid"
        finally:
            for client in clients:
                await client.close()


async def test_refusals_and_tracked_clients_are_in_the_metrics(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, mediasoup_num_workers=1, rest_requests_per_second_per_ip=0.01, rest_request_burst_per_ip=3
    ) as server:
        async with from_address("127.0.0.14") as fourteen, from_address("127.0.0.15") as fifteen:
            statuses = []
            for _ in range(4):
                async with fourteen.get(f"{server.base_url}/api/health") as resp:
                    statuses.append(resp.status)
            assert statuses == [200, 200, 200, 429]
            client = await ProtooClient.connect(server.ws_url("r", "a"), session=fourteen)
            try:
                async with fifteen.get(f"{server.base_url}/metrics") as resp:  # counted: /metrics is REST
                    assert resp.status == 200
                    text = await resp.text()
            finally:
                await client.close()
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(("parley_rate_limit", "parley_client_"))
        }
        assert samples['parley_rate_limited_total{code="ip_rate_limited"}'] == 1
        assert samples["parley_client_connections"] == 1 and samples["parley_client_addresses"] == 1
        assert samples['parley_rate_limit_tracked{table="rest_by_address"}'] == 2
        assert samples['parley_rate_limit_tracked{table="connection_rate"}'] == 1

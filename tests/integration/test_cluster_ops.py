"""Operating a cluster (control.cluster): a node that drains gets no new room but keeps
serving its own, and ``GET /api/rooms`` / ``GET /api/health`` of any node show the whole
cluster, behind the same access checks. Real nodes on loopback, one real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from control.auth import ACCESS, grants_from_names, mint
from control.cluster import Registry
from control.cluster.registry import NODE_TTL_MS
from tests.e2e.cluster_nodes import Node, cluster_node, eventually
from tests.e2e.protoo_client import ProtooClient
from tests.integration.test_cluster import JOIN

pytestmark = pytest.mark.timeout(120)

KEY, SECRET = "APIcluster", "c" * 40


@pytest.fixture
async def registry(redis_server) -> AsyncIterator[Registry]:
    """The cluster's registry in the test database of the loopback Redis (flushed)."""
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushdb()
    try:
        yield Registry(client)
    finally:
        await client.flushdb()
        await client.aclose()


async def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers or {}) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


def bearer(node: Node, names: str, room: str = "") -> dict[str, str]:
    grants = grants_from_names([n for n in names.split(",") if n], room=room)
    return {"Authorization": f"Bearer {mint(node.app[ACCESS].keys, identity='ops', grants=grants)}"}


async def joined(node: Node, room: str, peer: str) -> ProtooClient:
    client = await ProtooClient.connect(node.ws_url(room, peer))
    await client.request("join", JOIN)
    return client


async def test_a_draining_node_takes_no_new_room_and_keeps_serving_its_rooms(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=49000) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=50000) as b,
    ):
        await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        assert await registry.place("old", "b") == "b"
        carol = await joined(b, "old", "carol")
        clients = [carol]
        try:
            status, state = await get(f"{b.base_url}/api/cluster/drain", method="POST")
            assert status == 200 and state == {"nodeId": "b", "draining": True, "rooms": 1, "relayedClients": 0}
            assert (await registry.node("b")).draining  # type: ignore[union-attr]
            # Placement passes over B: the fallback, or no one when the fallback drains too.
            assert await registry.place("new", "b", fallback="a") == "a"
            assert await registry.place("nowhere", "b") is None
            # A client of a new room that connects to B is relayed to a node taking rooms.
            await eventually(lambda: any(n.draining for n in b.cluster.nodes), what="B sees itself draining")
            clients.append(await joined(b, "fresh", "dan"))
            assert await registry.owner("fresh") == "a" and set(a.rooms.rooms["fresh"].peers) == {"dan"}
            assert "fresh" not in b.rooms.rooms
            # B's room keeps serving: its peer is answered, a new peer joins it through A.
            assert (await carol.request("getRouterRtpCapabilities"))["codecs"]
            clients.append(erin := await ProtooClient.connect(a.ws_url("old", "erin")))
            answer = await erin.request("join", JOIN)
            assert [p["id"] for p in answer["peers"]] == ["carol"] and set(b.rooms.rooms["old"].peers) == {
                "carol",
                "erin",
            }
            # A load balancer's health check sees it.
            status, health = await get(f"{b.base_url}/api/health")
            assert status == 503 and health["status"] == "draining" and health["cluster"]["draining"] is True
            assert not b.cluster.drained
            # Called off: B takes new rooms again.
            status, state = await get(f"{b.base_url}/api/cluster/drain", method="DELETE")
            assert status == 200 and state["draining"] is False
            assert await registry.place("again", "b") == "b"
            assert (await get(f"{b.base_url}/api/health"))[0] == 200
        finally:
            for client in clients:
                await client.close()
        # Once its peers are gone, the node is drained (what SIGTERM waits for).
        await eventually(lambda: b.cluster.drained, what="B drained once its room ended")


async def test_room_list_and_health_of_any_node_show_the_whole_cluster(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    keys = {"api_key": KEY, "api_secret": SECRET}
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=49000, **keys) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=50000, **keys) as b,
    ):
        await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        assert await registry.place("ra", "a") == "a"
        assert await registry.place("rb", "b") == "b"
        ops = bearer(a, "list")
        clients = []
        try:
            for node, room, peer in ((a, "ra", "p1"), (b, "rb", "p2"), (a, "rb", "p3")):  # p3 relayed to B
                token = mint(node.app[ACCESS].keys, identity=peer, grants=grants_from_names(["join"], room=room))
                client = await ProtooClient.connect(node.ws_url(room, peer, token=token))
                await client.request("join", JOIN)
                clients.append(client)

            async def listed(node: Node) -> dict[str, Any]:
                status, body = await get(f"{node.base_url}/api/rooms", ops)
                assert status == 200, body
                return {room["id"]: room for room in body["rooms"]}

            for node in (a, b):  # each node lists both rooms, each with its node and its peers
                await eventually(
                    lambda node=node: _rooms_are(listed(node), {"ra": (["a"], 1), "rb": (["b"], 2)}),
                    what=f"cluster-wide room list of {node.cluster.node_id}",
                )
            # Same access check as a single node's list.
            assert (await get(f"{a.base_url}/api/rooms"))[0] == 401
            assert (await get(f"{a.base_url}/api/rooms", bearer(a, "join", room="ra")))[0] == 403
            # Health: anyone sees this node and the node count; an operator every node.
            status, health = await get(f"{b.base_url}/api/health")
            assert status == 200 and health["status"] == "ok"
            assert health["cluster"] == {"nodeId": "b", "draining": False, "registry": "ok", "nodeCount": 2}
            status, health = await get(f"{b.base_url}/api/health", ops)
            nodes = {n["nodeId"]: n for n in health["cluster"]["nodes"]}
            assert set(nodes) == {"a", "b"}
            assert nodes["a"]["url"] == a.cluster.url and nodes["a"]["draining"] is False
            assert all(0 <= n["heartbeatAgeMs"] < NODE_TTL_MS for n in nodes.values())
            await eventually(
                lambda: _peers_are(get(f"{b.base_url}/api/health", ops), "b", 2), what="B's load in its heartbeat"
            )
            # The drain route is an operator's (a roomless roomAdmin), not a room lister's.
            assert (await get(f"{a.base_url}/api/cluster/drain", ops, method="POST"))[0] == 403
            assert not a.cluster.draining
            status, state = await get(f"{a.base_url}/api/cluster/drain", bearer(a, "admin"), method="POST")
            assert status == 200 and state["draining"] is True
        finally:
            for client in clients:
                await client.close()


async def _rooms_are(listing: Any, expected: dict[str, tuple[list[str], int]]) -> bool:
    rooms = await listing
    return {room_id: (room["nodes"], room["peers"]) for room_id, room in rooms.items()} == expected


async def _peers_are(answer: Any, node_id: str, peers: int) -> bool:
    _, health = await answer
    return next(n["load"]["peers"] for n in health["cluster"]["nodes"] if n["nodeId"] == node_id) == peers

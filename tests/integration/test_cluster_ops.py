"""Operating a cluster (control.cluster): a node that drains gets no new room but keeps
serving its own, and ``GET /api/rooms`` / ``GET /api/health`` of any node show the whole
cluster, behind the same access checks. Real nodes on loopback, one real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.auth import ACCESS, grants_from_names, mint
from control.cluster import Registry
from control.cluster.registry import NODE_TTL_MS
from tests.e2e.cluster_nodes import Node, cluster_node
from tests.e2e.protoo_client import ProtooClient
from tests.integration.test_cluster import JOIN
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)

KEY, SECRET = "APIcluster", "c" * 40


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
            # Health: anyone sees whether this node drains and the node count; an operator every node.
            status, health = await get(f"{b.base_url}/api/health")
            assert status == 200 and health["status"] == "ok"
            assert health["cluster"] == {"draining": False, "registry": "ok", "nodeCount": 2}
            status, health = await get(f"{b.base_url}/api/health", ops)
            assert health["cluster"]["nodeId"] == "b"
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


async def test_a_remembered_placement_is_confirmed_by_the_room_node(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=49000) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=50000) as b,
    ):
        await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        assert await registry.place("r", "b") == "b"
        first = await joined(a, "r", "p1")  # relayed to B: A remembers B as the room's node
        second = await joined(a, "r", "p2")  # relayed again, to B as remembered (B hosts it)
        assert set(b.rooms.rooms["r"].peers) == {"p1", "p2"} and "r" not in a.rooms.rooms
        await first.close()
        await second.close()
        await eventually(lambda: "r" not in b.rooms.rooms, what="the room closed on B")
        await eventually(lambda: _owner_is(registry.owner("r"), None), what="B released the room")
        # The room is placed on A now; A still remembers B: B refuses (421), A places again.
        assert await registry.place("r", "a") == "a"
        third = await joined(a, "r", "p3")
        try:
            assert set(a.rooms.rooms["r"].peers) == {"p3"} and "r" not in b.rooms.rooms
            assert await registry.owner("r") == "a"
        finally:
            await third.close()


async def _owner_is(owner: Any, expected: str | None) -> bool:
    return await owner == expected


async def test_split_brain_the_node_the_placement_does_not_name_closes_its_copy(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=49000) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=50000) as b,
    ):
        await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        assert await registry.place("x", "a") == "a"
        carol = await joined(a, "x", "carol")
        dan = await joined(b, "x", "dan")  # relayed to A: one room
        try:
            assert set(a.rooms.rooms["x"].peers) == {"carol", "dan"}
            # A Redis failover or a partition: the placement now names B (B's claim won).
            await registry.redis.set(registry.room_key("x"), "b", px=15000)
            # A's heartbeat finds its room placed on B: it closes its copy, "reconnect".
            await eventually(carol.closed.is_set, what="Carol told to reconnect")
            assert carol.close_code == 4002
            await eventually(dan.closed.is_set, what="Dan (relayed) told to reconnect")
            assert dan.close_code == 4002
            assert "x" not in a.rooms.rooms and await registry.owner("x") == "b"
            # Rejoining through A reaches the room where the placement says.
            carol = await joined(a, "x", "carol")
            assert set(b.rooms.rooms["x"].peers) == {"carol"} and "x" not in a.rooms.rooms
        finally:
            await carol.close()
            await dan.close()


async def test_the_registry_ends_with_the_drain_state_a_node_last_set(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    """A heartbeat under way (made before a drain or its call-off) and the drain's own
    beat: the registry must end with the node's state, whatever order Redis gets them
    in. Each round drops the pool's connections, so each write needs one of its own
    and the two race (before the writes were serialized: 21-70 rounds of 200 wrong)."""
    async with cluster_node(tmp_path, redis_server.url, "b", rtc_base=50000) as b:
        node = b.cluster
        wrong = []
        for round_ in range(200):
            await node.registry.redis.connection_pool.disconnect()
            beat = asyncio.ensure_future(node.beat())
            await asyncio.sleep(0)  # it has made its write, with the state before the change
            await (node.drain() if round_ % 2 == 0 else node.resume())
            await beat
            info = await registry.node("b")
            assert info is not None
            if info.draining != node.draining:
                wrong.append(round_)
        assert not wrong, f"the registry kept the older state after rounds {wrong}"

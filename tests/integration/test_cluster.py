"""Several Parley nodes behind one real Redis (control.cluster): registry, placement,
signaling relayed between nodes. Real nodes on loopback, real protoo clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from control.cluster import CLUSTER, NodeInfo, NodeLoad, Registry
from control.cluster.registry import NODE_TTL_MS
from control.cluster.splice import SplicedResponse
from control.signaling.server import ROOM_ROUTER
from tests.e2e.cluster_nodes import cluster_node
from tests.e2e.harness import running_server
from tests.e2e.protoo_client import ProtooClient
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)

JOIN = {"displayName": "x", "device": {"name": "test"}, "rtpCapabilities": {"codecs": [], "headerExtensions": []}}


@pytest.fixture
async def redis_url(redis_server) -> AsyncIterator[str]:
    """The test database of the loopback Redis, empty before and after the test."""
    client = Redis.from_url(redis_server.url)
    await client.flushdb()
    try:
        yield redis_server.url
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
async def registry(redis_url: str) -> AsyncIterator[Registry]:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield Registry(client)
    finally:
        await client.aclose()


async def test_without_redis_url_nothing_joins_a_cluster(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        assert server.app.get(CLUSTER) is None
        assert server.app.get(ROOM_ROUTER) is None
        client = await ProtooClient.connect(server.ws_url("solo", "p1"))
        try:
            await client.request("join", JOIN)
            assert "solo" in server.rooms.rooms
        finally:
            await client.close()


async def test_registry_lists_live_nodes_least_loaded_first_and_forgets_dead_ones(registry: Registry) -> None:
    await registry.heartbeat(NodeInfo("busy", "http://127.0.0.1:1", NodeLoad(rooms=1, peers=3, consumers=6)))
    await registry.heartbeat(NodeInfo("idle", "http://127.0.0.1:2", NodeLoad()))
    assert [n.node_id for n in await registry.nodes()] == ["idle", "busy"]
    assert (await registry.node("busy")) == NodeInfo("busy", "http://127.0.0.1:1", NodeLoad(1, 3, 6))
    # A node that stops beating is gone within the TTL (under 5 s).
    began = time.monotonic()
    while [n.node_id for n in await registry.nodes()] != ["idle"]:
        await registry.heartbeat(NodeInfo("idle", "http://127.0.0.1:2", NodeLoad()))
        assert time.monotonic() - began < 5, "a silent node stayed in the registry"
        await asyncio.sleep(0.1)
    assert NODE_TTL_MS / 1000 - 0.5 <= time.monotonic() - began < 5
    assert await registry.redis.smembers(registry.nodes_key) == {"idle"}
    await registry.leave("idle")
    assert await registry.nodes() == []


async def test_racing_placements_agree_on_one_owner_and_a_dead_owner_is_replaced(registry: Registry) -> None:
    for name in ("a", "b", "c"):
        await registry.heartbeat(NodeInfo(name, f"http://{name}", NodeLoad()))
    # Many nodes race, each proposing itself, on many new rooms: one owner per room.
    for room in range(20):
        owners = await asyncio.gather(*(registry.place(f"race{room}", name) for name in "abcabcabc"))
        assert len(set(owners)) == 1, owners
        assert await registry.owner(f"race{room}") == owners[0]
    # The owner holds it; another node's release does nothing; its own does.
    assert await registry.place("r", "a") == "a"
    assert await registry.place("r", "b") == "a"
    assert not await registry.release("r", "b")
    assert await registry.release("r", "a")
    assert await registry.owner("r") is None
    # A placement on a dead node is void: the next join places the room again.
    assert await registry.place("r", "c") == "c"
    await registry.leave("c")
    assert await registry.place("r", "b") == "b"
    # A candidate that left meanwhile is passed over for the fallback (the caller).
    assert await registry.place("fresh", "c", fallback="a") == "a"
    # keep() re-claims free placements (Redis lost them) and reports another live node's.
    await registry.redis.delete(registry.room_key("r"))
    assert await registry.keep("a", ["r", "race0"]) == ([] if await registry.owner("race0") == "a" else ["race0"])
    assert await registry.owner("r") == "a"


async def test_a_room_is_placed_on_the_least_loaded_node_and_relayed_through_any_node(
    tmp_path: Path, redis_url: str, registry: Registry
) -> None:
    async with (
        cluster_node(tmp_path, redis_url, "a", rtc_base=41000) as a,
        cluster_node(tmp_path, redis_url, "b", rtc_base=42000) as b,
    ):
        await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        # A hosts a busy room (placed there, a client joined): A is the more loaded node.
        assert await registry.place("busy", "a") == "a"
        busy = await ProtooClient.connect(a.ws_url("busy", "p0"))
        await busy.request("join", JOIN)
        assert set(a.rooms.rooms) == {"busy"}
        await eventually(
            lambda: [n.node_id for n in a.cluster.nodes] == ["b", "a"], what="A's load seen by A's heartbeat"
        )
        # A new room joined through A goes to B; the client talks protoo to B through A.
        alice = await ProtooClient.connect(a.ws_url("fresh", "alice"))
        try:
            caps = await alice.request("getRouterRtpCapabilities")
            assert caps["codecs"]
            await alice.request("join", JOIN)
            assert await registry.owner("fresh") == "b"
            assert "fresh" in b.rooms.rooms and "fresh" not in a.rooms.rooms
            assert set(b.rooms.rooms["fresh"].peers) == {"alice"}
            # Bob connects to B directly: both see each other as in one room.
            bob = await ProtooClient.connect(b.ws_url("fresh", "bob"))
            joined = await bob.request("join", JOIN)
            assert [p["id"] for p in joined["peers"]] == ["alice"]
            await alice.wait_for("newPeer", lambda d: d["id"] == "bob")
            # A transport's ICE candidates are B's (media goes straight to B).
            transport = await alice.request(
                "createWebRtcTransport", {"producing": False, "consuming": True, "forceTcp": False}
            )
            b_ports = range(42000, 43000)
            assert transport["iceCandidates"] and all(c["port"] in b_ports for c in transport["iceCandidates"])
            # An error of B reaches the client through A unchanged (a protoo error response).
            with pytest.raises(Exception) as refused:
                await alice.request("noSuchMethod", {})
            assert getattr(refused.value, "code", None) in (400, 404, 500)
            # A client leaving through A leaves B's room.
            await alice.close()
            await bob.wait_for("peerClosed", lambda d: d == {"peerId": "alice"})
            # The last one leaves: the room closes on B and its placement goes away.
            await bob.close()
            await eventually(lambda: "fresh" not in b.rooms.rooms, what="room closed on B")

            async def released() -> bool:
                return await registry.owner("fresh") is None

            await eventually(released, timeout=5, what="placement released")
        finally:
            await alice.close()
            await busy.close()


async def test_a_relayed_connection_is_spliced_and_the_owner_still_checks_every_frame(
    tmp_path: Path, redis_url: str, registry: Registry
) -> None:
    """After both handshakes the relaying node passes bytes through unparsed: the
    room's node still enforces its frame size limit, its close code reaches the client
    unchanged, and its socket dropping without a close frame means 4002 (reconnect)."""
    async with (
        cluster_node(tmp_path, redis_url, "a", rtc_base=41000) as a,
        cluster_node(tmp_path, redis_url, "b", rtc_base=42000, signaling_max_frame_bytes=4096) as b,
    ):
        await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        assert await registry.place("r", "b") == "b"
        alice = await ProtooClient.connect(a.ws_url("r", "alice"))
        big = await ProtooClient.connect(a.ws_url("r", "big"))
        try:
            await alice.request("join", JOIN)
            await big.request("getRouterRtpCapabilities")
            assert len(a.cluster.relay.clients) == 2
            assert all(isinstance(c, SplicedResponse) for c in a.cluster.relay.clients)
            # A frame over B's hard limit (A does not read it): B refuses it, 1009 reaches the client.
            await big.ws.send_str("x" * 4096 * 5)
            await eventually(big.closed.is_set, what="oversized frame refused by B")
            assert big.close_code == 1009
            # B's socket to A drops without a close frame: A tells Alice to reconnect.
            connection = b.rooms.rooms["r"].peers["alice"].connection
            assert connection is not None
            transport = connection.ws._req.transport if connection.ws._req is not None else None
            assert transport is not None
            transport.abort()
            await eventually(alice.closed.is_set, what="Alice told to reconnect")
            assert alice.close_code == 4002
            await eventually(lambda: not a.cluster.relay.clients, what="A forgot the relayed clients")
        finally:
            await alice.close()
            await big.close()


async def test_a_relay_without_the_cluster_token_is_refused(tmp_path: Path, redis_url: str) -> None:
    async with cluster_node(tmp_path, redis_url, "a", rtc_base=41000) as a:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(
                    a.ws_url("r", "p", path="/ws"), protocols=("protoo",), headers={"X-Parley-Relay": "forged"}
                )
            assert refused.value.status == 403
        assert "r" not in a.rooms.rooms


async def test_nodes_racing_on_new_rooms_agree_on_one_owner(tmp_path: Path, redis_url: str) -> None:
    async with (
        cluster_node(tmp_path, redis_url, "a", rtc_base=41000) as a,
        cluster_node(tmp_path, redis_url, "b", rtc_base=42000) as b,
    ):
        await eventually(lambda: {n.node_id for n in b.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        rooms = [f"race{i}" for i in range(4)]
        # For every room, one client through A and one through B, all at once.
        clients = await asyncio.gather(
            *(
                ProtooClient.connect(node.ws_url(room, f"via-{name}"))
                for room in rooms
                for name, node in (("a", a), ("b", b))
            )
        )
        try:
            await asyncio.gather(*(client.request("join", JOIN) for client in clients))
            for room in rooms:
                hosts = [node for node in (a, b) if room in node.rooms.rooms]
                assert len(hosts) == 1, f"{room} on {len(hosts)} nodes"
                assert set(hosts[0].rooms.rooms[room].peers) == {"via-a", "via-b"}
        finally:
            await asyncio.gather(*(client.close() for client in clients))


KEYS = {"api_key": "clusterkey", "api_secret": "s" * 40}


async def test_tokens_work_through_the_relay_and_the_owners_refusals_reach_the_client(
    tmp_path: Path, redis_url: str, registry: Registry
) -> None:
    async with (
        cluster_node(tmp_path, redis_url, "a", rtc_base=41000, auth_open_join=True, **KEYS) as a,
        cluster_node(tmp_path, redis_url, "b", rtc_base=42000, auth_open_join=True, **KEYS) as b,
    ):
        await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        assert await registry.place("secure", "b") == "b"
        # Alice's token (minted with the cluster's shared API key) is verified by B through A.
        alice = await ProtooClient.connect(a.ws_url("secure", "alice", token=a.token("secure", "alice")))
        try:
            await alice.request("join", JOIN)
            assert b.rooms.rooms["secure"].peers["alice"].principal.identity == "alice"
            async with aiohttp.ClientSession() as session:
                # A refuses what it can judge itself (a token for another room: 403).
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(
                        a.ws_url("secure", "alice", token=a.token("other", "alice")), protocols=("protoo",)
                    )
                assert refused.value.status == 403
                # B refuses a token-less takeover of authenticated Alice: A answers with B's 403.
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(a.ws_url("secure", "alice"), protocols=("protoo",))
                assert refused.value.status == 403
            assert not alice.closed.is_set()
            assert not a.rooms.rooms
        finally:
            await alice.close()


async def test_a_node_stopping_leaves_at_once_and_its_rooms_move_on_rejoin(
    tmp_path: Path, redis_url: str, registry: Registry
) -> None:
    async with cluster_node(tmp_path, redis_url, "a", rtc_base=41000) as a:
        async with cluster_node(tmp_path, redis_url, "b", rtc_base=42000) as b:
            await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both registered")
            assert await registry.place("moving", "b") == "b"
            dave = await ProtooClient.connect(a.ws_url("moving", "dave"))
            await dave.request("join", JOIN)
            assert "moving" in b.rooms.rooms
            # Bob, on B itself, reconnects through A the moment B closes his socket: B has
            # already left (first of its shutdown steps), so the room comes to A.
            assert await registry.place("bobs", "b") == "b"
            bob = await ProtooClient.connect(b.ws_url("bobs", "bob"))
            await bob.request("join", JOIN)
            assert "bobs" in b.rooms.rooms

            async def reconnect_when_closed() -> str | None:
                await bob.closed.wait()
                again = await ProtooClient.connect(a.ws_url("bobs", "bob"))
                await again.request("join", JOIN)
                owner = await registry.owner("bobs")
                await again.close()
                return owner

            reconnected = asyncio.ensure_future(reconnect_when_closed())
        assert await reconnected == "a"
        # B stopped: gone from the registry and its placement released, at once.
        assert [n.node_id for n in await registry.nodes()] == ["a"]
        assert await registry.owner("moving") is None
        await eventually(dave.closed.is_set, what="relayed client closed")
        assert dave.close_code == 1001  # B's own "going away", relayed unchanged
        await dave.close()
        again = await ProtooClient.connect(a.ws_url("moving", "dave"))
        try:
            await again.request("join", JOIN)
            assert set(a.rooms.rooms["moving"].peers) == {"dave"}
            assert await registry.owner("moving") == "a"
        finally:
            await again.close()


async def test_redis_restarting_loses_no_room(tmp_path: Path, redis_owned) -> None:
    url = redis_owned.url
    client = Redis.from_url(url, decode_responses=True)
    registry = Registry(client)
    await client.flushdb()
    try:
        async with (
            cluster_node(tmp_path, url, "a", rtc_base=41000) as a,
            cluster_node(tmp_path, url, "b", rtc_base=42000) as b,
        ):
            await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both registered")
            assert await registry.place("kept", "b") == "b"
            erin = await ProtooClient.connect(a.ws_url("kept", "erin"))
            try:
                await erin.request("join", JOIN)
                await asyncio.to_thread(redis_owned.restart)  # no persistence: every key is lost
                # The nodes register again and B claims its room again.
                await eventually(lambda: registry.owner("kept"), timeout=10, what="placement re-claimed")
                assert await registry.owner("kept") == "b"
                await eventually(lambda: len(a.cluster.nodes) == 2, timeout=10, what="both nodes registered again")
                # A new client through A joins the same room on B; Erin's call went on.
                frank = await ProtooClient.connect(a.ws_url("kept", "frank"))
                joined = await frank.request("join", JOIN)
                assert [p["id"] for p in joined["peers"]] == ["erin"]
                assert set(b.rooms.rooms["kept"].peers) == {"erin", "frank"} and not a.rooms.rooms
                assert not erin.closed.is_set()
                await frank.close()
            finally:
                await erin.close()
    finally:
        await client.flushdb()
        await client.aclose()


def test_node_id_and_advertise_url_defaults(tmp_path: Path) -> None:
    from control.cluster import advertise_url, node_id
    from tests.e2e.harness import server_settings

    plain = server_settings(tmp_path, host="127.0.0.1", port=3100)
    assert (node_id(plain), advertise_url(plain)) == ("127.0.0.1:3100", "http://127.0.0.1:3100")
    named = server_settings(tmp_path, node_id="eu-1", node_advertise_url="https://eu-1.internal:8443/")
    assert (node_id(named), advertise_url(named)) == ("eu-1", "https://eu-1.internal:8443")
    v6 = server_settings(tmp_path, host="::1", port=3100)
    assert advertise_url(v6) == "http://[::1]:3100"


async def test_a_full_node_relays_new_rooms_to_a_node_with_room_for_them(
    tmp_path: Path, redis_url: str, registry: Registry
) -> None:
    async with (
        cluster_node(tmp_path, redis_url, "a", rtc_base=41000, max_rooms=1) as a,
        cluster_node(tmp_path, redis_url, "b", rtc_base=42000) as b,
    ):
        assert await registry.place("first", "a") == "a"
        first = await ProtooClient.connect(a.ws_url("first", "p1"))
        try:
            await first.request("join", JOIN)
            await eventually(
                lambda: [(n.node_id, n.load.full) for n in b.cluster.nodes] == [("b", False), ("a", True)],
                what="A seen full",
            )
            # A has MAX_ROOMS rooms: a new room joined through A is placed on B, not refused.
            second = await ProtooClient.connect(a.ws_url("second", "p2"))
            await second.request("join", JOIN)
            assert await registry.owner("second") == "b" and set(a.rooms.rooms) == {"first"}
            await second.close()
        finally:
            await first.close()


async def test_credentials_are_checked_before_anything_is_placed(
    tmp_path: Path, redis_url: str, registry: Registry
) -> None:
    async with (
        cluster_node(tmp_path, redis_url, "a", rtc_base=41000, **KEYS) as a,
        cluster_node(tmp_path, redis_url, "b", rtc_base=42000, **KEYS),
        aiohttp.ClientSession() as session,
    ):
        for query, status in (({}, 401), ({"token": a.token("elsewhere", "eve")}, 403)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(a.ws_url("unplaced", "eve", **query), protocols=("protoo",))
            assert refused.value.status == status
        assert await registry.owner("unplaced") is None

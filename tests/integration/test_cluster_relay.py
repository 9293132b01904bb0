"""The relay's raw node-to-node connections (control.cluster.links, control.cluster.relay):
the relaying node writes the client's upgrade to the room's node itself and answers the
client with that node's 101. Real nodes on loopback, a real TCP proxy in front of the
room's node for the faults (its connections cut, a request dropped, a 503), real
protoo clients."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from control.cluster import NodeInfo, NodeLoad, Registry
from control.cluster.links import IDLE_MAX
from tests.e2e.cluster_nodes import Node, cluster_node, node_process
from tests.e2e.protoo_client import ProtooClient
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_cluster import JOIN
from tests.polling import eventually
from tests.services import free_ports

pytestmark = pytest.mark.timeout(120)

KEYS = {"api_key": "relaykey", "api_secret": "r" * 40}


@asynccontextmanager
async def behind_proxy(tmp_path: Path, redis_url: str, **overrides: object) -> AsyncIterator[tuple[Node, TcpProxy]]:
    """Node "b", which the other nodes reach through a TCP proxy (its advertised URL)."""
    port = free_ports(1)[0]
    proxy = TcpProxy("127.0.0.1", port)
    try:
        async with cluster_node(
            tmp_path,
            redis_url,
            "b",
            rtc_base=42000,
            port=port,
            node_advertise_url=f"http://127.0.0.1:{proxy.port}",
            **overrides,
        ) as b:
            yield b, proxy
    finally:
        proxy.close()


async def test_the_client_gets_the_room_nodes_own_101_and_its_refusals(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    """The 101 the client reads is the room's node's, for the client's own key; the room
    node's refusals before the upgrade reach the client with its status (503 for its
    429); no refusal leaves a connection open."""
    redis_url = redis_server.url
    async with (
        cluster_node(tmp_path, redis_url, "a", rtc_base=41000, auth_open_join=True, **KEYS) as a,
        cluster_node(tmp_path, redis_url, "b", rtc_base=42000, auth_open_join=True, max_peers_per_room=2, **KEYS) as b,
    ):
        await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        links = a.cluster.relay.links
        b_url = URL(b.base_url)
        assert await registry.place("r", "b") == "b"
        resident = await ProtooClient.connect(b.ws_url("r", "resident"))  # the room stays on B
        key = base64.b64encode(os.urandom(16)).decode()
        async with aiohttp.ClientSession() as session:
            # A raw upgrade through A: B's answer, with the accept of this key and B's headers.
            headers = {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": key,
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Protocol": "protoo",
            }
            reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
            try:
                lines = [f"GET /?roomId=r&peerId=alice&token={a.token('r', 'alice')} HTTP/1.1", f"Host: x:{a.port}"]
                writer.write(("\r\n".join([*lines, *(f"{k}: {v}" for k, v in headers.items())]) + "\r\n\r\n").encode())
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                assert head.startswith("HTTP/1.1 101"), head
                expected = base64.b64encode(
                    hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
                ).decode()
                assert f"Sec-WebSocket-Accept: {expected}" in head
                assert "Sec-WebSocket-Protocol: protoo" in head
                await eventually(
                    lambda: "r" in b.rooms.rooms and "alice" in b.rooms.rooms["r"].peers, what="Alice on B"
                )
                assert b.rooms.rooms["r"].peers["alice"].principal.identity == "alice"
            finally:
                writer.close()
            await eventually(lambda: "alice" not in b.rooms.rooms["r"].peers, what="Alice gone from B")
            # A client's malformed handshake (no key) is B's to refuse: 400.
            async with session.get(
                a.ws_url("r", "bob").replace("ws://", "http://"),
                headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Protocol": "protoo"},
            ) as response:
                assert response.status == 400
            # B refuses Alice's peerId to a token-less caller (A lets the open principal
            # through): the client gets B's 403.
            alice = await ProtooClient.connect(a.ws_url("r", "alice", token=a.token("r", "alice")))
            try:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(a.ws_url("r", "alice"), protocols=("protoo",))
                assert refused.value.status == 403
                # B's room is full (its 429): 503 for the client, as any other refusal of B's.
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(a.ws_url("r", "carol"), protocols=("protoo",))
                assert refused.value.status == 503
                assert not alice.closed.is_set()
                # Only Alice's link and the idle ones are open.
                await eventually(lambda: links.open == 1 + links.idle(b_url), what="the refused links closed")
            finally:
                await alice.close()
                await resident.close()
        await eventually(lambda: links.open == links.idle(b_url), what="Alice's link closed")
    assert links.open == 0, "a node's links outlived it"


async def test_links_the_room_node_closes_are_dropped_and_its_clients_told_to_reconnect(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    """The room's node's connections cut (as when it dies): a relayed client hears 4002,
    the idle ones leave the pool at once, and the next client is relayed on a new one."""
    redis_url = redis_server.url
    async with (
        cluster_node(tmp_path, redis_url, "a", rtc_base=41000) as a,
        behind_proxy(tmp_path, redis_url) as (b, proxy),
    ):
        await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        links = a.cluster.relay.links
        b_url = URL(f"http://127.0.0.1:{proxy.port}")
        assert await registry.place("r", "b") == "b"
        resident = await ProtooClient.connect(b.ws_url("r", "resident"))  # the room stays on B
        alice = await ProtooClient.connect(a.ws_url("r", "alice"))
        try:
            await alice.request("join", JOIN)
            await eventually(lambda: links.idle(b_url) == 1, what="a spare connection to B")
            proxy.cut()
            await eventually(alice.closed.is_set, what="Alice told to reconnect")
            assert alice.close_code == 4002
            await eventually(lambda: links.open == 0, what="the idle link dropped")
            # The next relay opens a new connection: a 5xx on it makes A forget the room's
            # node and place the room again (B still), then relay on another new connection.
            accepted = proxy.accepted
            proxy.fail_http = 1
            bob = await ProtooClient.connect(a.ws_url("r", "bob"))
            await bob.request("join", JOIN)
            assert "bob" in b.rooms.rooms["r"].peers
            assert proxy.failed == 1 and proxy.accepted >= accepted + 2
            await bob.close()
        finally:
            await alice.close()
            await resident.close()


async def test_a_pooled_link_closed_as_the_upgrade_goes_out_is_retried_on_a_new_one(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    redis_url = redis_server.url
    async with (
        cluster_node(tmp_path, redis_url, "a", rtc_base=41000) as a,
        behind_proxy(tmp_path, redis_url) as (b, proxy),
    ):
        await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        links = a.cluster.relay.links
        b_url = URL(f"http://127.0.0.1:{proxy.port}")
        assert await registry.place("r", "b") == "b"
        alice = await ProtooClient.connect(a.ws_url("r", "alice"))
        bob: ProtooClient | None = None
        try:
            await alice.request("join", JOIN)
            await eventually(lambda: links.idle(b_url) == 1, what="a spare connection to B")
            proxy.drop_requests = 1  # the pooled connection closes, unanswered, when Bob's upgrade arrives
            bob = await ProtooClient.connect(a.ws_url("r", "bob"))
            await bob.request("join", JOIN)
            assert proxy.dropped == 1
            assert set(b.rooms.rooms["r"].peers) == {"alice", "bob"}
        finally:
            await alice.close()
            if bob is not None:
                await bob.close()


async def test_the_pool_survives_the_room_node_restarting_and_stays_bounded(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    redis_url = redis_server.url
    async with cluster_node(tmp_path, redis_url, "a", rtc_base=41000) as a:
        links = a.cluster.relay.links
        port = free_ports(1)[0]
        b_url = URL(f"http://127.0.0.1:{port}")
        async with cluster_node(tmp_path, redis_url, "b", rtc_base=42000, port=port) as b:
            await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both registered")
            assert await registry.place("r", "b") == "b"
            # A burst of relays: as many spares are opened, at most IDLE_MAX kept.
            clients = await asyncio.gather(*(ProtooClient.connect(a.ws_url("r", f"p{i}")) for i in range(12)))
            await asyncio.sleep(0.5)
            assert set(b.rooms.rooms["r"].peers) == {f"p{i}" for i in range(12)}
            assert 1 <= links.idle(b_url) <= IDLE_MAX
            await asyncio.gather(*(client.close() for client in clients))
            await eventually(lambda: links.open == links.idle(b_url), what="the relays' links closed")
        # B stopped: its connections closed, none left idle.
        await eventually(lambda: links.open == 0, what="B's closed links dropped")
        async with cluster_node(tmp_path, redis_url, "b", rtc_base=42000, port=port) as b:
            await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="B back")
            assert await registry.place("r", "b") == "b"
            again = await ProtooClient.connect(a.ws_url("r", "again"))
            try:
                await again.request("join", JOIN)
                assert set(b.rooms.rooms["r"].peers) == {"again"}
            finally:
                await again.close()


async def test_a_relaying_node_on_uvloop(tmp_path: Path, redis_server: Any, registry: Registry) -> None:
    """The relaying node as it runs in production (``python -m control``: uvloop, whose
    transports are not asyncio's): relayed, answered, told to reconnect when B drops."""
    async with (
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=42000) as b,
        node_process(tmp_path, redis_server.url, "a", rtc_base=41000) as (_, port_a),
    ):
        await eventually(lambda: {n.node_id for n in b.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        assert await registry.place("r", "b") == "b"
        alice = await ProtooClient.connect(f"ws://127.0.0.1:{port_a}/?roomId=r&peerId=alice")
        try:
            await alice.request("join", JOIN)
            assert (await alice.request("getRouterRtpCapabilities"))["codecs"]
            assert set(b.rooms.rooms["r"].peers) == {"alice"}
            # B's socket to A drops without a close frame: A tells Alice to reconnect.
            connection = b.rooms.rooms["r"].peers["alice"].connection
            assert connection is not None and connection.ws._req is not None
            transport = connection.ws._req.transport
            assert transport is not None
            transport.abort()
            await eventually(alice.closed.is_set, what="Alice told to reconnect")
            assert alice.close_code == 4002
        finally:
            await alice.close()


async def test_a_room_node_that_never_answers_or_floods_its_head_is_unavailable(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    """Bounded: a "node" that accepts and never answers the upgrade is given up after the
    relay's timeout; one that sends an endless response head is cut at MAX_HEAD_BYTES.
    Both: 503 for the client, no connection left open."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the relaying node gives up and closes

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nX-Padding: " + b"x" * 64 * 1024)
        await reader.read()

    servers = [await asyncio.start_server(handler, "127.0.0.1", 0) for handler in (silent, flood)]
    try:
        async with cluster_node(tmp_path, redis_server.url, "a", rtc_base=41000) as a:
            a.cluster.relay.response_timeout = 0.5
            links = a.cluster.relay.links
            urls: list[URL] = []
            async with aiohttp.ClientSession() as session:
                for name, server in zip(("silent", "flood"), servers, strict=True):
                    port = server.sockets[0].getsockname()[1]
                    urls.append(URL(f"http://127.0.0.1:{port}"))
                    await registry.heartbeat(NodeInfo(name, f"http://127.0.0.1:{port}", NodeLoad()))
                    assert await registry.place(f"room-{name}", name) == name
                    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                        await session.ws_connect(a.ws_url(f"room-{name}", "p"), protocols=("protoo",))
                    assert refused.value.status == 503
                    await eventually(
                        lambda: links.open == sum(links.idle(url) for url in urls),  # spares only
                        what=f"the {name} node's relayed link closed",
                    )
    finally:
        for server in servers:
            server.close()

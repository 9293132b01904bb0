"""Socket handover between nodes of one host (control.cluster.handover): a client that
reaches node A for a room on node B of the same host is passed to B (its socket, over
B's Unix socket) and served by B, A out of the path. Real nodes on loopback, real
protoo clients; "hosts" are the nodes' ``CLUSTER_HOST_ID`` (None: this kernel's boot id)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import ssl
import stat
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.cluster import Registry
from control.cluster.handover import message_tail
from tests.e2e.cluster_nodes import Node, cluster_node, node_process
from tests.e2e.protoo_client import ProtooClient
from tests.integration.test_cluster import JOIN
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)

KEYS = {"api_key": "handoverkey", "api_secret": "h" * 40}
SAME_HOST = {"cluster_host_id": None}


def sees_socket(a: Node, b: Node) -> bool:
    """Does ``a`` know ``b``'s handover socket (as of its last heartbeat)?"""
    return any(n.node_id == b.cluster.node_id and n.handover for n in a.cluster.nodes)


def peer_socket_inode(node: Node, room: str, peer: str) -> int:
    """The inode of the socket ``node`` serves ``peer`` on."""
    connection = node.rooms.rooms[room].peers[peer].connection
    assert connection is not None and connection.ws._req is not None
    transport = connection.ws._req.transport
    assert transport is not None
    return os.fstat(transport.get_extra_info("socket").fileno()).st_ino


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_aiohttp_internals_handover_reads_are_there() -> None:
    """aiohttp 3.14's server protocol keeps the bytes after an upgrade's head in
    ``_message_tail`` (the handover passes them on): an upgrade that moves it fails here."""
    from aiohttp.web_protocol import RequestHandler

    assert "_message_tail" in RequestHandler.__slots__
    assert message_tail(type("P", (), {"_message_tail": b"x"})()) == b"x"
    with pytest.raises(RuntimeError):
        message_tail(object())


async def test_a_handed_over_client_is_b_s_and_outlives_a(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    """A (``python -m control``: uvloop, as in production) passes the client to B: B
    answers it, A's process holds no descriptor of it, and killing A ends nothing."""
    async with (
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=42000, **SAME_HOST) as b,
        node_process(tmp_path, redis_server.url, "a", rtc_base=41000, env_overrides={"CLUSTER_HOST_ID": ""}) as (
            process_a,
            port_a,
        ),
    ):
        handover = b.cluster.handover
        assert handover is not None
        socket_dir = handover.path.parent
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(handover.path.stat().st_mode) == 0o600
        await eventually(lambda: {n.node_id for n in b.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        assert await registry.place("r", "b") == "b"
        resident = await ProtooClient.connect(b.ws_url("r", "resident"))
        alice: ProtooClient | None = None

        async def handed_over() -> bool:
            # A learns B's socket at its next heartbeat: until then it relays (then retry).
            nonlocal alice
            adopted = handover.adopted
            alice = await ProtooClient.connect(f"ws://127.0.0.1:{port_a}/?roomId=r&peerId=alice")
            if handover.adopted > adopted:
                return True
            await alice.close()
            await eventually(lambda: "alice" not in b.rooms.rooms["r"].peers, what="Alice's relay closed")
            return False

        try:
            await eventually(handed_over, what="Alice handed over to B")
            assert alice is not None
            await alice.request("join", JOIN)
            assert (await alice.request("getRouterRtpCapabilities"))["codecs"]
            assert set(b.rooms.rooms["r"].peers) == {"resident", "alice"}
            # B serves her on a socket A's process does not hold.
            assert peer_socket_inode(b, "r", "alice") not in socket_inodes(process_a.pid)
            process_a.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process_a.wait, 10)
            await alice.request("changeDisplayName", {"displayName": "still here"})
            assert (await alice.request("getRouterRtpCapabilities"))["codecs"]
            assert not alice.closed.is_set()
            assert b.rooms.rooms["r"].peers["alice"].display_name == "still here"
        finally:
            if alice is not None:
                await alice.close()
            await resident.close()


async def test_b_answers_the_handed_over_clients_and_nothing_leaks(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    """B's 101s and refusals (400, 403, 429) reach the client from B; A logs one line
    per handover and keeps nothing; A draining then stopping cuts no handed-over
    client; no descriptor outlives the clients."""
    async with cluster_node(
        tmp_path, redis_server.url, "b", rtc_base=42000, auth_open_join=True, max_peers_per_room=4, **SAME_HOST, **KEYS
    ) as b:
        async with cluster_node(
            tmp_path, redis_server.url, "a", rtc_base=41000, auth_open_join=True, **SAME_HOST, **KEYS
        ) as a:
            await eventually(lambda: sees_socket(a, b), what="A knows B's socket")
            assert await registry.place("r", "b") == "b"
            handover = b.cluster.handover
            assert handover is not None
            before = open_fds()
            # Many handovers, one after the other: each served by B, none kept by A.
            for i in range(30):
                client = await ProtooClient.connect(a.ws_url("r", f"p{i}"))
                await client.request("join", JOIN)
                await client.close()
            assert handover.adopted == 30 and a.cluster.relay.handed_over == 30
            # The first from A's request handler (the room placed), the others at its front
            # door (the room's node remembered): all on the one link A opened to B.
            assert a.cluster.relay.handed_over_early == 29
            assert a.cluster.relay.handover_links.opened == 1 and handover.links == 1
            assert not a.cluster.relay.clients and a.cluster.relay.links.open == 0
            await eventually(lambda: "r" not in b.rooms.rooms, what="the room closed on B")
            assert await registry.place("r", "b") == "b"
            async with aiohttp.ClientSession() as session:
                # A malformed handshake (no key): B's 400.
                async with session.get(
                    a.ws_url("r", "bob").replace("ws://", "http://"),
                    headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Protocol": "protoo"},
                ) as response:
                    assert response.status == 400
                alice = await ProtooClient.connect(a.ws_url("r", "alice", token=a.token("r", "alice")))
                others = [await ProtooClient.connect(a.ws_url("r", f"o{i}")) for i in range(3)]
                # Alice's peerId to a token-less caller: B's 403.
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(a.ws_url("r", "alice"), protocols=("protoo",))
                assert refused.value.status == 403
                # B's room is full: B's own 429 (peers_limit).
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(a.ws_url("r", "carol"), protocols=("protoo",))
                assert refused.value.status == 429
                await alice.request("join", JOIN)
                assert set(b.rooms.rooms["r"].peers) == {"alice", "o0", "o1", "o2"}
                assert not a.cluster.relay.clients
                # A drains and stops: nothing of B's clients was A's.
                assert a.cluster.drained
                await a.cluster.drain()
                assert a.cluster.drained
        # A has stopped.
        try:
            assert (await alice.request("getRouterRtpCapabilities"))["codecs"]
            assert (await others[0].request("getRouterRtpCapabilities"))["codecs"]
            assert not alice.closed.is_set() and not any(o.closed.is_set() for o in others)
        finally:
            for client in (alice, *others):
                await client.close()
        await eventually(lambda: "r" not in b.rooms.rooms, what="the room closed on B")
        await eventually(lambda: open_fds() <= before, what="every descriptor closed")


async def test_the_relay_when_handover_cannot_be(tmp_path: Path, redis_server: Any, registry: Registry) -> None:
    """B's socket missing, B refusing A's link (not serving yet, or not the node named),
    another host: A relays."""
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=41000, **SAME_HOST) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=42000, **SAME_HOST) as b,
        cluster_node(tmp_path, redis_server.url, "c", rtc_base=43000, cluster_host_id="elsewhere") as c,
    ):
        await eventually(lambda: sees_socket(a, b) and sees_socket(c, b), what="A and C know B's socket")
        handover = b.cluster.handover
        assert handover is not None
        assert await registry.place("r", "b") == "b"
        resident = await ProtooClient.connect(b.ws_url("r", "resident"))  # the room stays on B

        async def relayed(node: Node, peer: str) -> ProtooClient:
            client = await ProtooClient.connect(node.ws_url("r", peer))
            await client.request("join", JOIN)
            assert len(node.cluster.relay.clients) == 1 and peer in b.rooms.rooms["r"].peers
            return client

        links = a.cluster.relay.handover_links

        async def link_open() -> None:
            """A's link to B (opened at the heartbeat that showed B's socket, else now)."""
            assert await links.get(str(handover.path), "b") is not None
            assert links.open == 1 and handover.links == 1

        async def links_cut() -> None:
            """B closes A's link: A opens a new one for its next handover, which B's state
            now decides."""
            handover.close_links()
            await eventually(lambda: links.open == 0, what="A's link dropped")

        # Another host: relayed, though C knows B's socket.
        client = await relayed(c, "from-c")
        await client.close()
        assert c.cluster.relay.handover_links.opened == 0
        # B refuses the link (its server not set: as before it serves): relayed.
        await link_open()
        server, handover.server = handover.server, None
        try:
            await links_cut()
            client = await relayed(a, "refused")
            await client.close()
        finally:
            handover.server = server
        # Another node's socket at B's path (another container's): refused, relayed; A
        # remembers B for the room by now (its front door has no link: the same relay).
        await link_open()
        node_id, handover.node_id = handover.node_id, b"someone-else"
        try:
            await links_cut()
            client = await relayed(a, "other-node")
            await client.close()
        finally:
            handover.node_id = node_id
        # B's socket gone: relayed.
        await link_open()
        handover.path.rename(handover.path.with_name("moved.sock"))
        try:
            await links_cut()
            client = await relayed(a, "missing")
            await client.close()
        finally:
            handover.path.with_name("moved.sock").rename(handover.path)
        assert handover.adopted == 0 and a.cluster.relay.handed_over == 0 and links.open == 0
        # Back: handed over (on a new link).
        client = await ProtooClient.connect(a.ws_url("r", "back"))
        try:
            await client.request("join", JOIN)
            assert handover.adopted == 1 and not a.cluster.relay.clients and links.open == 1
        finally:
            await client.close()
            await resident.close()


async def test_a_remembered_room_that_moved_is_placed_by_the_node_it_was_handed_to(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    """A remembers B as the room's node; the room moved to A meanwhile: B cannot answer
    421 (A is out of the path), it places the room itself and the client gets there."""
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=41000, **SAME_HOST) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=42000, **SAME_HOST) as b,
    ):
        await eventually(lambda: sees_socket(a, b) and sees_socket(b, a), what="both know the other's socket")
        assert await registry.place("r", "b") == "b"
        first = await ProtooClient.connect(a.ws_url("r", "first"))  # A remembers B for "r"
        await first.request("join", JOIN)
        await first.close()
        await eventually(lambda: "r" not in b.rooms.rooms, what="the room closed on B")
        await eventually(lambda: _released(registry), what="placement released")
        assert await registry.place("r", "a") == "a"  # the room's node is A now (A still remembers B)
        adopted = (b.cluster.handover.adopted, a.cluster.handover.adopted)  # type: ignore[union-attr]
        second = await ProtooClient.connect(a.ws_url("r", "second"))
        try:
            await second.request("join", JOIN)
            assert set(a.rooms.rooms["r"].peers) == {"second"} and "r" not in b.rooms.rooms
            # Handed to B, which handed it back to A (same host).
            assert b.cluster.handover.adopted == adopted[0] + 1  # type: ignore[union-attr]
            assert a.cluster.handover.adopted == adopted[1] + 1  # type: ignore[union-attr]
        finally:
            await second.close()


async def _released(registry: Registry) -> bool:
    return await registry.owner("r") is None


async def test_what_the_client_sent_past_its_upgrade_goes_to_b(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    """A client that writes its first WebSocket frame with its upgrade (one write: A reads
    both): B gets the frame too and answers it."""
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=41000, **SAME_HOST) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=42000, **SAME_HOST) as b,
    ):
        await eventually(lambda: sees_socket(a, b), what="A knows B's socket")
        assert await registry.place("r", "b") == "b"
        resident = await ProtooClient.connect(b.ws_url("r", "resident"))
        handover = b.cluster.handover
        assert handover is not None
        try:
            # From A's request handler (the room placed), then at A's front door (its node
            # remembered): what came with the upgrade reaches B either way.
            for peer, early in (("early", 0), ("earlier", 1)):
                await _upgrade_with_a_frame(a.port, peer)
                assert a.cluster.relay.handed_over_early == early
            assert handover.adopted == 2
        finally:
            await resident.close()


async def _upgrade_with_a_frame(port: int, peer: str) -> None:
    """A raw client writing its upgrade and a protoo request in one write: the 101 and
    the request's answer come back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        payload = json.dumps({"request": True, "id": 7, "method": "getRouterRtpCapabilities", "data": {}}).encode()
        mask = os.urandom(4)
        frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        writer.write(_upgrade_head(port, peer) + frame)
        answer = await reader.readuntil(b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 101"), answer
        response: dict[str, Any] = {}
        while response.get("id") != 7:  # notifications may come first
            first = await reader.readexactly(2)
            size = first[1] & 0x7F
            if size == 126:
                size = int.from_bytes(await reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await reader.readexactly(8), "big")
            response = json.loads(await reader.readexactly(size))
        assert response["id"] == 7 and response["ok"] and response["data"]["codecs"]
    finally:
        writer.close()


def _upgrade_head(port: int, peer: str, extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /?roomId=r&peerId={peer} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: protoo\r\n{extra}\r\n"
    ).encode()


async def test_the_front_door_hands_over_plain_upgrades_of_remembered_rooms_only(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    """A hands a client over before any HTTP handling of its own only for a room whose
    node it remembers, on a plain upgrade: a client's own ``X-Parley-*`` header or an
    upgrade in two writes goes through A's handler (its relay token refused there, its
    headers dropped); a connection that sends nothing is closed (idle, or A stopping)."""
    async with cluster_node(tmp_path, redis_server.url, "b", rtc_base=42000, **SAME_HOST) as b:
        handover = b.cluster.handover
        assert handover is not None
        async with cluster_node(tmp_path, redis_server.url, "a", rtc_base=41000, **SAME_HOST) as a:
            await eventually(lambda: sees_socket(a, b), what="A knows B's socket")
            assert await registry.place("r", "b") == "b"
            resident = await ProtooClient.connect(b.ws_url("r", "resident"))
            relay, door = a.cluster.relay, a.cluster.front
            assert door is not None
            try:
                first = await ProtooClient.connect(a.ws_url("r", "first"))  # placed: A's handler
                assert (handover.adopted, relay.handed_over_early) == (1, 0)
                second = await ProtooClient.connect(a.ws_url("r", "second"))  # remembered: the front door
                assert (handover.adopted, relay.handed_over_early) == (2, 1)
                for client in (first, second):
                    await client.request("join", JOIN)
                    await client.close()
                async with aiohttp.ClientSession() as session:
                    # A forged relay token: A's own 403, nothing went to B.
                    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                        await session.ws_connect(
                            a.ws_url("r", "forger"), protocols=("protoo",), headers={"X-Parley-Relay": "forged"}
                        )
                    assert refused.value.status == 403
                    assert (handover.adopted, relay.handed_over_early) == (2, 1)
                    # Another X-Parley-* header: A's handler hands it over, without that header.
                    sneaky = await session.ws_connect(
                        a.ws_url("r", "sneaky"), protocols=("protoo",), headers={"X-Parley-Peer-Node": "a"}
                    )
                    assert (handover.adopted, relay.handed_over_early) == (3, 1)
                    await sneaky.close()
                # An upgrade in two writes: A's handler.
                reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
                head = _upgrade_head(a.port, "slow")
                writer.write(head[:40])
                await writer.drain()
                await asyncio.sleep(0.1)
                writer.write(head[40:])
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
                assert (handover.adopted, relay.handed_over_early) == (4, 1)
                writer.close()
                # A room A hosts itself: served there.
                own = await ProtooClient.connect(a.ws_url("own", "local"))
                await own.request("join", JOIN)
                assert "own" in a.rooms.rooms and (handover.adopted, relay.handed_over_early) == (4, 1)
                await own.close()
            finally:
                await resident.close()
            # A connection that sends nothing: closed after the idle time.
            door.idle_seconds = 0.2
            reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
            async with asyncio.timeout(5):
                assert await reader.read() == b""
            writer.close()
            await eventually(lambda: not door.waiting, what="the idle connection forgotten")
            door.idle_seconds = 60
            reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
            await eventually(lambda: len(door.waiting) == 1, what="a silent connection")
        # A stopped: its silent connection was closed.
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
        assert not door.waiting


async def test_a_client_whose_tls_a_terminates_is_relayed(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    """TLS ends at A (an encrypted connection's state cannot move): relayed, though B is
    on this host and takes handovers."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    client_tls.check_hostname = False
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=41000, tls=server_tls, **SAME_HOST) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=42000, **SAME_HOST) as b,
    ):
        await eventually(lambda: sees_socket(a, b), what="A knows B's socket")
        assert await registry.place("r", "b") == "b"
        handover = b.cluster.handover
        assert handover is not None
        url = a.ws_url("r", "secure").replace("ws://", "wss://")
        client = await ProtooClient.connect(url, ssl=client_tls)
        try:
            await client.request("join", JOIN)
            assert "secure" in b.rooms.rooms["r"].peers
            assert len(a.cluster.relay.clients) == 1 and handover.adopted == 0
        finally:
            await client.close()


async def test_handed_over_clients_count_against_their_address_on_b(
    tmp_path: Path, redis_server: Any, registry: Registry
) -> None:
    """A relayed client is counted by the relaying node while its connection lasts; a
    handed-over one leaves that node at once: B counts it (MAX_CONNECTIONS_PER_IP)."""
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=41000, **SAME_HOST) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=42000, max_connections_per_ip=2, **SAME_HOST) as b,
    ):
        await eventually(lambda: sees_socket(a, b), what="A knows B's socket")
        assert await registry.place("r", "b") == "b"
        first = await ProtooClient.connect(b.ws_url("r", "first"))  # on B itself
        second = await ProtooClient.connect(a.ws_url("r", "second"))  # handed over
        try:
            assert b.cluster.handover is not None and b.cluster.handover.adopted == 1
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await ProtooClient.connect(a.ws_url("r", "third"))
            assert refused.value.status == 429
        finally:
            await second.close()
            await first.close()
        third = await ProtooClient.connect(a.ws_url("r", "third"))
        await third.close()

"""Cascading (control.cluster.cascade): a room over two nodes of three on loopback,
producers piped node to node over SRTP PipeTransports, real aiortc peers."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from control.cluster import RELAY_HEADER, NodeInfo, NodeLoad, Registry
from control.cluster.cascade import CASCADE_PATH, Seats
from control.recording import RECORDINGS
from tests.e2e.cluster_nodes import Node, cluster_node, node_process
from tests.e2e.media_peer import MediaPeer
from tests.e2e.protoo_client import ProtooClient
from tests.integration.test_cluster import JOIN
from tests.polling import eventually

pytestmark = pytest.mark.timeout(240)

#: Two consumers per node and room: a publisher and one subscriber fill the origin.
#: The relay key is set (not the one kept in Redis, which a flush by another test would change).
LIMIT = {"room_consumers_per_node": 2, "cluster_secret": "cascade-test-" + "k" * 32}
LIMIT_ENV = {key.upper(): str(value) for key, value in LIMIT.items()}


async def test_seating_fills_the_origin_then_a_satellite_then_adds_one(registry: Registry) -> None:
    for name in ("a", "b", "c"):
        await registry.heartbeat(NodeInfo(name, f"http://{name}", NodeLoad()))
    seats = Seats(SimpleNamespace(registry=registry))  # type: ignore[arg-type]
    assert await seats.seat("r", "a", 2, ["b", "c"]) == "a"
    await seats.report({"r": 2}, "a")
    assert await seats.seat("r", "a", 2, ["c", "b"]) == "c"  # a new satellite: the first candidate
    assert await seats.seat("r", "a", 2, ["b"]) == "c"  # now the room's: candidates no longer matter
    await seats.report({"r": 3}, "c")
    assert await seats.seat("r", "a", 2, ["b", "c"]) == "b"
    await seats.report({"r": 5}, "b")
    assert await seats.seat("r", "a", 2, ["b", "c"]) == "a"  # every node full: the least full
    await registry.leave("c")
    await seats.forget("r", "b", origin=False)
    assert await seats.consumers("r") == {"a": 2, "c": 3}
    await seats.forget("r", "a", origin=True)
    assert await seats.consumers("r") == {}
    # An origin writes its satellite list again when Redis lost it, not over a live one.
    assert await seats.restore("r", ["b", "c"]) and await seats.satellites("r") == ["b", "c"]
    await seats.add_satellite("r", "d")
    assert not await seats.restore("r", ["b"]) and await seats.satellites("r") == ["b", "c", "d"]


async def test_a_node_to_node_call_without_the_cluster_token_is_refused(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    async with cluster_node(tmp_path, redis_server.url, "a", rtc_base=42000) as a:
        url = f"http://127.0.0.1:{a.port}{CASCADE_PATH}?roomId=r&nodeId=x"
        async with aiohttp.ClientSession() as session:
            for headers, status in (({}, 401), ({RELAY_HEADER: "not-the-token"}, 403)):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(url, headers=headers)
                assert refused.value.status == status
            # With the token, a room the node does not host is not found.
            with pytest.raises(aiohttp.WSServerHandshakeError) as missing:
                await session.ws_connect(url, headers={RELAY_HEADER: a.cluster.relay.token})
            assert missing.value.status == 404


async def test_a_full_room_cascades_onto_a_second_node(tmp_path: Path, redis_server, registry: Registry) -> None:
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=43000, **LIMIT) as a,
        cluster_node(tmp_path, redis_server.url, "c", rtc_base=45000, **LIMIT) as c,
    ):
        async with node_process(tmp_path, redis_server.url, "b", rtc_base=44000, env_overrides=LIMIT_ENV) as (
            process,
            _,
        ):
            for node in (a, c):
                await eventually(lambda n=node: {x.node_id for x in n.cluster.nodes} == {"a", "b", "c"}, what="nodes")
            # The room lives on A; its second node is B (the subprocess, to kill).
            assert await registry.place("meet", "a") == "a"
            await a.cluster.cascade.seats.add_satellite("meet", "b")
            alice = MediaPeer(a.ws_url("meet", "alice"), "alice")
            bob = MediaPeer(a.ws_url("meet", "bob"), "bob")
            carol: MediaPeer | None = None
            dave: MediaPeer | None = None
            again: ProtooClient | None = None
            try:
                await alice.join()
                await bob.join()
                await bob.wait_media("alice", timeout=45)
                seats = a.cluster.cascade.seats
                await eventually(lambda: _at_least(seats, "meet", "a", 2), what="A's consumers reported")
                await eventually(lambda: _load(c, "a") >= 2, what="A's load in C's registry view")
                # A is full: Carol, connecting through C, is seated on B (relayed there).
                carol = MediaPeer(c.ws_url("meet", "carol"), "carol")
                await carol.join()
                assert sorted(p["id"] for p in carol.peers) == ["alice", "bob"]
                room = a.rooms.rooms["meet"]
                assert set(room.peers) == {"alice", "bob"} and room.satellites == {"b"} and not c.rooms.rooms
                assert room.broadcasters["carol"].node == "b"
                summary = room.summary()
                assert summary["satellites"] == ["b"] and summary["remotePeers"] == 1 and summary["broadcasters"] == 0
                # SRTP on the pipe: our key was given to B, B's is in our connect.
                link = a.cluster.cascade.links["meet"]["b"]
                dump = await link.transport.dump()
                assert link.transport.srtp_parameters and dump["srtpParameters"]["cryptoSuite"]
                # Media both ways: A's publishers on B, B's publisher on A.
                await carol.wait_media("alice", timeout=45)
                await carol.wait_media("bob", timeout=45)
                await alice.wait_media("carol", timeout=45)
                await bob.wait_media("carol", timeout=45)
                stats = (await link.transport.get_stats())[0]
                assert stats["bytesSent"] > 0 and stats["bytesReceived"] > 0
                # B is full too: Dave (video only), connecting to A itself, is seated on a new
                # satellite, C; A, the hub, passes B's peers and media to C and back.
                await eventually(lambda: _at_least(seats, "meet", "b", 2), what="B's consumers reported")
                dave = MediaPeer(a.ws_url("meet", "dave"), "dave", audio=False)
                await dave.join()
                assert sorted(p["id"] for p in dave.peers) == ["alice", "bob", "carol"]
                assert room.satellites == {"b", "c"} and set(c.rooms.rooms["meet"].peers) == {"dave"}
                await dave.wait_media("carol", timeout=45)
                await eventually(lambda: _frames(carol, "dave") >= 5, timeout=45, what="Dave's video at Carol")
                await eventually(lambda: _frames(alice, "dave") >= 5, timeout=45, what="Dave's video at Alice")
                # Pause and resume on A reach B's consumer.
                await _pause_and_resume(bob, "video", carol)
                # Active speaker is room-wide: with A's microphones paused, A names Carol (on B).
                mark = len(alice.signaling.notifications)
                for member in (alice, bob):
                    await _set_paused(member, "audio", True)
                await alice.signaling.wait_for("activeSpeaker", lambda d: d.get("peerId") == "carol", start=mark)
                for member in (alice, bob):
                    await _set_paused(member, "audio", False)
                # Room-wide: a chat message sent on B reaches A's peers; so does a new name.
                sent = await carol.signaling.request("chatMessage", {"text": "hello from B"})
                message_id = sent["message"]["id"]
                await alice.signaling.wait_for("chatMessage", lambda d: d["message"]["id"] == message_id)
                await carol.signaling.request("changeDisplayName", {"displayName": "Carol on B"})
                await bob.signaling.wait_for(
                    "peerDisplayNameChanged", lambda d: d["peerId"] == "carol" and d["displayName"] == "Carol on B"
                )
                # A producer closed on A closes its consumer on B, and the other way round.
                await _close_producer(alice, "video", carol)
                await _close_producer(carol, "audio", bob)
                # Carol reconnecting through A (where she is a mirror) goes back to B, her node,
                # and takes over her session there.
                again = await ProtooClient.connect(a.ws_url("meet", "carol"))
                await eventually(carol.signaling.closed.is_set, what="Carol's first socket replaced")
                assert carol.signaling.close_code == 4000
                await again.request("join", JOIN)
                assert room.broadcasters["carol"].node == "b" and not again.closed.is_set()
                # B dies: Carol (relayed by A now) is told to reconnect; A's room goes on.
                os.kill(process.pid, signal.SIGKILL)
                await eventually(again.closed.is_set, timeout=15, what="Carol told to reconnect")
                assert again.close_code == 4002
                await alice.signaling.wait_for("peerClosed", lambda d: d["peerId"] == "carol", timeout=15)
                await dave.signaling.wait_for("peerClosed", lambda d: d["peerId"] == "carol", timeout=15)
                assert not room.closed and set(room.peers) == {"alice", "bob"} and room.satellites == {"c"}
                assert "carol" not in room.broadcasters
                frames = max(r.frames for r in bob.from_peer("alice", "audio"))
                await eventually(
                    lambda: max(r.frames for r in bob.from_peer("alice", "audio")) > frames + 25,
                    what="alice's audio still reaching bob",
                )
            finally:
                if again is not None:
                    await again.close()
                for peer in (dave, carol, bob, alice):
                    if peer is not None:
                        await peer.close()


def _frames(receiver: MediaPeer, sender: str) -> int:
    return max((r.frames for r in receiver.from_peer(sender, "video")), default=0)


def _load(node: Node, node_id: str) -> int:
    """The consumers of ``node_id`` as ``node`` last read them from the registry."""
    return next((n.load.consumers for n in node.cluster.nodes if n.node_id == node_id), 0)


async def _at_least(seats: Seats, room_id: str, node_id: str, count: int) -> bool:
    return (await seats.consumers(room_id)).get(node_id, 0) >= count


async def _close_producer(owner: MediaPeer, kind: str, watcher: MediaPeer) -> None:
    """``owner`` closes its ``kind`` producer; ``watcher`` (on the other node) sees its consumer closed."""
    producer_id = next(p.id for p in owner.producers.values() if p.kind == kind)
    consumer_id = next(r.consumer_id for r in watcher.from_peer(owner.peer_id, kind))
    await owner.signaling.request("closeProducer", {"producerId": producer_id})
    await watcher.signaling.wait_for("consumerClosed", lambda d: d["consumerId"] == consumer_id, timeout=15)


async def _pause_and_resume(owner: MediaPeer, kind: str, watcher: MediaPeer) -> None:
    producer_id = next(p.id for p in owner.producers.values() if p.kind == kind)
    consumer_id = next(r.consumer_id for r in watcher.from_peer(owner.peer_id, kind))
    await owner.signaling.request("pauseProducer", {"producerId": producer_id})
    await watcher.signaling.wait_for("consumerPaused", lambda d: d["consumerId"] == consumer_id, timeout=15)
    await owner.signaling.request("resumeProducer", {"producerId": producer_id})
    await watcher.signaling.wait_for("consumerResumed", lambda d: d["consumerId"] == consumer_id, timeout=15)


async def test_a_satellite_whose_origin_dies_sends_its_peers_to_reconnect(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    async with cluster_node(tmp_path, redis_server.url, "b", rtc_base=46000, **LIMIT) as b:
        async with node_process(tmp_path, redis_server.url, "a", rtc_base=47000, env_overrides=LIMIT_ENV) as (
            process,
            port_a,
        ):
            await eventually(lambda: {x.node_id for x in b.cluster.nodes} == {"a", "b"}, what="nodes")
            assert await registry.place("talk", "a") == "a"
            alice = MediaPeer(f"ws://127.0.0.1:{port_a}/?roomId=talk&peerId=alice", "alice")
            bob = MediaPeer(f"ws://127.0.0.1:{port_a}/?roomId=talk&peerId=bob", "bob")
            carol: MediaPeer | None = None
            try:
                await alice.join()
                await bob.join()
                await bob.wait_media("alice", timeout=45)
                await eventually(lambda: _load(b, "a") >= 2, what="A's load in B's registry view")
                # A is full: Carol, connecting to B itself, is seated there (B's own satellite).
                carol = MediaPeer(b.ws_url("talk", "carol"), "carol")
                await carol.join()
                room = b.rooms.rooms["talk"]
                assert room.origin == "a" and set(room.peers) == {"carol"}
                assert sorted(p["id"] for p in carol.peers) == ["alice", "bob"]
                await carol.wait_media("alice", timeout=45)
                await alice.wait_media("carol", timeout=45)
                os.kill(process.pid, signal.SIGKILL)
                await eventually(carol.signaling.closed.is_set, timeout=15, what="Carol told to reconnect")
                assert carol.signaling.close_code == 4002 and room.closed and "talk" not in b.rooms.rooms
            finally:
                for peer in (carol, bob, alice):
                    if peer is not None:
                        await peer.close()
        # Rejoining through B places the room again, on B, as an ordinary room.
        again = MediaPeer(b.ws_url("talk", "carol"), "carol")
        try:
            await again.join()
            assert await registry.owner("talk") == "b" and b.rooms.rooms["talk"].origin is None
        finally:
            await again.close()


async def test_a_recording_at_the_origin_records_a_satellites_late_joiner(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    """Recording stays room-wide: a recording running on the origin records a participant
    who joined on a satellite after it started (her timeline entry, her own audio stem
    with packets in it). Before, the origin's recording heard of nobody who joined on
    another node once it had started."""
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=48000, **LIMIT) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=49000, **LIMIT) as b,
    ):
        await eventually(lambda: {x.node_id for x in b.cluster.nodes} == {"a", "b"}, what="nodes")
        assert await registry.place("rec", "a") == "a"
        alice = MediaPeer(a.ws_url("rec", "alice"), "alice")
        bob = MediaPeer(a.ws_url("rec", "bob"), "bob")
        carol: MediaPeer | None = None
        try:
            await alice.join()
            await bob.join()
            await bob.wait_media("alice", timeout=45)
            await eventually(lambda: _load(b, "a") >= 2, what="A's load in B's registry view")
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{a.base_url}/api/rooms/rec/recording") as resp:
                    assert resp.status == 201, await resp.text()
                active = a.app[RECORDINGS].active["rec"]
                carol = MediaPeer(b.ws_url("rec", "carol"), "carol")
                await carol.join()
                assert set(b.rooms.rooms["rec"].peers) == {"carol"}
                await alice.wait_media("carol", timeout=45)
                await eventually(
                    lambda: any(t.peer_id == "carol" and t.t0 is not None for t in active.manifest.tracks),
                    timeout=30,
                    what="a stem of Carol's audio with packets in it, at the origin",
                )
                assert any(e["type"] == "join" and e["peerId"] == "carol" for e in active.manifest.events)
                assert "carol" in active.manifest.participants
                async with http.delete(f"{a.base_url}/api/rooms/rec/recording") as resp:
                    assert resp.status == 200, await resp.text()
        finally:
            for peer in (carol, bob, alice):
                if peer is not None:
                    await peer.close()


async def _set_paused(owner: MediaPeer, kind: str, paused: bool) -> None:
    producer_id = next(p.id for p in owner.producers.values() if p.kind == kind)
    await owner.signaling.request("pauseProducer" if paused else "resumeProducer", {"producerId": producer_id})


async def test_data_channels_cross_nodes_both_ways_through_the_hub(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    """DataChannels over a cascade: each peer's messages reach the peers of every node,
    over SCTP on the links' PipeTransports (origin A, satellites B and C; B and C talk
    through A). Piped: a data producer made before the room cascaded (Alice's), one made
    on a satellite once linked (Carol's, then Dave's), and a joiner after both (Dave,
    on a new satellite) gets them all. A data producer closed on one node closes its
    data consumers on the others."""
    nodes = {"mediasoup_num_workers": 1, **LIMIT}
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=56000, **nodes) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=57000, **nodes) as b,
        cluster_node(tmp_path, redis_server.url, "c", rtc_base=58000, **nodes) as c,
    ):
        for node in (a, b, c):
            await eventually(lambda n=node: {x.node_id for x in n.cluster.nodes} == {"a", "b", "c"}, what="nodes")
        assert await registry.place("chat", "a") == "a"
        await a.cluster.cascade.seats.add_satellite("chat", "b")
        # Audio fills A (two consumers); data producers are not counted.
        alice = MediaPeer(a.ws_url("chat", "alice"), "alice", video=False, data=True)
        bob = MediaPeer(a.ws_url("chat", "bob"), "bob", video=False, data=True)
        peers = [alice, bob]
        try:
            await alice.join()
            await bob.join()
            # Before any link: Alice's DataChannel, consumed by Bob on A.
            alice_channel = await alice.send_transport.produceData(label="chat", protocol="text")
            await _data_consumer_of(bob, "alice")
            seats = a.cluster.cascade.seats
            await eventually(lambda: _at_least(seats, "chat", "a", 2), what="A's consumers reported")
            await eventually(lambda: _load(b, "a") >= 2, what="A's load in B's registry view")
            # Carol, connecting to B, is seated there: B links to A, which pipes Alice's.
            carol = MediaPeer(b.ws_url("chat", "carol"), "carol", video=False, data=True)
            peers.append(carol)
            await carol.join()
            room_a, room_b = a.rooms.rooms["chat"], b.rooms.rooms["chat"]
            assert room_b.origin == "a" and set(room_b.peers) == {"carol"}
            carol_from_alice = await _data_consumer_of(carol, "alice")
            # Once linked: Carol's DataChannel on B reaches A's peers.
            carol_channel = await carol.send_transport.produceData(label="chat", protocol="text")
            alice_from_carol = await _data_consumer_of(alice, "carol")
            await _data_consumer_of(bob, "carol")
            # B is full too: Dave (data only), connecting to A, is seated on a new satellite,
            # C; he gets Alice's (A) and Carol's (B, through A); his own reaches B through A.
            await eventually(lambda: _at_least(seats, "chat", "b", 2), what="B's consumers reported")
            dave = MediaPeer(a.ws_url("chat", "dave"), "dave", audio=False, video=False, data=True)
            peers.append(dave)
            await dave.join()
            room_c = c.rooms.rooms["chat"]
            assert room_a.satellites == {"b", "c"} and set(room_c.peers) == {"dave"}
            dave_from_alice = await _data_consumer_of(dave, "alice")
            await _data_consumer_of(dave, "carol")
            dave_channel = await dave.send_transport.produceData(label="chat", protocol="text")
            for receiver in (alice, bob, carol):
                await _data_consumer_of(receiver, "dave")
            # The links' SCTP associations are up (each end), and every DataChannel is open.
            links = [
                *a.cluster.cascade.links["chat"].values(),
                *b.cluster.cascade.links["chat"].values(),
                *c.cluster.cascade.links["chat"].values(),
            ]
            assert len(links) == 4
            await eventually(
                lambda: all(link.transport.sctp_state == "connected" for link in links), what="pipe SCTP connected"
            )
            channels = {"alice": alice_channel, "carol": carol_channel, "dave": dave_channel}
            await eventually(
                lambda: (
                    all(ch.readyState == "open" for ch in channels.values())
                    and all(dc.readyState == "open" for p in peers for dc in p.data_consumers)
                ),
                what="DataChannels open",
            )
            for name, channel in channels.items():
                for i in range(3):
                    channel.send(f"{name} {i}")
            expected = {
                "alice": ["carol", "dave"],
                "bob": ["alice", "carol", "dave"],
                "carol": ["alice", "dave"],
                "dave": ["alice", "carol"],
            }
            for receiver in peers:
                for sender in expected[receiver.peer_id]:
                    want = [f"{sender} {i}" for i in range(3)]
                    await eventually(
                        lambda r=receiver, s=sender, w=want: _messages(r, s) == w,
                        what=f"{sender}'s messages at {receiver.peer_id}",
                    )
                assert not _messages(receiver, receiver.peer_id)
            # The piped ones keep the label and protocol; pausing and resuming the original
            # (on B) reaches them (on A, and on C through A).
            carol_original = next(iter(room_b.peers["carol"].data_producers.values()))
            piped = [room.broadcasters["carol"].data_producers[carol_original.id] for room in (room_a, room_c)]
            assert all((p.label, p.protocol, p.type) == ("chat", "text", "sctp") for p in piped)
            await carol_original.pause()
            await eventually(lambda: all(p.paused for p in piped), what="Carol's piped data producers paused")
            await carol_original.resume()
            await eventually(lambda: not any(p.paused for p in piped), what="Carol's piped data producers resumed")
            # Alice's data producer closed on A: its data consumers on B and C close.
            original = next(iter(room_a.peers["alice"].data_producers.values()))
            original.close()
            await _data_consumer_closed(carol, carol_from_alice)
            await _data_consumer_closed(dave, dave_from_alice)
            await eventually(
                lambda: (
                    not room_b.broadcasters["alice"].data_producers and not room_c.broadcasters["alice"].data_producers
                ),
                what="Alice's piped data producers gone",
            )
            assert all(original.id not in link.sent_data for link in links)
            # And the other way: Carol's closed on B closes Alice's consumer of it on A.
            carol_original.close()
            await _data_consumer_closed(alice, alice_from_carol)
            await eventually(lambda: not room_a.broadcasters["carol"].data_producers, what="Carol's piped one gone")
        finally:
            for peer in reversed(peers):
                await peer.close()


async def _data_consumer_of(receiver: MediaPeer, sender: str) -> str:
    """The id of ``receiver``'s data consumer of ``sender``'s data producer, once offered."""
    offer = await receiver.signaling.wait_for(
        "newDataConsumer", lambda d: d["peerId"] == sender, timeout=20, kind="request"
    )
    return str(offer["id"])


async def _data_consumer_closed(watcher: MediaPeer, consumer_id: str) -> None:
    await watcher.signaling.wait_for("dataConsumerClosed", lambda d: d["dataConsumerId"] == consumer_id, timeout=15)


def _messages(receiver: MediaPeer, sender: str) -> list[str]:
    return [m for m in receiver.data_messages if isinstance(m, str) and m.startswith(f"{sender} ")]


async def test_a_satellite_peer_reconnecting_through_another_node_in_its_grace_takes_over(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    """Carol, seated on satellite B, loses her connection (no close frame): B keeps her
    for the grace period. She reconnects through C, a node the room is not on yet: C
    seats her (a new satellite, where she is a mirror) and sends her on to B, where she
    takes over her session, as on one node: nobody sees her leave."""
    nodes = {"mediasoup_num_workers": 1, "peer_reconnect_grace_seconds": 60, **LIMIT}
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=59000, **nodes) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=60000, **nodes) as b,
        cluster_node(tmp_path, redis_server.url, "c", rtc_base=61000, **nodes) as c,
    ):
        for node in (a, b, c):
            await eventually(lambda n=node: {x.node_id for x in n.cluster.nodes} == {"a", "b", "c"}, what="nodes")
        assert await registry.place("back", "a") == "a"
        await a.cluster.cascade.seats.add_satellite("back", "b")
        alice = MediaPeer(a.ws_url("back", "alice"), "alice", video=False)
        bob = MediaPeer(a.ws_url("back", "bob"), "bob", video=False)
        peers = [alice, bob]
        again: ProtooClient | None = None
        try:
            await alice.join()
            await bob.join()
            seats = a.cluster.cascade.seats
            await eventually(lambda: _at_least(seats, "back", "a", 2), what="A's consumers reported")
            await eventually(lambda: _load(b, "a") >= 2, what="A's load in B's registry view")
            carol = MediaPeer(b.ws_url("back", "carol"), "carol", video=False)
            peers.append(carol)
            await carol.join()
            room_b = b.rooms.rooms["back"]
            session = room_b.peers["carol"]
            await alice.signaling.wait_for("newConsumer", lambda d: d["peerId"] == "carol", kind="request", timeout=20)
            await eventually(lambda: _at_least(seats, "back", "b", 2), what="B's consumers reported")
            await carol.signaling.drop()
            await eventually(lambda: not session.connected, what="Carol's drop noticed on B")
            assert "carol" in room_b.peers and session.grace_timer is not None
            again = await ProtooClient.connect(c.ws_url("back", "carol"))
            answer = await again.request("join", JOIN)
            assert sorted(p["id"] for p in answer["peers"]) == ["alice", "bob"]
            assert room_b.peers["carol"] is session and session.connected and session.grace_timer is None
            assert a.rooms.rooms["back"].broadcasters["carol"].node == "b"
            assert alice.signaling.count("peerClosed") == 0 and bob.signaling.count("peerClosed") == 0
        finally:
            if again is not None:
                await again.close()
            for peer in reversed(peers):
                await peer.close()

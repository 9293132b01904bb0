"""Reconnecting with the same peerId, and the grace period of a dropped WebSocket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.harness import running_server
from tests.e2e.protoo_client import ProtooClient
from tests.integration.signaling.conftest import OPUS, VP8, Connect, setup_peer
from tests.polling import eventually

pytestmark = pytest.mark.timeout(60)


async def test_reconnect_with_the_same_peer_id_replaces_the_connection(server, connect: Connect) -> None:
    alice, bob = await connect("r", "alice"), await connect("r", "bob")
    a = await setup_peer(alice, display_name="Alice")
    old_audio = await alice.request("produce", {"transportId": a["send"]["id"], "kind": "audio", "rtpParameters": OPUS})
    await setup_peer(bob, display_name="Bob")
    old_request = await bob.wait_for("newConsumer", kind="request")
    room = server.rooms.rooms["r"]

    alice2 = await connect("r", "alice")
    await asyncio.wait_for(alice.closed.wait(), 5)
    assert alice.close_code == 4000  # protoo-client does not reconnect after 4000
    # Same session: nothing changed for Bob, the old producer still works.
    assert await alice2.request("pauseProducer", {"producerId": old_audio["id"]}) == {}
    assert await bob.wait_for("consumerPaused") == {"consumerId": old_request["id"]}
    assert room.peers["alice"].connection is not None and len(room.peers) == 2

    # The client starts over (what mediasoup-demo does after a reconnect): transports, join.
    a2 = await setup_peer(alice2, display_name="Alice 2")
    assert a2["join"]["peers"] == [{"id": "bob", "displayName": "Bob", "device": {"name": "test"}}]
    # What the old connection made is gone; Bob sees the producer close, not the peer.
    await bob.wait_for("consumerClosed", lambda d: d["consumerId"] == old_request["id"])
    assert await bob.wait_for("peerDisplayNameChanged") == {
        "peerId": "alice",
        "displayName": "Alice 2",
        "oldDisplayName": "Alice",
    }
    assert set(room.peers["alice"].transports) == {a2["send"]["id"], a2["recv"]["id"]}
    new_video = await alice2.request(
        "produce", {"transportId": a2["send"]["id"], "kind": "video", "rtpParameters": VP8}
    )
    request = await bob.wait_for("newConsumer", lambda d: d["producerId"] == new_video["id"], kind="request")
    assert request["peerId"] == "alice"
    await asyncio.sleep(0.2)
    assert bob.count("peerClosed") == 0 and bob.count("newPeer") == 0


async def test_a_dropped_peer_is_kept_for_the_grace_period(tmp_path: Path) -> None:
    async with running_server(tmp_path, peer_reconnect_grace_seconds=1.0) as server:
        alice = await ProtooClient.connect(server.ws_url("r", "alice"))
        bob = await ProtooClient.connect(server.ws_url("r", "bob"))
        try:
            a = await setup_peer(alice, display_name="Alice")
            await alice.request("produce", {"transportId": a["send"]["id"], "kind": "audio", "rtpParameters": OPUS})
            b = await setup_peer(bob, display_name="Bob")
            consumer_of_alice = await bob.wait_for("newConsumer", kind="request")
            room = server.rooms.rooms["r"]

            # Alice's socket drops; within the grace period Bob notices nothing.
            await alice.drop()
            await eventually(lambda: not room.peers["alice"].connected)
            await bob.request("changeDisplayName", {"displayName": "Robert"})  # Alice misses it...
            bob_video = await bob.request(
                "produce", {"transportId": b["send"]["id"], "kind": "video", "rtpParameters": VP8}
            )  # ...and this producer
            await asyncio.sleep(0.5)
            assert bob.count("peerClosed") == 0 and "alice" in room.peers
            assert room.peers["alice"].producers  # its media untouched

            # She comes back in time: the missed notification is delivered, the missed
            # producer consumed, her session goes on.
            alice = await ProtooClient.connect(server.ws_url("r", "alice"))
            assert await alice.wait_for("peerDisplayNameChanged") == {
                "peerId": "bob",
                "displayName": "Robert",
                "oldDisplayName": "Bob",
            }
            request = await alice.wait_for("newConsumer", kind="request")
            assert request["producerId"] == bob_video["id"]
            await asyncio.sleep(1.2)
            assert bob.count("peerClosed") == 0 and room.peers["alice"].connected

            # She drops again and stays away: now the others are told.
            await alice.drop()
            assert await bob.wait_for("peerClosed", timeout=5) == {"peerId": "alice"}
            await bob.wait_for("consumerClosed", lambda d: d["consumerId"] == consumer_of_alice["id"])
            assert set(room.peers) == {"bob"} and not room.closed
            await bob.drop()
            await asyncio.sleep(0.3)
            assert "r" in server.rooms.rooms  # Bob's grace period
            await eventually(lambda: server.rooms.rooms == {}, timeout=5)

            # A client that closes its socket itself leaves at once, grace or not.
            carol = await ProtooClient.connect(server.ws_url("r2", "carol"))
            dave = await ProtooClient.connect(server.ws_url("r2", "dave"))
            await carol.request("join", {"displayName": "Carol"})
            await dave.request("join", {"displayName": "Dave"})
            await carol.close()
            assert await dave.wait_for("peerClosed", timeout=0.5) == {"peerId": "carol"}
            await dave.close()
        finally:
            for client in (alice, bob):
                if not client.closed.is_set():
                    await client.close()
                else:
                    await client.session.close()

"""Room membership and lifecycle with a fake host (no media worker): attach and
takeover, the grace period, the one leave path (peers and broadcasters), the
room's own observer, one close."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from control.errors import Conflict
from control.rooms.manager import RoomManager
from control.rooms.peer import Peer
from control.rooms.room import Room
from control.signaling.protoo import CLOSE_REPLACED
from tests.unit.room_fakes import FakeConnection, FakeHost, FakeSettings, events, make_room


async def joined_peer(room: Room, peer_id: str) -> tuple[Peer, FakeConnection]:
    connection = FakeConnection()
    peer = room.attach(peer_id, connection.as_protoo())
    await room.handle_request(peer, "join", {"displayName": peer_id.title()})
    return peer, connection


async def test_a_room_lives_on_the_worker_its_host_picks() -> None:
    room, host = await make_room()
    assert room.primary.worker is host.workers[0]
    assert room.audio_level_observer is not None and room.active_speaker_observer is not None
    assert room.summary()["workers"] == [1000]


async def test_attach_then_takeover_with_the_same_peer_id() -> None:
    room, _ = await make_room()
    first = FakeConnection()
    peer = room.attach("alice", first.as_protoo())
    assert first.methods() == ["mediasoup-version"] and peer.generation == 1
    second = FakeConnection()
    again = room.attach("alice", second.as_protoo())
    assert again is peer and peer.generation == 2 and peer.connection is second
    assert first.closed and first.close_code == CLOSE_REPLACED


async def test_joining_tells_the_others_and_the_observer() -> None:
    room, _ = await make_room()
    seen = events(room, "peerjoined")
    alice, alice_conn = await joined_peer(room, "alice")
    bob, _ = await joined_peer(room, "bob")
    assert ("newPeer", {"id": "bob", "displayName": "Bob", "device": {}}) in alice_conn.notifications
    assert seen == [("peerjoined", alice), ("peerjoined", bob)]
    with pytest.raises(Conflict) as refused:  # the same connection joins twice
        await room.handle_request(alice, "join", {"displayName": "A"})
    assert refused.value.status == 409 and refused.value.message == "Peer already joined"


async def test_a_client_close_leaves_at_once_and_the_last_peer_closes_the_room() -> None:
    room, host = await make_room()
    seen = events(room, "peerleft", "close")
    alice, alice_conn = await joined_peer(room, "alice")
    bob, bob_conn = await joined_peer(room, "bob")
    bob_conn.ended(by_client=True)
    room.detach(bob, bob_conn.as_protoo())
    assert bob.closed and "bob" not in room.peers
    assert ("peerClosed", {"peerId": "bob"}) in alice_conn.notifications
    assert seen == [("peerleft", bob)] and not room.closed
    alice_conn.ended(by_client=True)
    room.detach(alice, alice_conn.as_protoo())
    assert room.closed and host.closed_rooms == [room]
    assert seen == [("peerleft", bob), ("peerleft", alice), ("close",)]
    assert room.primary.closed


async def test_a_dropped_socket_keeps_the_peer_for_the_grace_period() -> None:
    room, _ = await make_room(FakeHost(settings=FakeSettings(peer_reconnect_grace_seconds=0.05)))
    alice, _ = await joined_peer(room, "alice")
    bob, bob_conn = await joined_peer(room, "bob")
    bob_conn.ended(by_client=False)
    room.detach(bob, bob_conn.as_protoo())
    assert not bob.closed and bob.grace_timer is not None
    await room.handle_request(alice, "changeDisplayName", {"displayName": "Ada"})
    assert bob.backlog  # the rename waits for bob's reconnect
    await asyncio.sleep(0.1)
    assert bob.closed and "bob" not in room.peers and not room.closed


async def test_a_reconnect_within_the_grace_period_resumes_the_session() -> None:
    room, _ = await make_room(FakeHost(settings=FakeSettings(peer_reconnect_grace_seconds=5)))
    alice, _ = await joined_peer(room, "alice")
    bob, bob_conn = await joined_peer(room, "bob")
    bob_conn.ended(by_client=False)
    room.detach(bob, bob_conn.as_protoo())
    await room.handle_request(alice, "changeDisplayName", {"displayName": "Ada"})
    again = FakeConnection()
    assert room.attach("bob", again.as_protoo()) is bob
    assert bob.grace_timer is None and bob.joined
    assert again.methods() == ["mediasoup-version", "peerDisplayNameChanged"]


async def test_no_grace_while_the_server_shuts_down() -> None:
    room, host = await make_room()
    alice, conn = await joined_peer(room, "alice")
    host.closing = True
    conn.ended(by_client=False)
    room.detach(alice, conn.as_protoo())
    assert alice.closed and room.closed


async def test_a_broadcaster_enters_and_leaves_as_a_peer_without_closing_the_room() -> None:
    room, _ = await make_room()
    seen = events(room, "peerjoined", "peerleft")
    alice, alice_conn = await joined_peer(room, "alice")
    broadcaster = Peer(room, "bc", broadcaster=True)
    room.add_broadcaster(broadcaster)
    assert ("newPeer", {"id": "bc", "displayName": "", "device": {}}) in alice_conn.notifications
    with pytest.raises(Conflict):
        room.add_broadcaster(Peer(room, "alice", broadcaster=True))
    with pytest.raises(Conflict):  # a WebSocket cannot take a broadcaster's id
        room.attach("bc", FakeConnection().as_protoo())
    room.leave(broadcaster)
    room.leave(broadcaster)  # once only
    assert ("peerClosed", {"peerId": "bc"}) in alice_conn.notifications
    assert seen == [("peerjoined", alice), ("peerjoined", broadcaster), ("peerleft", broadcaster)]
    assert room.broadcasters == {} and not room.closed


async def test_leaving_without_telling_the_others() -> None:
    """A worker death drops broadcasters: the peers reconnect and re-join anyway."""
    room, _ = await make_room()
    _, alice_conn = await joined_peer(room, "alice")
    broadcaster = Peer(room, "bc", broadcaster=True)
    room.add_broadcaster(broadcaster)
    room.leave(broadcaster, tell_others=False)
    assert "peerClosed" not in alice_conn.methods() and broadcaster.closed


async def test_close_is_idempotent_and_closes_every_connection() -> None:
    room, host = await make_room()
    seen = events(room, "close", "peerleft")
    _, alice_conn = await joined_peer(room, "alice")
    _, bob_conn = await joined_peer(room, "bob")
    room.close(1001, "server shutting down")
    room.close()
    assert alice_conn.close_code == 1001 and bob_conn.close_code == 1001
    assert host.closed_rooms == [room] and seen == [("close",)]


async def test_the_manager_forwards_the_events_of_every_room() -> None:
    """``watch_rooms``: listeners get ``(room, *args)`` from rooms open now and later."""
    manager = RoomManager(cast(Any, FakeSettings()), cast(Any, None))
    seen: list[tuple[str, str]] = []
    stop = manager.watch_rooms({"peerjoined": lambda room, peer: seen.append((room.id, peer.id))})
    room, _ = await make_room(room_id="r1")
    manager.observer.safe_emit("roomcreated", room)
    await joined_peer(room, "alice")
    stop()
    await joined_peer(room, "bob")
    assert seen == [("r1", "alice")]

"""A cluster of real nodes on loopback behind one Redis: media across the signaling
relay, and a node killed with SIGKILL (control.cluster)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from control.cluster import Registry
from tests.e2e.cluster_nodes import cluster_node, node_process
from tests.e2e.media_peer import MediaPeer
from tests.e2e.protoo_client import ProtooClient
from tests.integration.test_cluster import JOIN
from tests.polling import eventually

pytestmark = pytest.mark.timeout(180)


async def test_peers_through_two_nodes_exchange_audio_and_video(tmp_path: Path, redis_server, registry) -> None:
    async with (
        cluster_node(tmp_path, redis_server.url, "a", rtc_base=43000) as a,
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=44000) as b,
    ):
        await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        alice = MediaPeer(b.ws_url("meet", "alice"), "alice")
        bob: MediaPeer | None = None
        try:
            await alice.join()
            owner = await registry.owner("meet")
            host, other = (a, b) if owner == "a" else (b, a)
            assert set(host.rooms.rooms) == {"meet"} and not other.rooms.rooms
            # Bob connects to the node that does not host the room.
            bob = MediaPeer(other.ws_url("meet", "bob"), "bob")
            await bob.join()
            assert [p["id"] for p in bob.peers] == ["alice"]
            assert set(host.rooms.rooms["meet"].peers) == {"alice", "bob"} and not other.rooms.rooms
            await bob.wait_media("alice", video_frames=10, audio_samples=24000, timeout=45)
            await alice.wait_media("bob", video_frames=10, audio_samples=24000, timeout=45)
        finally:
            for peer in (bob, alice):
                if peer is not None:
                    await peer.close()


async def test_a_killed_node_leaves_the_registry_and_its_rooms_are_placed_again(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    async with cluster_node(tmp_path, redis_server.url, "a", rtc_base=45000) as a:
        async with node_process(tmp_path, redis_server.url, "b", rtc_base=46000) as (process, _):
            await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="B registered")
            # The room lives on B; Carol reaches it through A.
            assert await registry.place("k", "b") == "b"
            carol = await ProtooClient.connect(a.ws_url("k", "carol"))
            try:
                await carol.request("join", JOIN)
                assert not a.rooms.rooms
                os.kill(process.pid, signal.SIGKILL)
                killed = time.monotonic()
                # Carol is told to reconnect (4002), and B leaves the registry within 5 s.
                await eventually(carol.closed.is_set, timeout=10, what="relayed client closed")
                assert carol.close_code == 4002
                while "b" in {n.node_id for n in await registry.nodes()}:
                    assert time.monotonic() - killed < 5, "a killed node stayed in the registry"
                    await asyncio.sleep(0.1)
            finally:
                await carol.close()
        # Rejoining through A places the room again, on a live node (A).
        again = await ProtooClient.connect(a.ws_url("k", "carol"))
        try:
            await again.request("join", JOIN)
            assert await registry.owner("k") == "a"
            assert set(a.rooms.rooms["k"].peers) == {"carol"}
        finally:
            await again.close()


async def test_media_is_back_after_rejoining_through_a_live_node_when_the_owner_is_killed(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    async with cluster_node(tmp_path, redis_server.url, "a", rtc_base=47000) as a:
        async with node_process(tmp_path, redis_server.url, "b", rtc_base=48000) as (process, port_b):
            await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="B registered")
            assert await registry.place("call", "b") == "b"
            # Alice through A (relayed), Bob on B itself: media flows through B.
            alice = MediaPeer(a.ws_url("call", "alice"), "alice")
            bob = MediaPeer(f"ws://127.0.0.1:{port_b}/?roomId=call&peerId=bob", "bob")
            try:
                await alice.join()
                await bob.join()
                await alice.wait_media("bob", video_frames=5, audio_samples=9600, timeout=45)
                assert not a.rooms.rooms
                os.kill(process.pid, signal.SIGKILL)
                await eventually(alice.signaling.closed.is_set, timeout=10, what="Alice told to reconnect")
                assert alice.signaling.close_code == 4002
            finally:
                await alice.close()
                await bob.close()
        # Both rejoin through A: the room is placed again on A, media flows again.
        alice = MediaPeer(a.ws_url("call", "alice"), "alice")
        bob = MediaPeer(a.ws_url("call", "bob"), "bob")
        try:
            await alice.join()
            await bob.join()
            rejoined = time.monotonic()
            assert await registry.owner("call") == "a"
            await alice.wait_media("bob", video_frames=5, audio_samples=9600, timeout=30)
            await bob.wait_media("alice", video_frames=5, audio_samples=9600, timeout=30)
            print(f"media back {time.monotonic() - rejoined:.2f}s after the rejoin")
        finally:
            await alice.close()
            await bob.close()

"""Socket handover with media (control.cluster.handover): a peer that connected to node A
(``python -m control``, uvloop) for a room on node B of the same host is B's own; its
media and requests go on when A is killed."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from control.cluster import Registry
from tests.e2e.cluster_nodes import cluster_node, node_process
from tests.e2e.media_peer import MediaPeer
from tests.e2e.protoo_client import ProtooClient
from tests.polling import eventually

pytestmark = pytest.mark.timeout(180)


async def test_a_handed_over_peer_keeps_its_media_when_the_node_it_reached_dies(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    async with (
        cluster_node(tmp_path, redis_server.url, "b", rtc_base=44000, cluster_host_id=None) as b,
        node_process(tmp_path, redis_server.url, "a", rtc_base=43000, env_overrides={"CLUSTER_HOST_ID": ""}) as (
            process,
            port_a,
        ),
    ):
        handover = b.cluster.handover
        assert handover is not None
        await eventually(lambda: {n.node_id for n in b.cluster.nodes} == {"a", "b"}, what="both nodes registered")
        assert await registry.place("call", "b") == "b"
        bob = MediaPeer(b.ws_url("call", "bob"), "bob")
        await bob.join()
        url_a = f"ws://127.0.0.1:{port_a}/?roomId=call&peerId=alice"

        async def a_hands_over() -> bool:  # A learns B's socket at its next heartbeat
            adopted = handover.adopted
            probe = await ProtooClient.connect(url_a)
            await probe.close()
            await eventually(lambda: "alice" not in b.rooms.rooms["call"].peers, what="the probe gone")
            return handover.adopted > adopted

        alice = MediaPeer(url_a, "alice")
        try:
            await eventually(a_hands_over, what="A hands clients over to B")
            adopted = handover.adopted
            await alice.join()
            assert handover.adopted == adopted + 1
            await alice.wait_media("bob", video_frames=5, audio_samples=9600, timeout=45)
            await bob.wait_media("alice", video_frames=5, audio_samples=9600, timeout=45)
            os.kill(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait, 10)
            frames = max(r.frames for r in alice.from_peer("bob", "video"))
            samples = max(r.samples for r in bob.from_peer("alice", "audio"))
            await alice.wait_media("bob", video_frames=frames + 10, audio_samples=9600, timeout=30)
            await bob.wait_media("alice", video_frames=5, audio_samples=samples + 9600, timeout=30)
            assert (await alice.signaling.request("getRouterRtpCapabilities"))["codecs"]
            assert not alice.signaling.closed.is_set()
            assert set(b.rooms.rooms["call"].peers) == {"alice", "bob"}
        finally:
            await alice.close()
            await bob.close()

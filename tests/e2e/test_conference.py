"""Real WebRTC clients (pymediasoup + aiortc) in a room: media is encoded, sent
through the mediasoup workers and decoded at every other peer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import running_server
from tests.e2e.media_peer import MediaPeer
from tests.polling import eventually

pytestmark = pytest.mark.timeout(180)


async def test_three_peers_send_and_receive_audio_and_video(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        names = ["alice", "bob", "carol"]
        peers = [
            MediaPeer(
                server.ws_url("conf", name),
                name,
                display_name=name.title(),
                metadata={"email": f"{name}@example.org", "integrations": {"crm": {"apiKey": "K-1"}}},
            )
            for name in names
        ]
        try:
            for peer in peers:
                await peer.join()
            assert [len(p.peers) for p in peers] == [0, 1, 2]
            # Every peer decodes video frames and audio samples from both others.
            for peer in peers:
                for other in names:
                    if other != peer.peer_id:
                        await peer.wait_media(other, video_frames=10, audio_samples=48000 // 2, timeout=45)
            for peer in peers:
                for received in peer.received.values():
                    if received.kind == "video":
                        assert received.width == 160  # what the sender encoded
            room = server.rooms.rooms["conf"]
            assert all(len(p.producers) == 2 and len(p.consumers) == 4 for p in room.peers.values())
            # The tone is loud: the audio level observer names a speaker.
            await peers[0].signaling.wait_for("activeSpeaker", lambda d: d.get("peerId") in names, timeout=15)
            # Downlink bandwidth estimates are relayed to the receivers.
            bwe = await peers[1].signaling.wait_for("downlinkBwe", timeout=15)
            assert set(bwe) == {"desiredBitrate", "effectiveDesiredBitrate", "availableBitrate"}
            # With every microphone paused, the observer reports silence (peerId null).
            mark = len(peers[0].signaling.notifications)
            for peer in peers:
                audio_id = next(pid for pid, p in peer.producers.items() if p.kind == "audio")
                await peer.signaling.request("pauseProducer", {"producerId": audio_id})
            await peers[0].signaling.wait_for("activeSpeaker", lambda d: d == {"peerId": None}, timeout=15, start=mark)
            # The metadata never reached the other peers.
            assert "K-1" not in repr(peers[0].signaling.notifications + peers[0].signaling.server_requests)

            # Carol leaves: her consumers close at the others, their own consumers stay.
            carol_consumers = {peer.peer_id: {r.consumer_id for r in peer.from_peer("carol")} for peer in peers[:2]}
            await peers[2].close()
            for peer in peers[:2]:
                await peer.signaling.wait_for("peerClosed", lambda d: d == {"peerId": "carol"})
                for consumer_id in carol_consumers[peer.peer_id]:
                    await peer.signaling.wait_for("consumerClosed", lambda d: d["consumerId"] == consumer_id)
            await eventually(lambda: all(len(p.consumers) == 2 for p in room.peers.values()))
            assert set(room.peers) == {"alice", "bob"}
            # Media between the two that stayed still flows.
            before = max(r.frames for r in peers[0].from_peer("bob", "video"))
            await eventually(lambda: max(r.frames for r in peers[0].from_peer("bob", "video")) > before + 5)
        finally:
            for peer in peers:
                await peer.close()
        await eventually(lambda: server.rooms.rooms == {})
        assert room.closed and all(r.closed for r in room.routers)


async def test_time_to_first_video_frame_with_two_publishers(
    tmp_path: Path, capsys: pytest.CaptureFixture, record_property: Any
) -> None:
    """A figure, not an assertion: WebSocket connect -> first decoded video frame."""
    async with running_server(tmp_path) as server:
        publishers = [MediaPeer(server.ws_url("latency", n), n) for n in ("pub1", "pub2")]
        viewer = MediaPeer(server.ws_url("latency", "viewer"), "viewer", audio=False, video=False)
        try:
            for publisher in publishers:
                await publisher.join()
            await publishers[1].wait_media("pub1", timeout=30)
            await viewer.join()
            for name in ("pub1", "pub2"):
                await viewer.wait_media(name, video_frames=1, audio_samples=1, timeout=30)
            first = min(
                r.first_frame_at for r in viewer.received.values() if r.kind == "video" and r.first_frame_at is not None
            )
            assert viewer.connected_at is not None
            elapsed = first - viewer.connected_at
            record_property("join_to_first_video_frame_ms", round(elapsed * 1000))
            with capsys.disabled():  # shown even when pytest captures output
                print(
                    f"\nJOIN LATENCY: WebSocket connect -> first decoded video frame with two publishers: "
                    f"{elapsed * 1000:.0f} ms"
                )
        finally:
            for peer in (viewer, *publishers):
                await peer.close()


async def test_data_channel_messages_reach_the_other_peers(tmp_path: Path) -> None:
    """SCTP over the WebRtcTransports: a DataProducer's messages reach every other peer."""
    async with running_server(tmp_path) as server:
        peers = [
            MediaPeer(server.ws_url("chat", name), name, audio=False, video=False, data=True)
            for name in ("alice", "bob", "carol")
        ]
        try:
            for peer in peers:
                await peer.join()
            data_producer = await peers[0].send_transport.produceData(label="chat", protocol="text")
            for peer in peers[1:]:
                await peer.signaling.wait_for("newDataConsumer", kind="request", timeout=15)
            await eventually(
                lambda: (
                    data_producer.readyState == "open"
                    and all(dc.readyState == "open" for p in peers[1:] for dc in p.data_consumers)
                ),
                timeout=15,
            )
            for i in range(5):
                data_producer.send(f"hello {i}")
            await eventually(lambda: all(len(p.data_messages) == 5 for p in peers[1:]), timeout=15)
            assert peers[1].data_messages == [f"hello {i}" for i in range(5)]
            assert peers[0].data_messages == []
        finally:
            for peer in peers:
                await peer.close()

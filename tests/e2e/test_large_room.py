"""A room past ROOM_CONSUMERS_PER_WORKER spreads: new consuming transports go to
a router on another worker, fed by pipe_to_router, and media still arrives."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import running_server
from tests.e2e.media_peer import MediaPeer
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)


async def test_consumers_spread_to_another_worker(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=2, room_consumers_per_worker=4) as server:
        speaker = MediaPeer(server.ws_url("big", "speaker"), "speaker")
        viewers = [
            MediaPeer(server.ws_url("big", f"viewer{i}"), f"viewer{i}", audio=False, video=False) for i in range(4)
        ]
        try:
            await speaker.join()
            for viewer in viewers:
                await viewer.join()
                await viewer.wait_media("speaker", timeout=30)
            room = server.rooms.rooms["big"]
            primary = room.primary.worker
            assert len(room.routers) == 2
            spread = room.routers[1].worker
            assert spread is not primary
            workers = {
                name: {c.transport.router.worker for c in room.peers[name].consumers.values()}
                for name in ("viewer0", "viewer1", "viewer2", "viewer3")
            }
            # Two viewers' two consumers each fill the primary worker; the next go elsewhere.
            assert workers["viewer0"] == {primary} and workers["viewer1"] == {primary}
            assert workers["viewer2"] == {spread} and workers["viewer3"] == {spread}
            assert room.consumer_count(room.routers[0]) == 4 and room.consumer_count(room.routers[1]) == 4
            # The producers were piped once into the other router.
            assert set(room.routers[1].producers) == set(room.peers["speaker"].producers)

            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.base_url}/api/rooms/big") as resp:
                    view = await resp.json()
            assert [r["workerPid"] for r in view["routers"]] == [primary.pid, spread.pid]
            viewer2 = next(p for p in view["peers"] if p["id"] == "viewer2")
            assert {c["workerPid"] for c in viewer2["consumers"]} == {spread.pid}

            # Producer pause and close travel through the pipe.
            video_id = next(p.id for p in room.peers["speaker"].producers.values() if p.kind == "video")
            consumer_id = next(c.id for c in room.peers["viewer2"].consumers.values() if c.producer_id == video_id)
            await speaker.signaling.request("pauseProducer", {"producerId": video_id})
            await viewers[2].signaling.wait_for("consumerPaused", lambda d: d["consumerId"] == consumer_id)
            await speaker.signaling.request("resumeProducer", {"producerId": video_id})
            await viewers[2].signaling.wait_for("consumerResumed", lambda d: d["consumerId"] == consumer_id)
            frames = viewers[2].from_peer("speaker", "video")[0].frames
            await eventually(
                lambda: viewers[2].from_peer("speaker", "video")[0].frames >= frames + 5,
                timeout=10,
                what="the resumed video decoded",
                interval=0.1,
            )
            await speaker.signaling.request("closeProducer", {"producerId": video_id})
            for viewer in viewers:
                [received] = viewer.from_peer("speaker", "video")
                await viewer.signaling.wait_for("consumerClosed", lambda d: d["consumerId"] == received.consumer_id)
            assert video_id not in room.routers[1].producers
        finally:
            for peer in (*viewers, speaker):
                await peer.close()

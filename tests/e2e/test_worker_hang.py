"""A mediasoup worker that stops answering mid-call (SIGSTOP): found within 5 s,
killed and replaced, its room rebuilt on a live worker, its peers told to
reconnect (4002); new rooms never go to it meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.harness import running_server
from tests.e2e.media_peer import MediaPeer
from tests.polling import eventually

pytestmark = pytest.mark.timeout(180)


async def test_worker_stopped_mid_call(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=2, peer_reconnect_grace_seconds=15) as server:
        alice = MediaPeer(server.ws_url("call", "alice"), "alice")
        bob = MediaPeer(server.ws_url("call", "bob"), "bob")
        replaced: list[MediaPeer] = []
        try:
            await alice.join()
            await bob.join()
            await alice.wait_media("bob", timeout=30)
            await bob.wait_media("alice", timeout=30)
            room = server.rooms.rooms["call"]
            stopped = room.primary.worker
            loop = asyncio.get_running_loop()
            hung: asyncio.Future[float] = loop.create_future()
            server.pool.once("workerhung", lambda worker: hung.done() or hung.set_result(time.monotonic()))

            os.kill(stopped.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                # Rooms created meanwhile go to the live worker, before and after the
                # stopped one is found out.
                placed = []
                index = 0
                while not hung.done() or index < 2:
                    new_room = await server.rooms.get_or_create_room(f"meanwhile-{index}")
                    placed.append(new_room.primary.worker)
                    index += 1
                    await asyncio.sleep(0.3)
                assert all(w is not stopped for w in placed), [w.pid for w in placed]
                assert await hung - stopped_at < 5.0
                assert stopped.closed and stopped.died

                # The call's peers are told to reconnect; the room is rebuilt on a live worker.
                for peer in (alice, bob):
                    protoo = peer.protoo
                    assert protoo is not None
                    await asyncio.wait_for(protoo.closed.wait(), 10)
                    assert protoo.close_code == 4002
                    assert "reconnect" in (protoo.close_reason or "")
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stopped.pid, signal.SIGKILL)

            await alice.close()
            await bob.close()
            replaced = [MediaPeer(server.ws_url("call", name), name) for name in ("alice", "bob")]
            for peer in replaced:
                await peer.join()
            assert server.rooms.rooms["call"] is room and not room.closed
            assert room.primary.worker is not stopped and not room.primary.worker.closed
            await replaced[0].wait_media("bob", timeout=30)
            await replaced[1].wait_media("alice", timeout=30)

            # The pool replaced the stopped worker.
            await eventually(
                lambda: len(server.pool.workers) >= 2 and stopped not in server.pool.workers,
                what="the stopped worker replaced",
                interval=0.2,
            )
        finally:
            for peer in (*replaced, alice, bob):
                await peer.close()

"""A mediasoup worker killed mid-call: its room's peers are told to reconnect,
rejoin, and media flows again; a room on another worker does not notice."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import running_server
from tests.e2e.media_peer import MediaPeer

pytestmark = pytest.mark.timeout(180)


async def test_worker_killed_mid_call(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=2, peer_reconnect_grace_seconds=15) as server:
        alice = MediaPeer(server.ws_url("call", "alice"), "alice")
        bob = MediaPeer(server.ws_url("call", "bob"), "bob")
        await alice.join()
        await bob.join()
        await alice.wait_media("bob", timeout=30)
        await bob.wait_media("alice", timeout=30)
        room = server.rooms.rooms["call"]
        doomed = room.primary.worker

        # A room on the other worker, with its own call going on.
        carol = MediaPeer(server.ws_url("elsewhere", "carol"), "carol")
        dave = MediaPeer(server.ws_url("elsewhere", "dave"), "dave")
        await carol.join()
        await dave.join()
        await dave.wait_media("carol", timeout=30)
        other_room = server.rooms.rooms["elsewhere"]
        assert other_room.primary.worker is not doomed

        os.kill(doomed.pid, signal.SIGKILL)
        replaced = []
        try:
            # The affected peers are told to reconnect (protoo-client reconnects on any
            # code but 4000); the others' sockets stay open.
            for peer in (alice, bob):
                await asyncio.wait_for(peer.signaling.closed.wait(), 10)
                assert peer.signaling.close_code == 4002
                assert "reconnect" in (peer.signaling.close_reason or "")
            assert not carol.signaling.closed.is_set() and not dave.signaling.closed.is_set()
            frames = max(r.frames for r in dave.from_peer("carol", "video"))
            deadline = time.monotonic() + 10
            while max(r.frames for r in dave.from_peer("carol", "video")) < frames + 10:
                assert time.monotonic() < deadline, "the other room's media stopped"
                await asyncio.sleep(0.1)

            # They reconnect with the same peerIds and rejoin: media flows again.
            await alice.close()
            await bob.close()
            replaced = [MediaPeer(server.ws_url("call", name), name) for name in ("alice", "bob")]
            for peer in replaced:
                await peer.join()
            assert server.rooms.rooms["call"] is room and not room.closed
            assert room.primary.worker is not doomed and not room.primary.worker.closed
            await replaced[0].wait_media("bob", timeout=30)
            await replaced[1].wait_media("alice", timeout=30)
            # Nobody saw anybody leave.
            assert replaced[0].signaling.count("peerClosed") == 0 and replaced[1].signaling.count("peerClosed") == 0

            # The pool replaced the dead worker; health reports two live workers.
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 15
                while True:
                    async with http.get(f"{server.base_url}/api/health") as resp:
                        body = await resp.json()
                    pids = [w["pid"] for w in body["workers"] if w["alive"]]
                    if len(pids) == 2 and doomed.pid not in pids:
                        break
                    assert time.monotonic() < deadline, body
                    await asyncio.sleep(0.2)
        finally:
            for peer in (*replaced, carol, dave, alice, bob):
                await peer.close()

"""``GET /api/rooms``, ``GET /api/rooms/{roomId}``, per-worker load in ``/api/health``,
and what the logs say (room/peer bound, never integrations)."""

from __future__ import annotations

import json

import aiohttp
import pytest
from loguru import logger

from tests.e2e.harness import Server
from tests.e2e.protoo_client import ProtooClientError
from tests.integration.signaling.conftest import OPUS, Connect, setup_peer
from tests.polling import eventually

pytestmark = pytest.mark.timeout(60)


async def test_rooms_api_and_health_load(server: Server, connect: Connect) -> None:
    lines: list[dict] = []
    sink = logger.add(lambda m: lines.append(json.loads(m)), serialize=True, level="DEBUG")
    try:
        alice, bob = await connect("r1", "alice"), await connect("r1", "bob")
        a = await setup_peer(
            alice,
            display_name="Alice",
            email="alice@example.org",
            aiSettings={"language": "en"},
            integrations={"jira": {"token": "tok-SECRET-42"}},
        )
        produced = await alice.request(
            "produce", {"transportId": a["send"]["id"], "kind": "audio", "rtpParameters": OPUS}
        )
        await setup_peer(bob, display_name="Bob")
        await bob.wait_for("consumerScore")
        other = await connect("r2", "carol")
        await other.request("join", {"displayName": "Carol"})

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.base_url}/api/rooms") as resp:
                assert resp.status == 200
                body = await resp.json()
            rooms = {room["id"]: room for room in body["rooms"]}
            assert set(rooms) == {"r1", "r2"}
            assert rooms["r1"]["peers"] == 2 and rooms["r1"]["broadcasters"] == 0
            assert rooms["r1"]["workers"] == [server.rooms.rooms["r1"].primary.worker.pid]

            async with http.get(f"{server.base_url}/api/rooms/r1") as resp:
                assert resp.status == 200
                view = await resp.json()
            assert "SECRET" not in json.dumps(view)
            peers = {p["id"]: p for p in view["peers"]}
            assert peers["alice"]["metadata"] == {
                "email": "alice@example.org",
                "aiSettings": ["language"],
                "integrations": ["jira"],
            }
            assert [p["id"] for p in peers["alice"]["producers"]] == [produced["id"]]
            [consumer] = peers["bob"]["consumers"]
            assert consumer["producerId"] == produced["id"] and consumer["paused"] is False
            pid = view["routers"][0]["workerPid"]
            assert consumer["workerPid"] == pid and view["routers"][0]["consumers"] == 1
            assert {t["consuming"] for t in peers["bob"]["transports"]} == {True, False}

            async with http.get(f"{server.base_url}/api/rooms/nope") as resp:
                assert resp.status == 404
            # Dev mode (no API keys, loopback bind): open. With keys: tests/integration/test_auth_rest.py.

            async with http.get(f"{server.base_url}/api/health") as resp:
                health = await resp.json()
            load = {w["pid"]: w["load"] for w in health["workers"]}
            assert load[pid]["routers"] >= 1 and load[pid]["consumers"] == 1 and load[pid]["producers"] == 1
            assert load[pid]["transports"] == 4
    finally:
        logger.remove(sink)
    text = json.dumps(lines)
    assert "SECRET" not in text and "tok-" not in text
    bound = [line["record"]["extra"] for line in lines if "peer connected" in line["record"]["message"]]
    assert {"room": "r1", "peer": "alice"} in [{k: e.get(k) for k in ("room", "peer")} for e in bound]


async def test_joins_and_leaves_reach_chat_and_meetings(server: Server, connect: Connect) -> None:
    alice, bob = await connect("team", "alice"), await connect("team", "bob")
    await alice.request("join", {"displayName": "Alice", "email": "alice@example.org"})
    await bob.request("join", {"displayName": "Bob"})
    await bob.close()
    await alice.close()
    async with aiohttp.ClientSession() as http:

        async def four_messages() -> list[str] | None:
            async with http.get(f"{server.base_url}/api/rooms/team/messages") as resp:
                messages = (await resp.json())["messages"]
            texts = [m["text"] for m in reversed(messages)]
            return texts if len(texts) >= 4 else None

        texts = await eventually(four_messages, timeout=10, what="four system messages", interval=0.1)
        assert texts == ["Alice joined", "Bob joined", "Bob left", "Alice left"]
        async with http.get(f"{server.base_url}/api/rooms/team/meetings") as resp:
            [meeting] = (await resp.json())["meetings"]
        assert meeting["endedAt"] is not None
        assert {p["peerId"] for p in meeting["participants"]} == {"alice", "bob"}


async def test_services_can_add_signaling_methods(server: Server, connect: Connect) -> None:
    from control.signaling.protoo import ProtooError

    seen = []

    async def shout(room, peer, data):
        if not isinstance(data.get("text"), str):
            raise ProtooError(400, "text must be a string")
        seen.append((room.id, peer.id))
        server.rooms.notify_room(room.id, "shout", {"peerId": peer.id, "text": data["text"]}, exclude=peer.id)
        return {"ok": 1}

    server.rooms.register_method("shout", shout)
    with pytest.raises(ValueError):
        server.rooms.register_method("join", shout)
    alice, bob = await connect("x", "alice"), await connect("x", "bob")
    with pytest.raises(ProtooClientError) as info:
        await alice.request("shout", {"text": "hi"})
    assert info.value.code == 403
    await alice.request("join", {"displayName": "A"})
    await bob.request("join", {"displayName": "B"})
    assert await alice.request("shout", {"text": "hi"}) == {"ok": 1}
    assert await bob.wait_for("shout") == {"peerId": "alice", "text": "hi"}
    with pytest.raises(ProtooClientError) as info:
        await alice.request("shout", {"text": 1})
    assert info.value.code == 400
    assert seen == [("x", "alice")] and alice.count("shout") == 0

"""One room id rule (``control.ids``) on the real app: a room id the rule refuses is
refused everywhere it can enter -- the signaling WebSocket upgrade, the chat and
meetings REST routes, the operators' rooms route and the broadcaster API -- and an id
at the limit works everywhere, chat and object keys included. A peer id signaling
accepts can chat."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from control.chat.validation import ChatValidationError
from control.ids import ROOM_ID_RULE
from control.keys import CHAT, OBJECTS
from control.storage import presign_chat_upload
from tests.e2e.harness import Server
from tests.e2e.protoo_client import ProtooClient
from tests.integration.signaling.conftest import Connect

pytestmark = pytest.mark.timeout(60)

#: Refused by the rule, each for another reason (all but the first passed the
#: "1-128 printable characters" check signaling used to apply).
BAD_ROOM_IDS = ["team room!", "a" * 65, "a" * 100, "_room", "-room", "r\u00f8om", "room.x", "room~1", "$where"]
LONGEST = "R" + "0123456789_-" * 5 + "abc"  # 64 characters


async def join(client: ProtooClient, name: str) -> None:
    """Join, and wait for the "<name> joined" system message (posted once the meeting has the join)."""
    await client.request("join", {"displayName": name})
    await client.wait_for(
        "chatMessage", lambda d: d["message"]["type"] == "system" and d["message"]["text"] == f"{name} joined"
    )


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


@pytest.mark.parametrize("room_id", BAD_ROOM_IDS)
async def test_a_refused_room_id_is_refused_everywhere(server: Server, room_id: str) -> None:
    base, path_id = server.base_url, quote(room_id, safe="")
    async with aiohttp.ClientSession() as http:
        # The WebSocket upgrade: 400 before any room exists, the rule in the answer.
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(server.ws_url(room_id, "alice"), protocols=("protoo",))
        assert info.value.status == 400
        status, text = await call(http, "GET", server.ws_url(room_id, "alice").replace("ws://", "http://"))
        assert status == 400 and text == f"Invalid roomId: it must be {ROOM_ID_RULE}"

        # Chat and meetings REST: 400 invalid_room_id (field roomId), nothing read.
        for method, route in [
            ("GET", "messages"),
            ("DELETE", "messages"),
            ("GET", "meetings"),
            ("POST", "recording"),
            ("DELETE", "recording"),
        ]:
            status, body = await call(http, method, f"{base}/api/rooms/{path_id}/{route}")
            assert status == 400, (method, route, body)
            error = body["error"]
            assert error["code"] == "invalid_room_id" and error["field"] == "roomId", body
            assert ROOM_ID_RULE in error["message"]
        # The operators' room route (admin: loopback) says the same.
        status, body = await call(http, "GET", f"{base}/api/rooms/{path_id}")
        error = body["error"]
        assert status == 400 and error["code"] == "invalid_room_id" and error["field"] == "roomId"
        assert ROOM_ID_RULE in error["message"]

        # The broadcaster API: 400 invalid_room_id on every route, not 404.
        broadcaster = {"id": "bc", "displayName": "B", "device": {"name": "x"}}
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "", {}),
            ("POST", "/broadcasters", {"json": broadcaster}),
            ("DELETE", "/broadcasters/bc", {}),
            ("POST", "/broadcasters/bc/transports", {"json": {"type": "plain"}}),
            ("POST", "/broadcasters/bc/transports/t/producers", {"json": {}}),
        ]
        for method, route, kwargs in requests:
            status, body = await call(http, method, f"{base}/rooms/{path_id}{route}", **kwargs)
            assert status == 400, (method, route, body)
            assert body["error"]["code"] == "invalid_room_id" and ROOM_ID_RULE in body["error"]["message"], body

    assert server.rooms.rooms == {}
    with pytest.raises(ChatValidationError) as refused:  # the chat service itself, same rule
        await server.app[CHAT].history(room_id)
    assert refused.value.code == "invalid_room_id"


async def test_the_longest_room_id_works_everywhere(server: Server, connect: Connect) -> None:
    assert len(LONGEST) == 64
    alice = await connect(LONGEST, "alice")
    await join(alice, "Alice")
    sent = (await alice.request("chatMessage", {"text": "hi"}))["message"]
    assert sent["roomId"] == LONGEST and sent["sender"]["peerId"] == "alice"
    async with aiohttp.ClientSession() as http:
        status, body = await call(http, "GET", f"{server.base_url}/api/rooms/{LONGEST}/messages")
        assert status == 200 and sent["id"] in [m["id"] for m in body["messages"]]
        status, body = await call(http, "GET", f"{server.base_url}/api/rooms/{LONGEST}/meetings")
        assert status == 200 and len(body["meetings"]) == 1
        status, body = await call(http, "GET", f"{server.base_url}/api/rooms/{LONGEST}")
        assert status == 200
        status, body = await call(
            http,
            "POST",
            f"{server.base_url}/rooms/{LONGEST}/broadcasters",
            json={"id": "bc", "displayName": "B", "device": {"name": "x"}},
        )
        assert status == 200, body
    # Its chat files (and recordings: the same key rule) have keys.
    upload = await presign_chat_upload(
        server.app[OBJECTS], LONGEST, "notes.pdf", content_type="application/pdf", size=10
    )
    assert upload.key.startswith(f"chat/{LONGEST}/")
    # One character more is refused at the door.
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(server.ws_url(LONGEST + "x", "alice"), protocols=("protoo",))
        assert info.value.status == 400


@pytest.mark.parametrize("peer_id", ["ada@example.com", "-ada.", "p" * 128, "r\u00f8om"])
async def test_a_peer_id_signaling_accepts_can_chat(server: Server, connect: Connect, peer_id: str) -> None:
    client = await connect("room1", peer_id)
    await join(client, "Ada")  # the meeting recorded the join (the system message follows it)
    sent = (await client.request("chatMessage", {"text": "hello"}))["message"]
    assert sent["sender"] == {"peerId": peer_id, "displayName": "Ada"}
    meetings = await server.app[CHAT].meetings.list("room1")
    assert [p.peer_id for p in meetings.meetings[0].participants] == [peer_id]


@pytest.mark.parametrize("peer_id", ["a b", "p" * 129, "a\u2028b"])
async def test_a_refused_peer_id_is_refused_at_the_upgrade(server: Server, peer_id: str) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(server.ws_url("room1", peer_id), protocols=("protoo",))
        assert info.value.status == 400
    assert server.rooms.rooms == {}

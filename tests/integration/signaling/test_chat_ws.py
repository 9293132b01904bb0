"""Chat over the signaling WebSocket: ``chatMessage`` / ``getChatHistory`` requests and
``chatMessage`` / ``chatCleared`` notifications, on the real app (worker pool, rooms,
SQLite chat store) with raw protoo clients."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from control.keys import CHAT, SETTINGS
from control.store.errors import StoreError
from tests.e2e.harness import Server
from tests.e2e.protoo_client import ProtooClient, ProtooClientError
from tests.integration.signaling.conftest import Connect

pytestmark = pytest.mark.timeout(60)


def is_system(text: str):
    """A ``where`` for ``wait_for``: the chatMessage notification of system message ``text``."""
    return lambda d: d["message"]["type"] == "system" and d["message"]["text"] == text


async def join(client: ProtooClient, name: str) -> None:
    """Join and wait for the "<name> joined" system message (posted asynchronously)."""
    await client.request("join", {"displayName": name})
    await client.wait_for("chatMessage", is_system(f"{name} joined"))


async def rest_messages(server: Server, room_id: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base_url}/api/rooms/{room_id}/messages", params={"limit": "200"}) as resp:
            assert resp.status == 200
            return (await resp.json())["messages"]


async def refused(client: ProtooClient, method: str, data: dict[str, Any]) -> ProtooClientError:
    with pytest.raises(ProtooClientError) as info:
        await client.request(method, data)
    return info.value


async def test_two_peers_chat_late_joiner_reads_history_and_leaves_are_announced(
    server: Server, connect: Connect
) -> None:
    alice, bob = await connect("chat1", "alice"), await connect("chat1", "bob")
    await join(alice, "Alice")
    await join(bob, "Bob")
    await alice.wait_for("chatMessage", is_system("Bob joined"))

    # A sends: the answer is the stored message, the sender is the peer.
    sent = (await alice.request("chatMessage", {"type": "text", "text": "hello Bob"}))["message"]
    assert sent["id"] and sent["createdAt"].endswith("Z") and sent["meetingId"]
    assert sent["roomId"] == "chat1" and sent["type"] == "text" and sent["text"] == "hello Bob"
    assert sent["sender"] == {"peerId": "alice", "displayName": "Alice"}
    # B receives it (and so does A: every joined peer; clients dedupe by id).
    assert await bob.wait_for("chatMessage", lambda d: d["message"]["id"] == sent["id"]) == {"message": sent}
    assert await alice.wait_for("chatMessage", lambda d: d["message"]["id"] == sent["id"]) == {"message": sent}
    # REST shows it as stored.
    assert (await rest_messages(server, "chat1"))[0] == sent

    # A file message: the key must be one of this room's chat uploads.
    file = {
        "bucket": "parley",
        "key": "chat/chat1/f1/notes.pdf",
        "name": "notes.pdf",
        "size": 1234,
        "mimeType": "application/pdf",
    }
    shared = (await bob.request("chatMessage", {"type": "file", "file": file, "text": "the notes"}))["message"]
    assert shared["type"] == "file" and shared["file"] == file and shared["text"] == "the notes"
    assert shared["sender"] == {"peerId": "bob", "displayName": "Bob"}
    await alice.wait_for("chatMessage", lambda d: d["message"]["id"] == shared["id"])

    # A late joiner: history may be read before join; sending needs a join.
    carol = await connect("chat1", "carol")
    before_join = await carol.request("getChatHistory", {"limit": 1})
    assert [m["id"] for m in before_join["messages"]] == [shared["id"]] and before_join["nextCursor"]
    assert (await refused(carol, "chatMessage", {"text": "hi"})).code == 403
    await join(carol, "Carol")
    await alice.wait_for("chatMessage", is_system("Carol joined"))

    pages, cursor, history = 0, None, []
    while True:
        page = await carol.request("getChatHistory", {"limit": 2, **({"before": cursor} if cursor else {})})
        pages += 1
        assert len(page["messages"]) <= 2
        history.extend(page["messages"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    oldest_first = list(reversed(history))
    assert [m["text"] for m in oldest_first] == ["Alice joined", "Bob joined", "hello Bob", "the notes", "Carol joined"]
    assert oldest_first[2] == sent and oldest_first[3] == shared
    for message, peer, name in zip(
        (oldest_first[0], oldest_first[1], oldest_first[4]),
        ("alice", "bob", "carol"),
        ("Alice", "Bob", "Carol"),
        strict=False,
    ):
        assert message["event"] == "participant.joined" and "sender" not in message
        assert message["data"] == {"peerId": peer, "displayName": name}
    assert history == await rest_messages(server, "chat1")

    # B leaves: the others get "Bob left".
    await bob.close()
    for other in (alice, carol):
        left = (await other.wait_for("chatMessage", is_system("Bob left")))["message"]
        assert left["event"] == "participant.left" and left["data"] == {"peerId": "bob", "displayName": "Bob"}
    assert (await rest_messages(server, "chat1"))[0]["text"] == "Bob left"
    # Notifications go to joined peers only: carol got none before her join.
    assert [d["message"]["text"] for m, d in carol.notifications if m == "chatMessage"] == ["Carol joined", "Bob left"]


async def test_invalid_chat_requests_are_refused_and_nothing_is_stored(server: Server, connect: Connect) -> None:
    alice, bob = await connect("chat2", "alice"), await connect("chat2", "bob")
    assert (await refused(bob, "chatMessage", {"text": "not joined yet"})).code == 403
    await join(alice, "Alice")
    too_long = server.app[CHAT].limits.max_text_length + 1
    good_file = {
        "bucket": "parley",
        "key": "chat/chat2/f1/a.pdf",
        "name": "a.pdf",
        "size": 1,
        "mimeType": "application/pdf",
    }
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("chatMessage", {"text": ""}, "empty:"),
        ("chatMessage", {"text": "  \n "}, "empty:"),
        ("chatMessage", {}, "missing_field:"),
        ("chatMessage", {"text": "x" * too_long}, "text_too_long:"),
        ("chatMessage", {"text": "bell \x07 here"}, "control_characters:"),
        ("chatMessage", {"text": "nul \x00"}, "control_characters:"),
        ("chatMessage", {"type": "poll", "text": "hi"}, "invalid_type:"),
        ("chatMessage", {"type": "system", "text": "Bob left"}, "forbidden_type:"),
        ("chatMessage", {"type": "file", "text": "no file"}, "missing_field:"),
        ("chatMessage", {"type": "file", "file": {**good_file, "key": "chat/other-room/f1/a.pdf"}}, "invalid_file:"),
        ("chatMessage", {"type": "file", "file": {**good_file, "key": "recordings/chat2/a.mp4"}}, "invalid_file:"),
        ("chatMessage", {"type": "file", "file": {**good_file, "size": "1"}}, "invalid_request:"),
        ("chatMessage", {"type": "file", "file": {**good_file, "extra": 1}}, "invalid_request:"),
        ("chatMessage", {"text": "hi", "file": good_file}, "invalid_request:"),
        ("chatMessage", {"text": 42}, "invalid_request:"),
        ("chatMessage", {"text": ["hi"]}, "invalid_request:"),
        ("chatMessage", {"type": None, "text": "hi"}, "invalid_request:"),
        # The sender is the peer; a request cannot name one.
        ("chatMessage", {"text": "hi", "sender": {"peerId": "bob", "displayName": "Bob"}}, "invalid_request:"),
        ("getChatHistory", {"limit": 0}, "invalid_limit:"),
        ("getChatHistory", {"limit": 201}, "invalid_limit:"),
        ("getChatHistory", {"limit": "2"}, "invalid_request:"),
        ("getChatHistory", {"before": "not-a-cursor"}, "invalid_cursor:"),
        ("getChatHistory", {"before": 5}, "invalid_request:"),
        ("getChatHistory", {"roomId": "chat1"}, "invalid_request:"),
    ]
    for method, data, prefix in cases:
        error = await refused(alice, method, data)
        assert (error.code, error.reason.startswith(prefix)) == (400, True), (data, error.code, error.reason)
    reason = (await refused(alice, "chatMessage", {"text": "hi", "sender": {}})).reason
    assert "sender" in reason
    reason = (await refused(alice, "chatMessage", {"text": "x" * too_long})).reason
    assert reason == f"text_too_long: text is longer than {too_long - 1} characters ({too_long})"

    stored = await rest_messages(server, "chat2")
    assert [m["text"] for m in stored] == ["Alice joined"]
    assert alice.count("chatMessage") == 1 and bob.count("chatMessage") == 0
    # The connection is still fine.
    ok = await alice.request("chatMessage", {"text": "line one\r\nline\ttwo"})
    assert ok["message"]["text"] == "line one\nline\ttwo"


async def test_sender_name_store_failure_and_cleared_history(
    server: Server, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A peer without a display name sends as its peerId.
    anon = await connect("chat3", "anon-1")
    await anon.request("join", {})
    await anon.wait_for("chatMessage", is_system("anon-1 joined"))
    message = (await anon.request("chatMessage", {"text": "who am I"}))["message"]
    assert message["sender"] == {"peerId": "anon-1", "displayName": "anon-1"}

    # A store that does not acknowledge: 503, the client may resend.
    chat = server.app[CHAT]

    async def down(message: Any) -> None:
        raise StoreError("disk on fire")

    monkeypatch.setattr(chat.store.chat, "insert_message", down)
    error = await refused(anon, "chatMessage", {"text": "lost?"})
    assert error.code == 503 and error.reason.startswith("store_unavailable:")
    monkeypatch.undo()
    assert [m["text"] for m in await rest_messages(server, "chat3")] == ["who am I", "anon-1 joined"]

    # An admin deletes the history: joined peers are told.
    token = server.app[SETTINGS].admin_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{server.base_url}/api/rooms/chat3/messages", headers=headers) as resp:
            assert resp.status == 200
    assert await anon.wait_for("chatCleared") == {"roomId": "chat3", "deleted": 2}
    assert await anon.request("getChatHistory", {}) == {"messages": [], "nextCursor": None}

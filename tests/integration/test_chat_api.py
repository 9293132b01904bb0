"""The REST API for chat history and meetings, on an app started the way
``create_app`` starts it (``chat_ctx``), over real HTTP on loopback."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control import auth
from control import chat as chat_subsystem
from control.chat import ChatService
from control.config import Settings, load_settings
from control.http import error_middleware
from control.keys import CHAT, DATABASE, EVENTS, MEETINGS, SETTINGS
from control.store import StoreUnavailable
from control.store.ids import new_id

ADA = {"peerId": "ada", "displayName": "Ada"}


def room() -> str:
    return f"room-{secrets.token_hex(4)}"


def settings_for(tmp_path: Path, **overrides) -> Settings:
    values = {"data_dir": tmp_path, "mongodb_uri": None, "admin_token": None, **overrides}
    return load_settings(_env_file=None, **values)


def make_app(settings: Settings, events=None) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    auth.setup(app, settings)
    app[SETTINGS] = settings
    if events is not None:
        app[EVENTS] = events
    chat_subsystem.setup(app, settings=SETTINGS, events=EVENTS if events is not None else None)
    return app


async def start_client(app: web.Application) -> TestClient[web.Request, web.Application]:
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[TestClient]:
    c = await start_client(make_app(settings_for(tmp_path)))
    try:
        yield c
    finally:
        await c.close()


def chat_of(client: TestClient) -> ChatService:
    return client.app[CHAT]


async def test_history_pages_over_rest(client):
    chat = chat_of(client)
    r = room()
    sent = [await chat.send(r, ADA, {"text": f"m{i}"}) for i in range(120)]
    seen, before, pages = [], None, 0
    while True:
        params = {"limit": "50"} | ({"before": before} if before else {})
        resp = await client.get(f"/api/rooms/{r}/messages", params=params)
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        body = await resp.json()
        pages += 1
        seen.extend(body["messages"])
        before = body["nextCursor"]
        if before is None:
            break
    assert pages == 3 and [m["id"] for m in seen] == [m.id for m in reversed(sent)]
    assert seen[0] == sent[-1].to_json()
    assert set(seen[0]) == {"id", "roomId", "type", "sender", "text", "createdAt"}
    default = await (await client.get(f"/api/rooms/{r}/messages")).json()
    assert len(default["messages"]) == 50
    empty = await client.get(f"/api/rooms/{room()}/messages")
    assert await empty.json() == {"messages": [], "nextCursor": None}


@pytest.mark.parametrize(
    "path, query, code, field",
    [
        ("/api/rooms/{r}/messages", "limit=0", "invalid_limit", "limit"),
        ("/api/rooms/{r}/messages", "limit=201", "invalid_limit", "limit"),
        ("/api/rooms/{r}/messages", "limit=abc", "invalid_limit", "limit"),
        ("/api/rooms/{r}/messages", "before=not-a-cursor", "invalid_cursor", "before"),
        ("/api/rooms/{r}/messages", "before=MS4xMjM", "invalid_cursor", "before"),
        ("/api/rooms/{r}/messages", "limit=5&limit=6", "invalid_query", None),
        ("/api/rooms/bad%20room/messages", "", "invalid_room_id", "roomId"),
        ("/api/rooms/{long}/messages", "", "invalid_room_id", "roomId"),
        ("/api/rooms/_room/messages", "", "invalid_room_id", "roomId"),
        ("/api/rooms/r%C3%B8om/messages", "", "invalid_room_id", "roomId"),
        ("/api/rooms/team%20room%21/meetings", "", "invalid_room_id", "roomId"),
        ("/api/rooms/{long}/meetings", "", "invalid_room_id", "roomId"),
        ("/api/rooms/{r}/meetings", "limit=1000", "invalid_limit", "limit"),
        ("/api/rooms/{r}/meetings", "before=%24%24", "invalid_cursor", "before"),
        ("/api/rooms/bad%20room/meetings", "", "invalid_room_id", "roomId"),
        ("/api/meetings/not-a-meeting-id", "", "invalid_meeting_id", "meetingId"),
    ],
)
async def test_bad_requests_get_clear_400s(client, path, query, code, field):
    url = path.format(r=room(), long="a" * 65) + (f"?{query}" if query else "")
    resp = await client.get(url)
    assert resp.status == 400
    body = (await resp.json())["error"]
    assert body["code"] == code and body["message"]
    assert body.get("field") == field


async def test_delete_room_messages_dev_mode(client):
    """No API keys, loopback bind (dev mode): everything open, as before access control."""
    chat = chat_of(client)
    r, other = room(), room()
    for i in range(5):
        await chat.send(r, ADA, {"text": f"m{i}"})
    await chat.send(other, ADA, {"text": "stays"})
    resp = await client.delete(f"/api/rooms/{r}/messages")
    assert resp.status == 200 and await resp.json() == {"roomId": r, "deleted": 5}
    assert (await chat.history(r)).messages == []
    assert len((await chat.history(other)).messages) == 1
    bad = await client.delete("/api/rooms/bad%20room/messages")
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_room_id"


async def test_delete_room_messages_needs_room_admin_when_keys_are_set(tmp_path):
    key, secret = "APIchat", "c" * 40
    app = make_app(settings_for(tmp_path, api_key=key, api_secret=secret))
    client = await start_client(app)

    def bearer(names: str, room_id: str = "") -> dict[str, str]:
        grants = auth.grants_from_names([n for n in names.split(",") if n], room=room_id)
        token = auth.mint(app[auth.ACCESS].keys, identity="ops", grants=grants)
        return {"Authorization": f"Bearer {token}"}

    try:
        chat = chat_of(client)
        r = room()
        await chat.send(r, ADA, {"text": "m"})
        for headers, status in (
            ({}, 401),
            ({"Authorization": "Bearer wrong"}, 401),
            ({"Authorization": f"Basic {secret}"}, 401),
            (bearer("join,publish", r), 403),
            (bearer("admin", room()), 403),
        ):
            resp = await client.delete(f"/api/rooms/{r}/messages", headers=headers)
            assert resp.status == status, headers
        assert len((await chat.history(r)).messages) == 1
        # reading the history: a participant of the room is enough
        assert (await client.get(f"/api/rooms/{r}/messages", headers=bearer("join", r))).status == 200
        ok = await client.delete(f"/api/rooms/{r}/messages", headers=bearer("admin", r))
        assert ok.status == 200 and (await ok.json())["deleted"] == 1
    finally:
        await client.close()


async def test_meetings_over_rest(client):
    chat = chat_of(client)
    r = room()
    await chat.participant_joined(r, "ada", "Ada", "ada@example.com")
    await chat.participant_joined(r, "bob", "Bob")
    first = await chat.meetings.current(r)
    await chat.participant_left(r, "bob")
    await chat.participant_left(r, "ada")
    await chat.participant_joined(r, "ada", "Ada")
    second = await chat.meetings.current(r)
    assert first is not None and second is not None

    resp = await client.get(f"/api/meetings/{first.meeting_id}")
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["meetingId"] == first.meeting_id and body["roomId"] == r and body["endedAt"]
    assert [(p["peerId"], p.get("email"), "leftAt" in p) for p in body["participants"]] == [
        ("ada", "ada@example.com", True),
        ("bob", None, True),
    ]
    assert body["recordings"] == []

    live = await (await client.get(f"/api/meetings/{second.meeting_id}")).json()
    assert "endedAt" not in live and "leftAt" not in live["participants"][0]

    missing = await client.get(f"/api/meetings/{new_id()}")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "not_found"

    page1 = await (await client.get(f"/api/rooms/{r}/meetings", params={"limit": "1"})).json()
    assert [m["meetingId"] for m in page1["meetings"]] == [second.meeting_id]
    page2 = await (
        await client.get(f"/api/rooms/{r}/meetings", params={"limit": "1", "before": page1["nextCursor"]})
    ).json()
    assert [m["meetingId"] for m in page2["meetings"]] == [first.meeting_id]
    assert page2["nextCursor"] is None


async def test_app_keys_and_start_up_work(tmp_path):
    client = await start_client(make_app(settings_for(tmp_path)))
    try:
        app = client.app
        assert app[DATABASE].backend == "sqlite"
        assert app[MEETINGS] is app[CHAT].meetings
        assert (tmp_path / "parley.sqlite3").exists()
    finally:
        await client.close()


async def test_meeting_changes_are_published_when_the_event_bus_runs(tmp_path):
    class Bus:
        def __init__(self) -> None:
            self.published: list[tuple[str, dict, str]] = []

        async def publish(self, event_type, data, *, event_id=None):
            self.published.append((event_type, data, event_id))

    bus = Bus()
    client = await start_client(make_app(settings_for(tmp_path), events=bus))
    try:
        chat = chat_of(client)
        r = room()
        await chat.participant_joined(r, "ada", "Ada")
        await chat.participant_left(r, "ada")
        assert [t for t, _, _ in bus.published] == [
            "meeting.started",
            "participant.joined",
            "participant.left",
            "meeting.ended",
        ]
        assert all(d["roomId"] == r for _, d, _ in bus.published)
        assert all(eid for _, _, eid in bus.published)
    finally:
        await client.close()


async def test_rest_on_the_mongodb_backend(tmp_path, mongo):
    client = await start_client(make_app(settings_for(tmp_path, mongodb_uri=mongo.uri)))
    try:
        assert client.app[DATABASE].backend == "mongodb"
        chat = chat_of(client)
        r = room()
        sent = [await chat.send(r, ADA, {"text": f"m{i}"}) for i in range(3)]
        body = await (await client.get(f"/api/rooms/{r}/messages", params={"limit": "2"})).json()
        assert [m["id"] for m in body["messages"]] == [sent[2].id, sent[1].id]
        rest = await (await client.get(f"/api/rooms/{r}/messages", params={"before": body["nextCursor"]})).json()
        assert [m["id"] for m in rest["messages"]] == [sent[0].id]
        resp = await client.delete(f"/api/rooms/{r}/messages")
        assert (await resp.json())["deleted"] == 3
    finally:
        await client.close()


async def test_unreachable_mongodb_stops_start_up_with_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = settings_for(
        tmp_path, mongodb_uri=f"mongodb://parley:pw-xyz-123@127.0.0.1:{port}/parley", mongodb_timeout_ms=300
    )
    runner = web.AppRunner(make_app(settings))
    with pytest.raises(StoreUnavailable) as info:
        await runner.setup()
    await runner.cleanup()
    assert "unreachable" in str(info.value) and "pw-xyz-123" not in str(info.value)


def test_create_app_wires_chat(tmp_path):
    from control.app import create_app

    app = create_app(settings_for(tmp_path))
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    assert {
        ("GET", "/api/rooms/{roomId}/messages"),
        ("DELETE", "/api/rooms/{roomId}/messages"),
        ("GET", "/api/meetings/{meetingId}"),
        ("GET", "/api/rooms/{roomId}/meetings"),
    } <= routes

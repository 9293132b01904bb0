"""The chat store contract, run against both backends (SQLite file, MongoDB-wire server),
plus what is specific to each: MongoDB auth, indexes, restarts and outages; SQLite's
index use at 100,000 messages and durability across a SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from control.chat import ChatService, ChatUnavailable, ChatValidationError
from control.store import ChatMessage, Sender, Store, StoreError, StoreUnavailable
from control.store.ids import datetime_to_ms, ms_to_datetime, new_id, new_id_ms
from control.store.models import Cursor
from control.store.mongo import HISTORY_INDEX, MESSAGES, MongoStore
from control.store.sqlite import SQLiteStore, history_sql

REPO = Path(__file__).resolve().parents[2]
ADA = {"peerId": "ada", "displayName": "Ada"}
BOB = {"peerId": "bob", "displayName": "Bob"}
FILE = {
    "bucket": "recordings",
    "key": "chat/ROOM/abc/report.pdf",
    "name": "report.pdf",
    "size": 1234,
    "mimeType": "application/pdf",
}


def file_in(room_id: str, **changes) -> dict:
    """A chat upload of ``room_id`` (keys are ``chat/<roomId>/<fileId>/<name>``)."""
    return {**FILE, "key": f"chat/{room_id}/abc/report.pdf", **changes}


def room() -> str:
    return f"room-{secrets.token_hex(4)}"


async def open_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, object]:
    if kind == "sqlite":
        store: Store = SQLiteStore(tmp_path / "parley.sqlite3")
        await store.start()
        return store, None
    mongo = request.getfixturevalue("mongo")
    db = f"parley_t_{secrets.token_hex(4)}"
    store = MongoStore(mongo.uri, database=db, timeout=15)
    await store.start()
    return store, db


@pytest.fixture(params=["sqlite", "mongodb"])
async def store(request, tmp_path) -> AsyncIterator[Store]:
    s, _ = await open_store(request.param, request, tmp_path)
    try:
        yield s
    finally:
        if isinstance(s, MongoStore) and s._client is not None:
            await s.client.drop_database(s.db.name)
        await s.close()


@pytest.fixture
def chat(store) -> ChatService:
    return ChatService(store)


def message(room_id: str, i: int, *, ms: int | None = None, sender: dict = ADA) -> ChatMessage:
    """A message as the service would make it (``ms`` forces the time: ties)."""
    t, mid = new_id_ms()
    return ChatMessage(
        id=mid,
        room_id=room_id,
        type="text",
        sender=Sender(peer_id=sender["peerId"], display_name=sender["displayName"]),
        text=f"message {i}",
        created_at=ms_to_datetime(t if ms is None else ms),
    )


def key(m: ChatMessage) -> tuple[int, str]:
    return (datetime_to_ms(m.created_at), m.id)


async def all_pages(chat: ChatService, room_id: str, limit: int = 50) -> list[ChatMessage]:
    out, before = [], None
    while True:
        page = await chat.history(room_id, limit, before)
        out.extend(page.messages)
        if page.next_cursor is None:
            return out
        assert len(page.messages) == limit
        before = page.next_cursor


# ============================================================ contract: both backends


async def test_each_message_type_roundtrips(chat, store):
    r = room()
    text = await chat.send(r, ADA, {"type": "text", "text": "héllo\nwörld 😀"})
    file = await chat.send(r, BOB, {"type": "file", "file": file_in(r), "text": "the report"})
    system = await chat.system_message(
        r, "Recording started", event="recording.started", data={"recordingId": "rec1", "n": 2, "nested": {"ok": True}}
    )
    page = await chat.history(r)
    assert page.messages == [system, file, text]
    assert page.next_cursor is None
    assert text.type == "text" and text.sender == Sender(peer_id="ada", display_name="Ada")
    assert text.text == "héllo\nwörld 😀" and text.file is None
    assert file.file is not None and file.file.mime_type == "application/pdf" and file.text == "the report"
    assert system.sender is None and system.event == "recording.started"
    assert system.data == {"recordingId": "rec1", "n": 2, "nested": {"ok": True}}
    assert (await store.chat.get_message(file.id)) == file
    assert (await store.chat.get_message(new_id())) is None
    j = file.to_json()
    assert j["roomId"] == r and j["file"]["mimeType"] == "application/pdf" and j["createdAt"].endswith("Z")


async def test_newest_first_limit_and_room_isolation(chat, store):
    a, b = room(), room()
    sent = [await chat.send(a, ADA, {"text": f"a{i}"}) for i in range(7)]
    await chat.send(b, BOB, {"text": "other room"})
    assert [m.text for m in (await chat.history(a, 3)).messages] == ["a6", "a5", "a4"]
    everything = await all_pages(chat, a, 2)
    assert everything == sent[::-1]
    assert [m.text for m in (await chat.history(b)).messages] == ["other room"]
    assert await store.chat.count_messages(a) == 7
    assert (await chat.history(room())).to_json() == {"messages": [], "nextCursor": None}


async def test_ties_on_created_at_are_ordered_by_id_across_pages(chat, store):
    r = room()
    ms = datetime_to_ms(datetime.now().astimezone()) - 10_000
    same = [message(r, i, ms=ms) for i in range(120)]
    older = [message(r, i, ms=ms - 1) for i in range(5)]
    newer = [message(r, i, ms=ms + 1) for i in range(5)]
    await store.chat.insert_messages(same + older + newer)
    got = await all_pages(chat, r, 50)
    assert [m.id for m in got] == [m.id for m in sorted(same + older + newer, key=key, reverse=True)]
    assert len({m.id for m in got}) == 130
    # a cursor in the middle of the tie
    mid = sorted(same, key=key, reverse=True)[60]
    rest = await store.chat.history(r, limit=200, before=mid.cursor)
    assert [m.id for m in rest] == [m.id for m in sorted(same, key=key, reverse=True)[61:]] + [
        m.id for m in sorted(older, key=key, reverse=True)
    ]


async def test_pages_are_stable_while_messages_arrive(chat, store):
    r = room()
    await store.chat.insert_messages([message(r, i) for i in range(200)])
    full = await all_pages(chat, r, 200)
    first = await chat.history(r, 50)
    assert first.messages == full[:50]
    for i in range(30):
        await chat.send(r, BOB, {"text": f"late {i}"})
    second = await chat.history(r, 50, first.next_cursor)
    assert second.messages == full[50:100]
    fresh = await chat.history(r, 30)
    assert [m.text for m in fresh.messages] == [f"late {i}" for i in range(29, -1, -1)]


async def test_pagination_across_1000_messages_with_concurrent_inserts(chat, store):
    """No duplicates, no gaps: every message that existed when paging began is seen
    exactly once, in strict (createdAt, id) descending order, while new messages
    keep arriving."""
    r = room()
    seeded = [message(r, i) for i in range(1000)]
    for chunk in range(0, 1000, 250):
        await store.chat.insert_messages(seeded[chunk : chunk + 250])
    seeded_ids = {m.id for m in seeded}

    concurrent: list[ChatMessage] = []
    paging_done = asyncio.Event()
    pages_read = 0

    async def writer() -> None:
        i = 0
        while not paging_done.is_set() or i < 40:
            concurrent.append(await chat.send(r, BOB if i % 2 else ADA, {"text": f"live {i}"}))
            i += 1
            await asyncio.sleep(0)

    async def reader() -> list[ChatMessage]:
        nonlocal pages_read
        await asyncio.sleep(0)
        seen: list[ChatMessage] = []
        before = None
        while True:
            page = await chat.history(r, 50, before)
            pages_read += 1
            seen.extend(page.messages)
            if page.next_cursor is None:
                break
            before = page.next_cursor
        paging_done.set()
        return seen

    seen, _ = await asyncio.gather(reader(), writer())
    ids = [m.id for m in seen]
    assert len(ids) == len(set(ids)), "duplicates across pages"
    keys = [key(m) for m in seen]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)
    assert seeded_ids <= set(ids), f"{len(seeded_ids - set(ids))} seeded messages missing"
    assert set(ids) <= seeded_ids | {m.id for m in concurrent}
    assert len(concurrent) >= 40 and pages_read >= 20
    # afterwards everything is there exactly once
    final = await all_pages(chat, r, 200)
    assert len(final) == 1000 + len(concurrent) == len({m.id for m in final})
    assert [key(m) for m in final] == sorted((key(m) for m in final), reverse=True)
    assert final[: len(concurrent)] == sorted(concurrent, key=key, reverse=True)


async def test_concurrent_sends_all_stored_in_id_order(chat, store):
    r = room()
    sent = await asyncio.gather(*(chat.send(r, ADA, {"text": f"m{i}"}) for i in range(300)))
    assert len({m.id for m in sent}) == 300
    got = await all_pages(chat, r, 200)
    assert {m.id for m in got} == {m.id for m in sent}
    assert [m.id for m in got] == sorted((m.id for m in got), reverse=True)  # id order == time order


@pytest.mark.parametrize(
    "payload, code",
    [
        ({"text": "x" * 4001}, "text_too_long"),
        ({"text": "\x1b[2J"}, "control_characters"),
        ({"type": "text"}, "missing_field"),
        ({"type": "file", "text": "no file"}, "missing_field"),
        ({"type": "file", "file": {**FILE, "size": -1}}, "invalid_file"),
        ({"type": "file", "file": {**FILE, "size": 26 * 1024 * 1024}}, "file_too_large"),
        ({"type": "file", "file": {**FILE, "key": "recordings/ROOM/meeting.mp4"}}, "invalid_file"),
        ({"type": "file", "file": {**FILE, "key": "chat/other-room/abc/report.pdf"}}, "invalid_file"),
        ({"type": "system", "text": "fake"}, "forbidden_type"),
        ({"type": "gif", "text": "x"}, "invalid_type"),
    ],
)
async def test_refused_messages_are_not_stored(store, payload, code):
    chat = ChatService(store, max_file_size=25 * 1024 * 1024)
    r = room()
    if "file" in payload and isinstance(payload["file"], dict):
        payload = {**payload, "file": {**payload["file"], "key": payload["file"]["key"].replace("ROOM", r)}}
    seen: list[ChatMessage] = []
    chat.subscribe(seen.append)
    with pytest.raises(ChatValidationError) as info:
        await chat.send(r, ADA, payload)
    assert info.value.code == code and info.value.status == 400
    assert await store.chat.count_messages(r) == 0 and seen == []


async def test_refused_room_sender_and_cursor(chat, store):
    r = room()
    await chat.send(r, ADA, {"text": "kept"})
    cases = [
        (chat.send("bad room", ADA, {"text": "x"}), "invalid_room_id"),
        (chat.send(r, {"peerId": "a b", "displayName": "x"}, {"text": "x"}), "invalid_peer_id"),
        (chat.send(r, {"peerId": "p", "displayName": "a\x00"}, {"text": "x"}), "control_characters"),
        (chat.history(r, 0), "invalid_limit"),
        (chat.history(r, 201), "invalid_limit"),
        (chat.history(r, "ten"), "invalid_limit"),
        (chat.history(r, 50, "not-a-cursor"), "invalid_cursor"),
        (chat.history(r, 50, Cursor(1, "0" * 26).encode()[:-3]), "invalid_cursor"),
        (chat.history("$ne", 50), "invalid_room_id"),
        (chat.system_message(r, "x", event="Bad Event"), "invalid_event"),
    ]
    for call, code in cases:
        with pytest.raises(ChatValidationError) as info:
            await call
        assert info.value.code == code
    assert await store.chat.count_messages(r) == 1
    assert len((await chat.history(r, 200)).messages) == 1


async def test_configurable_text_limit(store):
    chat = ChatService(store, max_text_length=10)
    r = room()
    await chat.send(r, ADA, {"text": "x" * 10})
    with pytest.raises(ChatValidationError):
        await chat.send(r, ADA, {"text": "x" * 11})
    assert await store.chat.count_messages(r) == 1


async def test_delete_room(chat, store):
    a, b = room(), room()
    await store.chat.insert_messages([message(a, i) for i in range(120)])
    await chat.send(b, BOB, {"text": "stays"})
    cleared = []
    chat.subscribe(lambda m: None, lambda room_id, n: cleared.append((room_id, n)))
    assert await chat.delete_room_messages(a) == 120
    assert cleared == [(a, 120)]
    assert (await chat.history(a)).messages == [] and await store.chat.count_messages(a) == 0
    assert [m.text for m in (await chat.history(b)).messages] == ["stays"]
    assert await chat.delete_room_messages(a) == 0
    await chat.send(a, ADA, {"text": "after"})  # the room is usable afterwards
    assert [m.text for m in (await chat.history(a)).messages] == ["after"]


async def test_subscribers_see_messages_only_once_stored(chat, store):
    r = room()
    calls = []

    async def on_message(m: ChatMessage) -> None:
        # acknowledged before the broadcast: it is already readable
        calls.append((m.id, await store.chat.get_message(m.id) == m))

    def broken(m: ChatMessage) -> None:
        raise RuntimeError("subscriber bug")

    chat.subscribe(broken)
    unsubscribe = chat.subscribe(on_message)
    m1 = await chat.send(r, ADA, {"text": "one"})  # the broken subscriber does not fail the send
    m2 = await chat.system_message(r, "Bob joined", event="participant.joined")
    unsubscribe()
    await chat.send(r, ADA, {"text": "unheard"})
    assert calls == [(m1.id, True), (m2.id, True)]


# ============================================================ MongoDB-wire specifics


def with_password(uri: str, password: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    netloc = f"{parts.username}:{urllib.parse.quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


async def test_mongo_wrong_password_is_refused_with_a_clear_error(mongo):
    assert "@" in mongo.uri, "the test server must require authentication"
    bad = with_password(mongo.uri, "not-the-password-123")
    store = MongoStore(bad, timeout=10)
    with pytest.raises(StoreUnavailable) as info:
        await store.start()
    text = str(info.value)
    assert "refused the credentials" in text and "parley" in text
    assert "not-the-password-123" not in text
    assert urllib.parse.urlsplit(mongo.uri).password not in text


async def test_mongo_unreachable_is_a_clear_start_up_error(mongo):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"mongodb://parley:s3cret-pw@127.0.0.1:{port}/parley?authSource=admin&directConnection=true"
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await MongoStore(uri, timeout=0.5).start()
    assert time.monotonic() - began < 10
    text = str(info.value)
    assert "unreachable" in text and f"127.0.0.1:{port}" in text and "s3cret-pw" not in text


async def test_mongo_unacknowledged_write_concern_is_refused(mongo):
    with pytest.raises(ValueError, match="w=0"):
        MongoStore(mongo.uri, write_concern=0)
    sep = "&" if "?" in mongo.uri else "?"
    with pytest.raises(StoreUnavailable, match="unacknowledged"):
        await MongoStore(mongo.uri + f"{sep}w=0", timeout=10).start()
    store = MongoStore(mongo.uri, write_concern="1", database=f"parley_t_{secrets.token_hex(4)}", timeout=10)
    await store.start()
    try:
        assert store.client.write_concern.document.get("w") == 1
    finally:
        await store.client.drop_database(store.db.name)
        await store.close()


async def test_mongo_indexes_created_idempotently(mongo):
    db = f"parley_t_{secrets.token_hex(4)}"
    first = MongoStore(mongo.uri, database=db, timeout=15)
    second = MongoStore(mongo.uri, database=db, timeout=15)
    await first.start()
    try:
        await second.start()  # indexes exist: fine
        await second.create_indexes()
        info = await first.db[MESSAGES].index_information()
        assert info[HISTORY_INDEX]["key"] == [("roomId", 1), ("createdAt", -1), ("_id", -1)]
        meetings = await first.db["meetings"].index_information()
        assert meetings["room_started"]["key"] == [("roomId", 1), ("startedAt", -1), ("_id", -1)]
        assert "open" in meetings
        await second.close()
        # a same-named index with another definition is a clear start-up error
        await first.db[MESSAGES].drop_index(HISTORY_INDEX)
        await first.db[MESSAGES].create_index([("roomId", 1)], name=HISTORY_INDEX)
        third = MongoStore(mongo.uri, database=db, timeout=15)
        with pytest.raises(StoreUnavailable, match="cannot create the indexes"):
            await third.start()
    finally:
        await first.client.drop_database(db)
        await first.close()
        await second.close()


async def test_mongo_history_is_served_by_the_index(mongo):
    """The history query names the (roomId, createdAt, _id) index, so MongoDB walks
    ``limit`` index entries from the cursor instead of the room. On a real mongod the
    plan is checked too (mongoeco, the CI server, keeps no secondary-index plans)."""
    from pymongo import monitoring

    class Finds(monitoring.CommandListener):
        def __init__(self) -> None:
            self.commands: list[dict] = []

        def started(self, event) -> None:
            if event.command_name == "find":
                self.commands.append(dict(event.command))

        def succeeded(self, event) -> None: ...

        def failed(self, event) -> None: ...

    listener = Finds()
    db = f"parley_t_{secrets.token_hex(4)}"
    store = MongoStore(mongo.uri, database=db, timeout=15, event_listeners=[listener])
    await store.start()
    try:
        r = room()
        msgs = [message(r, i) for i in range(300)]
        await store.chat.insert_messages(msgs)
        await store.chat.insert_messages([message(room(), i) for i in range(100)])
        ordered = sorted(msgs, key=key, reverse=True)
        page = await store.chat.history(r, limit=51, before=ordered[99].cursor)
        assert [m.id for m in page] == [m.id for m in ordered[100:151]]
        find = listener.commands[-1]
        assert find["hint"] == HISTORY_INDEX and find["limit"] == 51
        assert find["sort"] == {"createdAt": -1, "_id": -1}
        info = await store.client.admin.command("buildInfo")
        if info.get("gitVersion") != "mongoeco":  # a real server: check the plan
            plan = await store.db.command(
                "explain",
                {"find": MESSAGES, "filter": find["filter"], "sort": find["sort"], "hint": HISTORY_INDEX, "limit": 51},
                verbosity="executionStats",
            )
            stats = plan["executionStats"]
            assert stats["totalDocsExamined"] <= 52 and stats["totalKeysExamined"] <= 53
            assert "IXSCAN" in str(plan["queryPlanner"]["winningPlan"])
    finally:
        await store.client.drop_database(db)
        await store.close()


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_mongo_restart_between_write_and_read_loses_nothing(mongo_owned, kill):
    db = f"parley_t_{secrets.token_hex(4)}"
    store = MongoStore(mongo_owned.uri, database=db, timeout=20)
    await store.start()
    chat = ChatService(store)
    r = room()
    try:
        await chat.participant_joined(r, "ada", "Ada")
        sent = [await chat.send(r, ADA, {"text": f"before restart {i}"}) for i in range(25)]
        before = await all_pages(chat, r, 200)
        await asyncio.to_thread(mongo_owned.restart, kill=kill)
        # the same client, after the server came back: everything acknowledged is there
        after = await all_pages(chat, r, 200)
        assert after == before and {m.id for m in sent} <= {m.id for m in after}
        meeting = await chat.meetings.current(r)
        assert meeting is not None and [p.peer_id for p in meeting.active_participants] == ["ada"]
        # and writing works again without the caller doing anything
        await asyncio.to_thread(mongo_owned.restart, kill=kill)
        late = await chat.send(r, ADA, {"text": "after restart"})
        assert (await chat.history(r, 1)).messages == [late]
    finally:
        await store.client.drop_database(db)
        await store.close()


async def test_mongo_write_during_outage_fails_clearly_then_recovers(mongo_owned):
    db = f"parley_t_{secrets.token_hex(4)}"
    store = MongoStore(mongo_owned.uri, database=db, timeout=2)
    await store.start()
    chat = ChatService(store)
    r = room()
    try:
        kept = await chat.send(r, ADA, {"text": "kept"})
        await asyncio.to_thread(mongo_owned.stop)
        try:
            began = time.monotonic()
            with pytest.raises(ChatUnavailable) as info:
                await chat.send(r, ADA, {"text": "server is down"})
            assert info.value.status == 503 and time.monotonic() - began < 15
            with pytest.raises(StoreError):
                await store.chat.history(r)
        finally:
            await asyncio.to_thread(mongo_owned.start)
        again = await chat.send(r, ADA, {"text": "resent"})
        assert [m.text for m in (await chat.history(r)).messages] == ["resent", "kept"]
        assert again.id > kept.id
    finally:
        await store.client.drop_database(db)
        await store.close()


# ============================================================ SQLite specifics


async def test_sqlite_page_of_50_uses_the_index_at_100k_messages(tmp_path):
    """A page is an index range scan: EXPLAIN QUERY PLAN searches the (room_id,
    created_at, id) index with the cursor as its bound, no SCAN, no sort; and the
    work done (SQLite VM steps) is independent of the room's size."""
    import sqlite3

    store = SQLiteStore(tmp_path / "parley.sqlite3")
    await store.start()
    try:
        big, small = "big-room", "small-room"
        t0 = datetime_to_ms(datetime.now().astimezone()) - 200_000
        batch: list[ChatMessage] = []
        for i in range(100_000):
            _, mid = new_id_ms()
            batch.append(
                ChatMessage(
                    id=mid,
                    room_id=big if i % 50 else small,
                    type="text",
                    sender=Sender(peer_id="ada", display_name="Ada"),
                    text=f"message {i}",
                    created_at=ms_to_datetime(t0 + i),
                )
            )
            if len(batch) == 10_000:
                await store.chat.insert_messages(batch)
                batch = []
        assert await store.chat.count_messages(big) == 98_000
        newest = await store.chat.history(big, limit=50)
        middle = await store.chat.history(big, limit=50, before=Cursor(t0 + 50_001, "0" * 26))
        assert len(newest) == len(middle) == 50
        assert datetime_to_ms(middle[0].created_at) == t0 + 49_999
        for cursor in (None, newest[-1].cursor, middle[-1].cursor):
            plan = await store.explain_history(big, cursor)
            text = " ".join(plan)
            assert "USING INDEX chat_messages_room_time" in text, plan
            assert "SCAN" not in text and "TEMP B-TREE" not in text, plan
        text = " ".join(await store.explain_history(big, newest[-1].cursor))
        assert "(room_id=? AND (created_at,id)<(?,?))" in text

        def vm_steps(sql: str, params: tuple) -> int:
            conn = sqlite3.connect(store.path)
            steps = 0

            def tick() -> int:
                nonlocal steps
                steps += 1
                return 0

            conn.set_progress_handler(tick, 100)
            try:
                rows = conn.execute(sql, params).fetchall()
            finally:
                conn.close()
            assert rows
            return steps * 100

        page = vm_steps(history_sql(with_cursor=True), (big, t0 + 50_001, "0" * 26, 51))
        small_page = vm_steps(history_sql(with_cursor=True), (small, t0 + 50_001, "0" * 26, 51))
        room_scan = vm_steps(
            "SELECT id FROM chat_messages NOT INDEXED WHERE room_id = ? ORDER BY created_at DESC, id DESC LIMIT 51",
            (big,),
        )
        assert page < 20_000 and page < room_scan / 50, (page, small_page, room_scan)
    finally:
        await store.close()


async def test_sqlite_failing_write_does_not_fail_its_group(tmp_path):
    store = SQLiteStore(tmp_path / "parley.sqlite3")
    await store.start()
    try:
        r = room()
        first = message(r, 0)
        await store.chat.insert_message(first)
        others = [message(r, i) for i in range(1, 60)]
        results = await asyncio.gather(
            *(store.chat.insert_message(m) for m in others[:30]),
            store.chat.insert_message(first),  # duplicate id: refused
            *(store.chat.insert_message(m) for m in others[30:]),
            return_exceptions=True,
        )
        assert isinstance(results[30], StoreError)
        assert all(x is None for i, x in enumerate(results) if i != 30)
        assert await store.chat.count_messages(r) == 60
    finally:
        await store.close()


async def test_sqlite_data_survives_reopen(tmp_path):
    path = tmp_path / "parley.sqlite3"
    async with SQLiteStore(path) as store:
        chat = ChatService(store)
        sent = [await chat.send("r1", ADA, {"text": f"m{i}"}) for i in range(10)]
    async with SQLiteStore(path) as store:
        assert (await ChatService(store).history("r1")).messages == sent[::-1]


_WRITER = """
import asyncio, sys
from control.chat import ChatService
from control.store.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.start()
    chat = ChatService(store)
    i = 0
    while True:
        m = await chat.send("crash-room", {"peerId": "ada", "displayName": "Ada"}, {"text": f"m{i}"})
        print(m.id, flush=True)
        i += 1

asyncio.run(main())
"""


async def test_sqlite_acknowledged_messages_survive_sigkill(tmp_path):
    """A writer process is SIGKILLed mid-stream: every message it was told is stored
    (printed after ``send`` returned) is there when the file is opened again."""
    path = tmp_path / "parley.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    acked: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while len(acked) < 300 and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)
            if not line:
                break
            acked.append(line.strip())
        assert len(acked) >= 300, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    async with SQLiteStore(path) as store:
        stored = {m.id for m in await store.chat.history("crash-room", limit=100_000)}
    assert set(acked) <= stored


async def test_sqlite_store_closed_refuses_work(tmp_path):
    store = SQLiteStore(tmp_path / "parley.sqlite3")
    await store.start()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.chat.insert_message(message("r1", 0))
    with pytest.raises(StoreError, match="closed"):
        await store.chat.history("r1")


async def test_sqlite_unusable_path_is_a_clear_start_up_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="SQLite"):
        await SQLiteStore(blocker / "parley.sqlite3").start()
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailable, match="cannot open"):
        await SQLiteStore(garbage).start()


def test_history_sql_forces_the_index():
    assert "INDEXED BY chat_messages_room_time" in history_sql(with_cursor=True)
    assert "INDEXED BY chat_messages_room_time" in history_sql(with_cursor=False)

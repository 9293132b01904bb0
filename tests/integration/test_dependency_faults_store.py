"""MongoDB faults against the real app and the real MongoDB-wire test server:

- down at start: the app starts and media serves; chat and meetings answer 503
  ``store_unavailable`` until the server is back, then work, with no restart;
- lost mid-meeting: joins and leaves go to the meeting journal (a 0600 SQLite file in
  DATA_DIR) and reach the meeting, in order and with their own times, once it is back;
- bounded meetings: a meeting's participations are documents of their own, so a
  long meeting never hits the 16 MB document limit and a recording still attaches;
- a 500 carries an error id, never the exception text.
"""

from __future__ import annotations

import asyncio
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.chat import ChatService, MeetingService
from control.chat.journal import FILE_NAME as JOURNAL_FILE
from control.keys import CHAT, MEETINGS
from control.store.mongo import MEETINGS as MEETINGS_COLLECTION
from control.store.mongo import PARTICIPANTS, MongoStore
from tests.e2e.harness import Server, running_server
from tests.e2e.protoo_client import ProtooClient
from tests.polling import eventually
from tests.services import MongoService

pytestmark = pytest.mark.timeout(240)

REC = {
    "bucket": "recordings",
    "key": "recordings/r/2025/meeting.mp4",
    "name": "meeting.mp4",
    "size": 10_485_760,
    "mimeType": "video/mp4",
}

#: Waits across a MongoDB outage and its return (the journal retries on a backoff).
STORE_WAIT = 30.0


def room() -> str:
    return f"room-{secrets.token_hex(4)}"


async def get_json(server: Server, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(server.base_url + path) as resp:
        return resp.status, await resp.json()


async def join(server: Server, room_id: str, peer_id: str) -> ProtooClient:
    client = await ProtooClient.connect(server.ws_url(room_id, peer_id))
    await client.request("join", {"displayName": peer_id.title()})
    return client


async def test_mongodb_down_at_start_then_back(tmp_path: Path, mongo_owned: MongoService) -> None:
    r = room()
    await asyncio.to_thread(mongo_owned.stop)
    try:
        async with running_server(tmp_path, mongodb_uri=mongo_owned.uri, mongodb_timeout_ms=1000) as server:
            # Media serves: a peer joins a room on a worker.
            alice = await join(server, r, "alice")
            assert server.rooms.rooms[r].primary.worker in server.pool.workers
            # Chat and meetings answer a clear 503, with no secret and no server address.
            for path in (f"/api/rooms/{r}/messages", f"/api/rooms/{r}/meetings"):
                status, body = await get_json(server, path)
                assert status == 503 and body["error"]["code"] == "store_unavailable", body
                assert mongo_owned.uri.split("@")[0] not in str(body) and "127.0.0.1" not in str(body)
            with pytest.raises(Exception, match="503") as info:
                await alice.request("chatMessage", {"text": "hello?"})
            assert "store_unavailable" in str(info.value)
            meetings: MeetingService = server.app[MEETINGS]
            assert meetings.pending >= 1  # the meeting and alice's join wait in the journal
            assert stat.S_IMODE((tmp_path / "data" / JOURNAL_FILE).stat().st_mode) == 0o600

            await asyncio.to_thread(mongo_owned.start)
            # Back, without a restart: the journal is applied and the APIs work.
            await eventually(lambda: meetings.pending == 0, timeout=STORE_WAIT, what="the journal applied")
            status, page = await get_json(server, f"/api/rooms/{r}/meetings")
            assert status == 200 and len(page["meetings"]) == 1
            [meeting] = page["meetings"]
            assert [p["peerId"] for p in meeting["participants"]] == ["alice"]
            sent = await alice.request("chatMessage", {"text": "hello again"})
            status, history = await get_json(server, f"/api/rooms/{r}/messages")
            assert status == 200 and history["messages"][0]["id"] == sent["message"]["id"]
            await alice.close()
            await eventually(
                lambda: _ended(server, meeting["meetingId"]),
                timeout=STORE_WAIT,
                what="the meeting ended after the last leave",
            )
    finally:
        if not mongo_owned.is_running():
            await asyncio.to_thread(mongo_owned.start)


async def _ended(server: Server, meeting_id: str) -> bool:
    status, body = await get_json(server, f"/api/meetings/{meeting_id}")
    return status == 200 and "endedAt" in body


async def test_mongodb_lost_mid_meeting_loses_no_join_or_leave(tmp_path: Path, mongo_owned: MongoService) -> None:
    r = room()
    async with running_server(tmp_path, mongodb_uri=mongo_owned.uri, mongodb_timeout_ms=1000) as server:
        meetings: MeetingService = server.app[MEETINGS]
        alice = await join(server, r, "alice")
        meeting = await eventually(lambda: meetings.current(r), timeout=STORE_WAIT, what="the meeting opened")
        # The join's last step is its system message: once it is there, nothing is in flight.
        await eventually(lambda: _said(server, r, "Alice joined"), timeout=STORE_WAIT, what="alice's join recorded")
        assert await _peers(meetings, r, ["alice"])

        await asyncio.to_thread(mongo_owned.stop, kill=True)
        killed_at = time.time()
        try:
            bob = await join(server, r, "bob")
            await bob.close()
            carol = await join(server, r, "carol")
            await alice.close()
            # Every change is in the journal (the first after the loss waited for the
            # database to time out), none went anywhere else.
            await eventually(lambda: meetings.pending == 4, timeout=STORE_WAIT, what="four journaled changes")
        finally:
            await asyncio.to_thread(mongo_owned.start)
        back_at = time.time()

        await eventually(lambda: meetings.pending == 0, timeout=60, what="the journal applied")
        done = await meetings.get(meeting.meeting_id)
        assert done is not None and done.ended_at is None
        stays = [(p.peer_id, p.left_at is not None) for p in done.participants]
        assert stays == [("alice", True), ("bob", True), ("carol", False)], stays
        # The times are when things happened, not when the database came back.
        for p in done.participants:
            if p.peer_id != "alice":
                assert killed_at - 1 <= p.joined_at.timestamp() <= back_at
            if p.left_at is not None:
                assert p.left_at.timestamp() <= back_at
        # Writing goes straight to the database again: the last leave ends the meeting.
        await carol.close()
        await eventually(
            lambda: _meeting_ended(meetings, meeting.meeting_id), timeout=STORE_WAIT, what="the meeting ended"
        )


async def _said(server: Server, room_id: str, text: str) -> bool:
    status, body = await get_json(server, f"/api/rooms/{room_id}/messages")
    return status == 200 and any(m.get("text") == text for m in body["messages"])


async def _peers(meetings: MeetingService, room_id: str, peers: list[str]) -> bool:
    current = await meetings.current(room_id)
    return current is not None and [p.peer_id for p in current.participants] == peers


async def _meeting_ended(meetings: MeetingService, meeting_id: str) -> bool:
    meeting = await meetings.get(meeting_id)
    return meeting is not None and meeting.ended_at is not None


async def test_a_meeting_is_not_one_growing_document(mongo: MongoService) -> None:
    """Participations are documents of their own: the meeting document stays small
    however many join, and a recording attaches to a long meeting."""
    db = f"parley_t_{secrets.token_hex(4)}"
    store = MongoStore(mongo.uri, database=db, timeout=15)
    await store.start()
    try:
        chat = ChatService(store)
        r = room()
        for i in range(40):
            await chat.meetings.join(r, f"p{i}", "N" * 256)  # the longest name signaling accepts
            if i % 2:
                await chat.meetings.leave(r, f"p{i}")
        meeting = await chat.meetings.current(r)
        assert meeting is not None and len(meeting.participants) == 40
        doc = await store.db[MEETINGS_COLLECTION].find_one({"_id": meeting.meeting_id})
        assert set(doc) == {"_id", "roomId", "startedAt", "endedAt"} - ({"endedAt"} - set(doc))
        assert await store.db[PARTICIPANTS].count_documents({"meetingId": meeting.meeting_id}) == 40
        attached = await chat.meetings.add_recording(meeting.meeting_id, REC)
        assert attached is not None and [x.key for x in attached.recordings] == [REC["key"]]
    finally:
        await store.client.drop_database(db)
        await store.close()


async def test_legacy_meeting_documents_are_read_and_ended(mongo: MongoService) -> None:
    """A meeting written with the old embedded arrays still reads and ends."""
    from control.chat.meetings import now
    from control.store.ids import new_id

    db = f"parley_t_{secrets.token_hex(4)}"
    store = MongoStore(mongo.uri, database=db, timeout=15)
    await store.start()
    try:
        mid, t0 = new_id(), now()
        entry = {"peerId": "ada", "displayName": "Ada", "email": None, "joinedAt": t0, "leftAt": None}
        await store.db[MEETINGS_COLLECTION].insert_one(
            {
                "_id": mid,
                "roomId": "legacy",
                "startedAt": t0,
                "endedAt": None,
                "participants": [entry],
                "recordings": [],
            }
        )
        fresh = ChatService(store)
        await fresh.start()  # recovery ends it
        done = await fresh.meetings.get(mid)
        assert done is not None and done.ended_at is not None
        assert [(p.peer_id, p.left_at) for p in done.participants] == [("ada", done.ended_at)]
    finally:
        await store.client.drop_database(db)
        await store.close()


async def test_a_500_carries_an_error_id_not_the_exception_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug under a chat or meetings route: 500, an error id, no exception text."""
    async with running_server(tmp_path) as server:
        chat: ChatService = server.app[CHAT]

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("secret internals /etc/parley token=abc")

        monkeypatch.setattr(chat.store.chat, "history", broken)
        monkeypatch.setattr(chat.store.meetings, "list_meetings", broken)
        for path in (f"/api/rooms/{room()}/messages", f"/api/rooms/{room()}/meetings"):
            status, body = await get_json(server, path)
            assert status == 500, body
            assert "secret" not in str(body) and "RuntimeError" not in str(body)
            assert body["error"]["code"] == "internal_error"
            assert body["error"]["errorId"] and body["error"]["errorId"] in body["error"]["message"]

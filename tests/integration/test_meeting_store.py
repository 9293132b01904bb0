"""Meetings: the store contract on both backends, the meeting service's lifecycle
(first join opens, last leave ends, crash recovery), the chat system messages that go
with it, and the events it hands to the event bus."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from control.chat import ChatError, ChatService, ChatValidationError, MeetingEvent, MeetingService
from control.chat.context import meeting_event_data
from control.chat.meetings import now
from control.store import Participant, RecordingRef, Store
from control.store.ids import new_id
from control.store.mongo import MongoStore
from control.store.sqlite import SQLiteStore

REC = {
    "bucket": "recordings",
    "key": "recordings/r/2025/meeting.mp4",
    "name": "meeting.mp4",
    "size": 10_485_760,
    "mimeType": "video/mp4",
}


def room() -> str:
    return f"room-{secrets.token_hex(4)}"


@pytest.fixture(params=["sqlite", "mongodb"])
async def store(request, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s: Store = SQLiteStore(tmp_path / "parley.sqlite3")
        db = None
    else:
        mongo = request.getfixturevalue("mongo")
        db = f"parley_t_{secrets.token_hex(4)}"
        s = MongoStore(mongo.uri, database=db, timeout=15)
    await s.start()
    try:
        yield s
    finally:
        if isinstance(s, MongoStore) and s._client is not None:
            await s.client.drop_database(s.db.name)
        await s.close()


def participant(peer: str, name: str | None = None, **kw) -> Participant:
    return Participant(peer_id=peer, display_name=name or peer.title(), joined_at=kw.pop("joined_at", now()), **kw)


# ============================================================ store contract


async def test_meeting_lifecycle_in_the_store(store):
    ms = store.meetings
    r = room()
    assert await ms.current_meeting(r) is None
    t0 = now()
    m = await ms.open_meeting(r, meeting_id=new_id(), started_at=t0)
    assert (m.room_id, m.started_at, m.ended_at, m.participants, m.recordings) == (r, t0, None, [], [])
    # opening again returns the open one
    again = await ms.open_meeting(r, meeting_id=new_id(), started_at=now())
    assert again.meeting_id == m.meeting_id and again.started_at == t0
    assert (await ms.current_meeting(r)) == m

    ada = participant("ada", email="ada@example.com", joined_at=t0 + timedelta(milliseconds=1))
    bob = participant("bob", joined_at=t0 + timedelta(milliseconds=2))
    m1 = await ms.add_participant(m.meeting_id, ada)
    assert m1 is not None and m1.participants == [ada]
    assert (await ms.add_participant(m.meeting_id, ada)).participants == [ada]  # idempotent (retries)
    m2 = await ms.add_participant(m.meeting_id, bob)
    assert [p.peer_id for p in m2.active_participants] == ["ada", "bob"]

    left = t0 + timedelta(seconds=5)
    m3 = await ms.participant_left(m.meeting_id, "ada", left)
    assert m3.participants[0].left_at == left and m3.participants[1].left_at is None
    assert (await ms.participant_left(m.meeting_id, "ada", left + timedelta(seconds=1))).participants[0].left_at == left
    # ada rejoins: a second entry
    ada2 = participant("ada", joined_at=left + timedelta(seconds=1))
    m4 = await ms.add_participant(m.meeting_id, ada2)
    assert [(p.peer_id, p.left_at is None) for p in m4.participants] == [("ada", False), ("bob", True), ("ada", True)]

    rec = RecordingRef.model_validate(
        {**REC, "recordingId": "rec-1", "startedAt": t0, "endedAt": left, "metadata": {"layout": "grid", "segments": 3}}
    )
    m5 = await ms.add_recording(m.meeting_id, rec)
    assert m5.recordings == [rec]
    assert (await ms.add_recording(m.meeting_id, rec)).recordings == [rec]  # idempotent per bucket+key
    other = RecordingRef.model_validate({**REC, "key": "recordings/r/2025/part2.mp4"})
    assert (await ms.add_recording(m.meeting_id, other)).recordings == [rec, other]

    ended_at = t0 + timedelta(minutes=1)
    done = await ms.end_meeting(m.meeting_id, ended_at)
    assert done.ended_at == ended_at
    assert all(p.left_at is not None for p in done.participants)
    assert done.participants[0].left_at == left  # kept
    assert done.participants[1].left_at == ended_at and done.participants[2].left_at == ended_at
    assert (await ms.end_meeting(m.meeting_id, ended_at + timedelta(hours=1))).ended_at == ended_at
    assert await ms.current_meeting(r) is None
    assert (await ms.get_meeting(m.meeting_id)) == done

    # the next join opens a new meeting
    nxt = await ms.open_meeting(r, meeting_id=new_id(), started_at=now())
    assert nxt.meeting_id != m.meeting_id and nxt.ended_at is None
    j = done.to_json()
    assert j["meetingId"] == m.meeting_id and j["participants"][0]["email"] == "ada@example.com"
    assert j["recordings"][0]["mimeType"] == "video/mp4" and j["recordings"][0]["metadata"]["segments"] == 3
    assert j["endedAt"].endswith("Z") and "endedAt" not in nxt.to_json()


async def test_unknown_meetings(store):
    ms = store.meetings
    missing = new_id()
    assert await ms.get_meeting(missing) is None
    assert await ms.add_participant(missing, participant("ada")) is None
    assert await ms.participant_left(missing, "ada", now()) is None
    assert await ms.end_meeting(missing, now()) is None
    assert await ms.add_recording(missing, RecordingRef.model_validate(REC)) is None
    assert await ms.list_meetings(room()) == []


async def test_list_meetings_newest_first_with_cursor(store):
    ms = store.meetings
    r, other = room(), room()
    t0 = now() - timedelta(hours=1)
    ids = []
    for i in range(7):
        mid = new_id()
        await ms.open_meeting(r, meeting_id=mid, started_at=t0 + timedelta(minutes=i))
        await ms.end_meeting(mid, t0 + timedelta(minutes=i, seconds=30))
        ids.append(mid)
    await ms.open_meeting(other, meeting_id=new_id(), started_at=t0)
    page = await ms.list_meetings(r, limit=3)
    assert [m.meeting_id for m in page] == ids[::-1][:3]
    rest = await ms.list_meetings(r, limit=10, before=page[-1].cursor)
    assert [m.meeting_id for m in rest] == ids[::-1][3:]
    open_ = await ms.open_meetings()
    assert [m.room_id for m in open_] == [other]


# ============================================================ the meeting service


async def test_first_join_opens_last_leave_ends(store):
    svc = MeetingService(store)
    events: list[MeetingEvent] = []
    svc.subscribe(events.append)
    r = room()
    m = await svc.join(r, "ada", "Ada", "ada@example.com")
    assert svc.current_id(r) == m.meeting_id
    assert (await svc.join(r, "ada", "Ada")).participants == m.participants  # already in: no-op
    await svc.join(r, "bob", "Bob")
    m2, ended = await svc.leave(r, "ada")
    assert not ended and m2 is not None and [p.peer_id for p in m2.active_participants] == ["bob"]
    m3, ended = await svc.leave(r, "bob")
    assert ended and m3 is not None and m3.ended_at is not None and svc.current_id(r) is None
    assert await svc.leave(r, "bob") == (None, False)
    assert [(e.type, e.peer_id) for e in events] == [
        ("meeting.started", None),
        ("participant.joined", "ada"),
        ("participant.joined", "bob"),
        ("participant.left", "ada"),
        ("participant.left", "bob"),
        ("meeting.ended", None),
    ]
    again = await svc.join(r, "ada", "Ada")
    assert again.meeting_id != m.meeting_id
    page = await svc.list(r)
    assert [x.meeting_id for x in page.meetings] == [again.meeting_id, m.meeting_id]
    fetched = await svc.get(m.meeting_id)
    assert fetched is not None and fetched.ended_at == m3.ended_at


async def test_concurrent_joins_open_one_meeting(store):
    svc = MeetingService(store)
    r = room()
    results = await asyncio.gather(*(svc.join(r, f"p{i}", f"Peer {i}") for i in range(12)))
    assert len({m.meeting_id for m in results}) == 1
    meeting = await svc.current(r)
    assert meeting is not None and sorted(p.peer_id for p in meeting.participants) == sorted(f"p{i}" for i in range(12))
    await asyncio.gather(*(svc.leave(r, f"p{i}") for i in range(12)))
    assert await svc.current(r) is None
    ended = await svc.get(meeting.meeting_id)
    assert ended is not None and ended.ended_at is not None and not ended.active_participants


async def test_ensure_open_gives_the_meeting_the_first_join_then_fills(store):
    """A recording asks for the meeting before the first join is recorded: one
    meeting, opened once, that the joins then fill."""
    svc = MeetingService(store)
    events: list[MeetingEvent] = []
    svc.subscribe(events.append)
    r = room()
    ensured, joined = await asyncio.gather(svc.ensure_open(r), svc.join(r, "ada", "Ada"))
    assert ensured.meeting_id == joined.meeting_id == svc.current_id(r)
    assert (await svc.ensure_open(r)).meeting_id == ensured.meeting_id
    current = await svc.current(r)
    assert current is not None and [p.peer_id for p in current.participants] == ["ada"]
    assert [e.type for e in events] == ["meeting.started", "participant.joined"]


async def test_room_closed_ends_the_meeting_for_everyone(store):
    chat = ChatService(store)
    r = room()
    await chat.participant_joined(r, "ada", "Ada")
    await chat.participant_joined(r, "bob", "Bob")
    m = await chat.room_closed(r)
    assert m is not None and m.ended_at is not None and all(p.left_at == m.ended_at for p in m.participants)
    assert await chat.room_closed(r) is None


async def test_recovery_ends_meetings_left_open_by_a_crash(store):
    crashed = MeetingService(store)
    r = room()
    m = await crashed.join(r, "ada", "Ada")
    # a new process on the same store
    fresh = ChatService(store)
    events: list[MeetingEvent] = []
    fresh.meetings.subscribe(events.append)
    await fresh.start()
    done = await fresh.meetings.get(m.meeting_id)
    assert done is not None and done.ended_at is not None and done.participants[0].left_at == done.ended_at
    assert [e.type for e in events] == ["meeting.ended"]
    assert (await fresh.meetings.join(r, "ada", "Ada")).meeting_id != m.meeting_id


async def test_meeting_input_is_validated(store):
    svc = MeetingService(store)
    for call, code in [
        (svc.join("bad room", "ada", "Ada"), "invalid_room_id"),
        (svc.join(room(), "a b", "Ada"), "invalid_peer_id"),
        (svc.join(room(), "ada", "\x00"), "control_characters"),
        (svc.join(room(), "ada", "Ada", "not-an-email"), "invalid_email"),
        (svc.leave(room(), "x" * 129), "invalid_peer_id"),
        (svc.get("nope"), "invalid_meeting_id"),
        (svc.list(room(), 500), "invalid_limit"),
        (svc.list(room(), 10, "garbage"), "invalid_cursor"),
        (svc.add_recording("nope", REC), "invalid_meeting_id"),
    ]:
        with pytest.raises(ChatValidationError) as info:
            await call
        assert info.value.code == code
    with pytest.raises(ChatError) as missing:
        await svc.add_recording(new_id(), REC)
    assert missing.value.code == "not_found"


# ============================================================ with chat system messages


async def test_join_leave_and_recording_post_system_messages(store):
    chat = ChatService(store)
    r = room()
    await chat.participant_joined(r, "ada", "Ada", "ada@example.com")
    await chat.participant_joined(r, "bob", "Bob")
    meeting = await chat.meetings.current(r)
    said = await chat.send(r, {"peerId": "ada", "displayName": "Ada"}, {"text": "hello"})
    assert meeting is not None and said.meeting_id == meeting.meeting_id
    await chat.recording_started(r, recording_id="rec-1", by={"peerId": "ada", "displayName": "Ada"})
    stopped = await chat.recording_stopped(r, recording_id="rec-1", recording=REC)
    assert stopped.data is not None
    assert stopped.data["meetingId"] == meeting.meeting_id and stopped.data["recording"]["key"] == REC["key"]
    await chat.participant_left(r, "bob")
    await chat.participant_left(r, "ada")
    assert await chat.participant_left(r, "ada") is None
    history = (await chat.history(r)).messages[::-1]
    assert [(m.type, m.event, m.text) for m in history] == [
        ("system", "participant.joined", "Ada joined"),
        ("system", "participant.joined", "Bob joined"),
        ("text", None, "hello"),
        ("system", "recording.started", "Ada started recording"),
        ("system", "recording.stopped", "Recording stopped"),
        ("system", "participant.left", "Bob left"),
        ("system", "participant.left", "Ada left"),
    ]
    assert all(m.meeting_id == meeting.meeting_id for m in history)
    assert history[0].data == {"peerId": "ada", "displayName": "Ada"}
    done = await chat.meetings.get(meeting.meeting_id)
    assert done is not None and done.ended_at is not None
    assert [x.key for x in done.recordings] == [REC["key"]]
    assert [(p.peer_id, p.email) for p in done.participants] == [("ada", "ada@example.com"), ("bob", None)]


async def test_recording_from_a_storage_object_ref(store):
    from control.storage.base import ObjectRef

    chat = ChatService(store)
    r = room()
    await chat.participant_joined(r, "ada", "Ada")
    obj = ObjectRef(
        backend="s3",
        bucket="recordings",
        key=f"recordings/{r}/meeting-1.mp4",
        size=42,
        content_type="video/mp4",
        etag="abc",
        duration=61.5,
    )
    msg = await chat.recording_stopped(r, recording_id="rec-9", recording=obj)
    meeting = await chat.meetings.current(r)
    assert meeting is not None
    [rec] = meeting.recordings
    assert (rec.bucket, rec.key, rec.name, rec.size, rec.mime_type) == (
        "recordings",
        f"recordings/{r}/meeting-1.mp4",
        "meeting-1.mp4",
        42,
        "video/mp4",
    )
    assert rec.metadata == {"backend": "s3", "etag": "abc", "duration": 61.5}
    assert msg.data is not None and msg.data["recording"]["name"] == "meeting-1.mp4"
    assert msg.meeting_id == meeting.meeting_id
    with pytest.raises(ChatValidationError) as info:
        await chat.meetings.add_recording(meeting.meeting_id, object())
    assert info.value.code == "invalid_recording"


async def test_recording_stopped_without_a_meeting_is_refused(store):
    chat = ChatService(store)
    with pytest.raises(ChatValidationError) as info:
        await chat.recording_stopped(room(), recording=REC)
    assert info.value.code == "no_meeting"


async def test_history_deleted_when_the_meeting_ends_if_configured(store):
    keep = ChatService(store)
    r1 = room()
    await keep.participant_joined(r1, "ada", "Ada")
    await keep.participant_left(r1, "ada")
    assert len((await keep.history(r1)).messages) == 2

    wipe = ChatService(store, delete_on_meeting_end=True)
    cleared = []
    wipe.subscribe(lambda m: None, lambda room_id, n: cleared.append((room_id, n)))
    r2 = room()
    await wipe.participant_joined(r2, "ada", "Ada")
    await wipe.participant_joined(r2, "bob", "Bob")
    await wipe.send(r2, {"peerId": "ada", "displayName": "Ada"}, {"text": "secret"})
    await wipe.participant_left(r2, "ada")
    assert len((await wipe.history(r2)).messages) == 4  # bob is still there
    await wipe.participant_left(r2, "bob")
    assert (await wipe.history(r2)).messages == []
    assert cleared == [(r2, 5)]


def _published(event: MeetingEvent) -> tuple[str, dict[str, Any]]:
    """The event's ``(event id, data)`` for the bus; a change that is not published fails."""
    published = meeting_event_data(event)
    assert published is not None, event
    return published


async def test_meeting_events_fit_the_event_bus_schema(store):
    from control.events.schema import build_envelope

    svc = MeetingService(store)
    events: list[MeetingEvent] = []
    svc.subscribe(events.append)
    r = room()
    await svc.join(r, "ada", "Ada", "ada@example.com")
    await svc.join(r, "bob", "Bob")
    await svc.leave(r, "bob")
    await svc.leave(r, "ada")
    built = [_published(e) for e in events]  # each asserted not None
    envelopes = [build_envelope(e.type, data, event_id=eid) for e, (eid, data) in zip(events, built, strict=False)]
    assert [env["type"] for env in envelopes] == [
        "meeting.started",
        "participant.joined",
        "participant.joined",
        "participant.left",
        "participant.left",
        "meeting.ended",
    ]
    assert envelopes[1]["data"]["email"] == "ada@example.com"
    assert envelopes[-1]["data"]["participantCount"] == 2
    # the same change gives the same event id (a retried publish is deduplicated)
    assert _published(events[0])[0] == built[0][0]
    assert len({eid for eid, _ in built}) == len(built)

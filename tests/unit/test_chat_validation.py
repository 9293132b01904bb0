"""Chat input validation, ids and cursors (no I/O)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from control.chat.validation import (
    ChatLimits,
    ChatValidationError,
    check_text,
    parse_limit,
    validate_content,
    validate_email,
    validate_file,
    validate_sender,
)
from control.store.ids import (
    ID_RE,
    InvalidId,
    datetime_to_ms,
    id_datetime,
    id_ms,
    ms_to_datetime,
    new_id,
    new_id_ms,
    validate_id,
    validate_peer_id,
    validate_room_id,
)
from control.store.models import ChatMessage, Cursor, FileRef, InvalidCursor, Sender, iso_ms

FILE = {
    "bucket": "recordings",
    "key": "chat/room1/abc/report.pdf",
    "name": "report.pdf",
    "size": 1234,
    "mimeType": "application/pdf",
}


def refused(payload, code, field=None, limits=ChatLimits()):
    with pytest.raises(ChatValidationError) as info:
        validate_content(payload, limits)
    assert info.value.code == code, info.value.to_json()
    if field is not None:
        assert info.value.field == field
    body = info.value.to_json()
    assert body["code"] == code and body["message"]
    return info.value


# ---------------------------------------------------------------- content


def test_text_message_accepted_and_normalized():
    c = validate_content({"type": "text", "text": "line one\r\nline two\rthree\tok"})
    assert c.type == "text" and c.file is None
    assert c.text == "line one\nline two\nthree\tok"


def test_type_defaults_to_text_and_unknown_keys_are_ignored():
    c = validate_content({"text": "hi", "id": 7, "whatever": {"x": 1}})
    assert (c.type, c.text) == ("text", "hi")


@pytest.mark.parametrize(
    "payload, code, field",
    [
        ({"type": "text"}, "missing_field", "text"),
        ({"type": "text", "text": ""}, "empty", "text"),
        ({"type": "text", "text": "  \n\t "}, "empty", "text"),
        ({"type": "text", "text": 42}, "invalid_type", "text"),
        ({"type": "text", "text": "bell\x07"}, "control_characters", "text"),
        ({"type": "text", "text": "nul\x00byte"}, "control_characters", "text"),
        ({"type": "text", "text": "esc\x1b[31mred"}, "control_characters", "text"),
        ({"type": "text", "text": "del\x7f"}, "control_characters", "text"),
        ({"type": "text", "text": "c1\x85"}, "control_characters", "text"),
        ({"type": "text", "text": "lone \ud800 surrogate"}, "control_characters", "text"),
        ({"type": "system", "text": "I am the server"}, "forbidden_type", "type"),
        ({"type": "video", "text": "x"}, "invalid_type", "type"),
        ({"type": "file"}, "missing_field", "file"),
        ({"type": "file", "file": "s3://x"}, "missing_field", "file"),
    ],
)
def test_refused_content(payload, code, field):
    refused(payload, code, field)


def test_not_an_object():
    refused(["text", "hi"], "invalid_payload")
    refused("hi", "invalid_payload")


def test_text_length_limit_counts_characters():
    assert validate_content({"text": "x" * 4000}).text == "x" * 4000
    err = refused({"text": "x" * 4001}, "text_too_long", "text")
    assert "4000" in err.message
    # code points, not bytes: 4000 emoji (16,000 UTF-8 bytes) are fine
    assert validate_content({"text": "\U0001f600" * 4000}).text is not None
    # configurable
    refused({"text": "x" * 11}, "text_too_long", limits=ChatLimits(max_text_length=10))
    assert validate_content({"text": "x" * 10}, ChatLimits(max_text_length=10)).text == "x" * 10


def test_crlf_normalization_happens_before_the_length_check():
    assert validate_content({"text": "ab\r\n" * 1000}).text == "ab\n" * 1000  # 3000 chars


def test_file_message():
    c = validate_content({"type": "file", "file": dict(FILE, mimeType="Application/PDF"), "text": "the report"})
    assert c.type == "file" and c.text == "the report"
    assert c.file == FileRef(
        bucket="recordings", key="chat/room1/abc/report.pdf", name="report.pdf", size=1234, mime_type="application/pdf"
    )
    assert validate_content({"type": "file", "file": FILE}).text is None  # caption optional
    assert validate_content({"type": "file", "file": FILE, "text": "  "}).text is None


@pytest.mark.parametrize(
    "change, field",
    [
        ({"bucket": "Bad_Bucket"}, "file.bucket"),
        ({"bucket": "ab"}, "file.bucket"),
        ({"bucket": None}, "file.bucket"),
        ({"key": ""}, "file.key"),
        ({"key": "a" * 1025}, "file.key"),
        ({"key": "chat/\x00evil"}, "file.key"),
        ({"name": None}, "file.name"),
        ({"name": "../etc/passwd"}, "file.name"),
        ({"name": "a\\b.txt"}, "file.name"),
        ({"name": "x\ny.txt"}, "file.name"),
        ({"name": "n" * 256}, "file.name"),
        ({"size": -1}, "file.size"),
        ({"size": 1.5}, "file.size"),
        ({"size": "12"}, "file.size"),
        ({"size": True}, "file.size"),
        ({"mimeType": "pdf"}, "file.mimeType"),
        ({"mimeType": "text/html; <script>"}, "file.mimeType"),
        ({"mimeType": None}, "file.mimeType"),
    ],
)
def test_refused_file_fields(change, field):
    with pytest.raises(ChatValidationError) as info:
        validate_file({**FILE, **change})
    assert info.value.field == field


def test_file_key_must_be_a_chat_upload_of_the_room():
    ok = validate_content({"type": "file", "file": FILE}, room_id="room1")
    assert ok.file is not None and ok.file.key == "chat/room1/abc/report.pdf"
    for key in (
        "chat/room2/abc/report.pdf",
        "recordings/room1/meeting.mp4",
        "chat/room1/report.pdf",
        "chat/room1/abc/d/report.pdf",
        "chat/room1/../room2/report.pdf",
        "chat/room1/abc/..",
        "/chat/room1/abc/report.pdf",
        "chat/room1/abc/rep ort.pdf",
    ):
        with pytest.raises(ChatValidationError) as info:
            validate_content({"type": "file", "file": {**FILE, "key": key}}, room_id="room1")
        assert info.value.field == "file.key", key


def test_file_size_limit():
    limits = ChatLimits(max_file_size=1000)
    content = validate_content({"type": "file", "file": {**FILE, "size": 1000}}, limits)
    assert content.file is not None and content.file.size == 1000
    refused({"type": "file", "file": {**FILE, "size": 1001}}, "file_too_large", "file.size", limits)


def test_file_caption_is_limited_too():
    refused({"type": "file", "file": FILE, "text": "x" * 4001}, "text_too_long")
    refused({"type": "file", "file": FILE, "text": "\x1b"}, "control_characters")


# ---------------------------------------------------------------- sender, ids


def test_sender_forms():
    want = Sender(peer_id="peer-1", display_name="Ada Lovelace")
    assert validate_sender({"peerId": "peer-1", "displayName": "  Ada Lovelace "}) == want
    assert validate_sender({"peer_id": "peer-1", "display_name": "Ada Lovelace"}) == want
    assert validate_sender(want) == want

    class Peer:
        peer_id, display_name = "peer-1", "Ada Lovelace"

    assert validate_sender(Peer()) == want


@pytest.mark.parametrize(
    "sender, code, field",
    [
        ({"displayName": "Ada"}, "invalid_peer_id", "sender.peerId"),
        ({"peerId": "", "displayName": "Ada"}, "invalid_peer_id", "sender.peerId"),
        ({"peerId": "a b", "displayName": "Ada"}, "invalid_peer_id", "sender.peerId"),
        ({"peerId": "x" * 129, "displayName": "Ada"}, "invalid_peer_id", "sender.peerId"),
        ({"peerId": "a\nb", "displayName": "Ada"}, "invalid_peer_id", "sender.peerId"),
        ({"peerId": "p1"}, "missing_field", "sender.displayName"),
        ({"peerId": "p1", "displayName": " "}, "empty", "sender.displayName"),
        ({"peerId": "p1", "displayName": "A" * 257}, "too_long", "sender.displayName"),
        ({"peerId": "p1", "displayName": "Ada\u202eAdmin"}, "control_characters", "sender.displayName"),
        ({"peerId": "p1", "displayName": "Ada\nAdmin"}, "control_characters", "sender.displayName"),
        ({"peerId": "p1", "displayName": "Ada\u2028Admin"}, "control_characters", "sender.displayName"),
    ],
)
def test_refused_senders(sender, code, field):
    with pytest.raises(ChatValidationError) as info:
        validate_sender(sender)
    assert (info.value.code, info.value.field) == (code, field)


@pytest.mark.parametrize("value", ["room1", "R", "team_standup-2024-01", "a" * 64, "0abc"])
def test_room_and_peer_ids_accepted(value):
    assert validate_room_id(value) == value
    assert validate_peer_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        None,
        5,
        "a" * 65,
        "-room",
        ".room",
        "_room",
        "room.x",
        "..",
        "room/../x",
        "room x",
        "room%20",
        "røom",
        "room\n",
        "room;drop",
        "$where",
        '{"$gt":""}',
    ],
)
def test_room_ids_refused(value):
    with pytest.raises(InvalidId):
        validate_room_id(value)


# Peer ids follow signaling's rule (control.ids): any printable characters, so a
# peer that could connect can chat; they are stored as values, never in keys.
@pytest.mark.parametrize("value", ["a" * 128, "-peer", "peer.x", "ada@example.com", "røom", "$where"])
def test_peer_ids_signaling_accepts_are_accepted(value):
    assert validate_peer_id(value) == value
    assert validate_sender({"peerId": value, "displayName": "Ada"}).peer_id == value


@pytest.mark.parametrize(
    "value", ["", None, 5, "a" * 129, "peer x", "peer\n", "peer\t", "peer\x00", "peer\x85", "peer\u2028", "peer\ud800"]
)
def test_peer_ids_refused(value):
    with pytest.raises(InvalidId):
        validate_peer_id(value)


def test_email():
    assert validate_email(None) is None and validate_email("") is None
    assert validate_email(" ada@example.com ") == "ada@example.com"
    for bad in ("ada", "ada@", "@x", "a b@example.com", "ada@exa\nmple.com", 5):
        with pytest.raises(ChatValidationError):
            validate_email(bad)


def test_check_text_optional():
    assert check_text(None, required=False) is None
    with pytest.raises(ChatValidationError):
        check_text(None)


# ---------------------------------------------------------------- limit


def test_parse_limit():
    assert parse_limit(None) == 50 and parse_limit("") == 50
    assert parse_limit("1") == 1 and parse_limit("200") == 200 and parse_limit(7) == 7
    for bad in ("0", "201", "-5", "abc", "1.5", 1.5, True, "9" * 30):
        with pytest.raises(ChatValidationError) as info:
            parse_limit(bad)
        assert info.value.code == "invalid_limit"


# ---------------------------------------------------------------- ids


def test_ids_are_ulids_increasing_and_carry_their_time():
    ids = [new_id() for _ in range(10_000)]
    assert all(ID_RE.match(i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    ms, i = new_id_ms()
    assert id_ms(i) == ms
    assert abs(datetime_to_ms(datetime.now(UTC)) - ms) < 5000
    assert id_datetime(i) == ms_to_datetime(ms)


def test_ids_unique_and_increasing_across_threads():
    per_thread: list[list[str]] = []

    def make() -> None:
        mine = [new_id() for _ in range(5000)]
        per_thread.append(mine)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for chunk in per_thread for i in chunk]
    assert len(set(everything)) == 40_000
    for chunk in per_thread:
        assert chunk == sorted(chunk)


def test_validate_id():
    i = new_id()
    assert validate_id(i) == i
    for bad in ("", "x" * 26, i.lower(), i + "0", "8" + i[1:], "01ARZ3NDEKTSV4RRFFQ69G5FAI", None):
        with pytest.raises(InvalidId):
            validate_id(bad, "meetingId")


def test_ms_datetime_roundtrip_exact():
    for ms in (0, 1, 999, 1_700_000_000_123, 253_402_300_799_999):
        assert datetime_to_ms(ms_to_datetime(ms)) == ms
    assert datetime_to_ms(datetime(2024, 1, 1, 0, 0, 0, 123999, tzinfo=UTC)) % 1000 == 123
    assert datetime_to_ms(datetime(2024, 1, 1)) == datetime_to_ms(datetime(2024, 1, 1, tzinfo=UTC))


def test_iso_ms():
    assert iso_ms(ms_to_datetime(1_700_000_000_123)) == "2023-11-14T22:13:20.123Z"
    assert iso_ms(ms_to_datetime(0)) == "1970-01-01T00:00:00.000Z"


# ---------------------------------------------------------------- cursors


def test_cursor_roundtrip_and_order():
    a, b = Cursor(1000, new_id()), Cursor(1000, new_id())
    assert Cursor.decode(a.encode()) == a and Cursor.decode(str(b)) == b
    assert a < b < Cursor(1001, "0" * 26)
    token = a.encode()
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "!!!!",
        "a" * 500,
        "MS4xMjM",  # "1.123"
        "Mi4xMDAwLjAxSDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA",  # version 2
        "MS4tMS4wMUgwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMA",  # negative time
        "MS4xMDAwLjAxaDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA",  # lower-case id
        "MS4xMDAwLjgxSDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA",  # id out of range
        "/w",  # not base64url
    ],
)
def test_malformed_cursors(token):
    with pytest.raises(InvalidCursor, match="invalid cursor"):
        Cursor.decode(token)


def test_message_json_shape():
    ms, i = new_id_ms()
    m = ChatMessage(
        id=i,
        room_id="r1",
        type="text",
        sender=Sender(peer_id="p1", display_name="Ada"),
        text="hi",
        created_at=ms_to_datetime(ms),
    )
    assert m.to_json() == {
        "id": i,
        "roomId": "r1",
        "type": "text",
        "sender": {"peerId": "p1", "displayName": "Ada"},
        "text": "hi",
        "createdAt": iso_ms(ms_to_datetime(ms)),
    }
    assert m.cursor == Cursor(ms, i)

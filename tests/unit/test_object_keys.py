"""Object keys are built from validated ids only; upload policy; the local store's
URL signatures; the event schema and its redaction."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from control.events.schema import build_envelope, redact_event
from control.storage import (
    InvalidKey,
    LocalStorage,
    UploadPolicy,
    UploadRejected,
    chat_file_key,
    new_file_id,
    recording_key,
    safe_filename,
)
from control.storage.keys import validate_key
from control.storage.local import SignatureInvalid

BAD_IDS = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "a\\b",
    "a\x00b",
    ".hidden",
    "a b",
    "é",
    "%2e%2e",
    "-x",
    "_x",
    "a" * 129,
    "a\nb",
    "a\n",
    "a?b",
    "a#b",
    "a*",
    None,
    5,
]
BAD_NAMES = [
    "",
    "..",
    "a..b",
    "../etc/passwd",
    "x/y",
    "x\\y",
    ".env",
    "a\nb",
    "a.mp4\n",
    "a b.mp4",
    "ü.mp4",
    "a" * 201,
    "%2F.mp4",
    None,
]


def test_recording_and_chat_keys() -> None:
    assert recording_key("room-1", "2026-05-01T10-00-00.mp4") == "recordings/room-1/2026-05-01T10-00-00.mp4"
    assert chat_file_key("Room_2", "f1", "notes.v2.pdf") == "chat/Room_2/f1/notes.v2.pdf"


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_are_rejected(bad) -> None:
    with pytest.raises(InvalidKey):
        recording_key(bad, "x.mp4")
    with pytest.raises(InvalidKey):
        chat_file_key("room", bad, "x.pdf")


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_filenames_are_rejected(bad) -> None:
    with pytest.raises(InvalidKey):
        recording_key("room", bad)


@pytest.mark.parametrize(
    "key", ["/a/b", "a//b", "a/../b", "a/./b", "a/", "a/b/", "a/.b", "", "a/" + "b" * 1100, "a\n/b", "a/b.mp4\n"]
)
def test_bad_keys_are_rejected(key: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)


def test_invalid_key_message_is_bounded() -> None:
    with pytest.raises(InvalidKey) as info:
        recording_key("x" * 5000, "a.mp4")
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../Relevé août.PDF", "Releve_aout.PDF"),
        ("C:\\Users\\me\\notes.txt", "notes.txt"),
        ("...", "file"),
        ("", "file"),
        ("日本語.pdf", "file.pdf"),
        ("Notes d'été (v2).pdf", "Notes_d_ete_v2.pdf"),
        (".bashrc", "file.bashrc"),
        ("archive.tar.gz", "archive.tar.gz"),
        ("a..b", "a.b"),
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
    ],
)
def test_safe_filename(name: str, safe: str) -> None:
    assert safe_filename(name) == safe
    recording_key("room", safe_filename(name))  # always valid


def test_new_file_ids_are_valid_and_unique() -> None:
    ids = {new_file_id() for _ in range(2000)}
    assert len(ids) == 2000
    for file_id in ids:
        chat_file_key("room", file_id, "a.txt")


def test_upload_policy() -> None:
    policy = UploadPolicy(max_bytes=1000, allowed_types=("image/*", "application/pdf"))
    policy.check(1000, "image/png")
    policy.check(1, "application/pdf; charset=binary")
    with pytest.raises(UploadRejected, match="too large"):
        policy.check(1001, "image/png")
    for bad in ("text/html", "", "application/pdf2", "imagex/png"):
        with pytest.raises(UploadRejected, match="not allowed"):
            policy.check(10, bad)
    with pytest.raises(UploadRejected):
        policy.check(-1, "image/png")


async def test_local_store_signatures(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path, base_url="http://app.example:3000")
    url = await store.presigned_get_url("recordings/r/a.mp4", expires_in=60)
    parts = urlsplit(url)
    assert parts.netloc == "app.example:3000" and parts.path == "/api/storage/objects/recordings/r/a.mp4"
    query = dict(parse_qsl(parts.query))
    store.verify_signature("GET", "recordings/r/a.mp4", query)
    with pytest.raises(SignatureInvalid):
        store.verify_signature("PUT", "recordings/r/a.mp4", query)  # another method
    with pytest.raises(SignatureInvalid):
        store.verify_signature("GET", "recordings/r/b.mp4", query)  # another key
    with pytest.raises(SignatureInvalid):
        store.verify_signature("GET", "recordings/r/a.mp4", {**query, "expires": str(int(time.time()) + 9999)})
    with pytest.raises(SignatureInvalid):
        store.verify_signature("GET", "recordings/r/a.mp4", {**query, "filename": "x"})  # added param
    other = LocalStorage(tmp_path, base_url="http://app.example:3000")  # another secret
    with pytest.raises(SignatureInvalid):
        other.verify_signature("GET", "recordings/r/a.mp4", query)
    put = await store.presigned_put("chat/r/f/a.pdf", content_type="application/pdf", size=10)
    put_query = dict(parse_qsl(urlsplit(put.url).query))
    assert store.verify_signature("PUT", "chat/r/f/a.pdf", put_query) == {
        "content-type": "application/pdf",
        "content-length": "10",
    }
    with pytest.raises(SignatureInvalid):
        store.verify_signature("PUT", "chat/r/f/a.pdf", {**put_query, "content-length": "11"})
    with pytest.raises(ValueError, match="expiry"):
        await store.presigned_get_url("recordings/r/a.mp4", expires_in=8 * 24 * 3600)
    with pytest.raises(InvalidKey):
        store.path_for("../../etc/passwd")


def test_envelope_and_redaction() -> None:
    t = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    env = build_envelope(
        "participant.joined",
        {"meetingId": "m", "roomId": "r", "peerId": "p", "displayName": "P", "joinedAt": t},
        event_id="6f1c0d2e-5b0a-4c55-9b1e-0a4b1b1b1b1b",
        occurred_at=t,
    )
    assert env == {
        "schemaVersion": 1,
        "eventId": "6f1c0d2e-5b0a-4c55-9b1e-0a4b1b1b1b1b",
        "type": "participant.joined",
        "occurredAt": "2026-05-01T10:00:00.000000Z",
        "source": "parley",
        "data": {
            "meetingId": "m",
            "roomId": "r",
            "peerId": "p",
            "displayName": "P",
            "email": None,
            "joinedAt": "2026-05-01T10:00:00Z",
        },
    }
    with pytest.raises(ValueError):
        build_envelope("participant.joined", {"meetingId": "m"})
    with pytest.raises(ValueError):
        build_envelope("participant.joined", {**env["data"], "unknownField": 1})
    with pytest.raises(ValueError):
        build_envelope("participant.joined", env["data"], event_id="not-a-uuid")
    rec: dict[str, Any] = {
        "schemaVersion": 1,
        "data": {
            "participants": [
                {
                    "peerId": "p",
                    "integrations": {"jira": {"apiKey": "k1", "site": "x"}, "plain": "v"},
                    "aiSettings": {"language": "en"},
                }
            ]
        },
        "token": "t",
    }
    shown = redact_event(rec)
    assert shown["data"]["participants"][0]["integrations"] == {
        "jira": {"apiKey": "***", "site": "***"},
        "plain": "***",
    }
    assert shown["data"]["participants"][0]["aiSettings"] == {"language": "en"}
    assert shown["token"] == "***"
    assert rec["data"]["participants"][0]["integrations"]["plain"] == "v"  # a copy

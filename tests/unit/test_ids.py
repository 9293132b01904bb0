"""The one rule for room ids (and the one for peer ids), ``control.ids``, and that the
chat/meetings store, the object keys and the broadcaster API apply exactly it."""

from __future__ import annotations

import random
import string
import uuid

import pytest
from pydantic import ValidationError

from control import ids
from control.ids import (
    MAX_PEER_ID_LENGTH,
    MAX_ROOM_ID_LENGTH,
    InvalidId,
    is_valid_peer_id,
    is_valid_room_id,
    validate_peer_id,
    validate_room_id,
)
from control.rooms.broadcasters import CreateBroadcaster
from control.storage.keys import InvalidKey, chat_file_key, recording_key
from control.store import ids as store_ids

GOOD_ROOMS = [
    "r",
    "R",
    "0",
    "room1",
    "team_standup-2024-01",
    "a-",
    "a_",
    "0abc",
    "a" * 63,
    "a" * 64,
    "Z9_-z",
    str(uuid.uuid4()),
    uuid.uuid4().hex,
]
BAD_ROOMS = [
    "",
    None,
    5,
    b"room",
    "a" * 65,
    "a" * 1000,
    "_room",
    "-room",
    ".room",
    "_",
    "-",  # must start with a letter or digit
    "team room",
    " room",
    "room ",
    "room\t",
    "room\n",
    "\nroom",  # whitespace
    "team room!",
    "room.x",
    "room/x",
    "room\\x",
    "..",
    "room%20",
    "room?x",
    "room#x",
    "$where",
    "é",
    "caf\u00e9",
    "r\u00f8om",
    "\u0430bc",
    "\uff11",
    "\u65e5\u672c",
    "room\u200b",
    "\U0001f600",  # unicode
    "room\x00",
    "room\x7f",
]


def demo_room_id(rng: random.Random) -> str:
    """mediasoup-demo's ``randomString({ length: 8 }).toLowerCase()``."""
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(8))


@pytest.mark.parametrize("value", GOOD_ROOMS)
def test_room_ids_accepted(value: str) -> None:
    assert is_valid_room_id(value)
    assert validate_room_id(value) == value


@pytest.mark.parametrize("value", BAD_ROOMS)
def test_room_ids_refused(value: object) -> None:
    assert not is_valid_room_id(value)
    with pytest.raises(InvalidId) as info:
        validate_room_id(value)
    assert info.value.field == "roomId"
    assert ids.ROOM_ID_RULE in info.value.message


def test_length_limit_is_64() -> None:
    assert MAX_ROOM_ID_LENGTH == 64
    assert is_valid_room_id("a" * 64) and not is_valid_room_id("a" * 65)
    assert is_valid_room_id("1" + "-" * 63) and not is_valid_room_id("1" + "-" * 64)


def test_mediasoup_demo_room_ids_fit() -> None:
    rng = random.Random(7)
    for _ in range(500):
        assert is_valid_room_id(demo_room_id(rng))


def test_refusal_names_the_rule_without_echoing_the_value() -> None:
    with pytest.raises(InvalidId) as info:
        validate_room_id("secret token!")
    assert "secret" not in info.value.message
    assert info.value.message == "roomId must be " + ids.ROOM_ID_RULE
    with pytest.raises(InvalidId) as info:
        validate_room_id("")
    assert info.value.message.startswith("roomId is required")


@pytest.mark.parametrize("value", [*GOOD_ROOMS, *BAD_ROOMS])
def test_every_layer_applies_the_same_room_rule(value: object) -> None:
    """The chat/meetings store and the object keys accept exactly the room ids the
    rule accepts (signaling and the REST routes: tests/integration/signaling/test_room_ids.py)."""
    expected = is_valid_room_id(value)

    def accepts(check) -> bool:
        try:
            check()
        except (InvalidId, InvalidKey):
            return False
        return True

    assert accepts(lambda: store_ids.validate_room_id(value)) is expected
    assert accepts(lambda: recording_key(value, "m-1.mp4")) is expected  # type: ignore[arg-type]
    assert accepts(lambda: chat_file_key(value, "f1", "notes.pdf")) is expected  # type: ignore[arg-type]


def test_every_valid_room_can_store_its_files() -> None:
    rng = random.Random(11)
    alphabet = string.ascii_letters + string.digits + "_-"
    for _ in range(500):
        room = rng.choice(string.ascii_letters + string.digits) + "".join(
            rng.choice(alphabet) for _ in range(rng.randrange(MAX_ROOM_ID_LENGTH))
        )
        assert is_valid_room_id(room)
        assert recording_key(room, "x.mp4") == f"recordings/{room}/x.mp4"
        assert chat_file_key(room, "f1", "x.pdf") == f"chat/{room}/f1/x.pdf"


# -- peer ids ---------------------------------------------------------------------------

GOOD_PEERS = [
    "p",
    "alice",
    "a" * 128,
    "-peer",
    "_peer",
    "peer.x",
    "ada@example.com",
    "r\u00f8om",
    "\u65e5\u672c",
    "\U0001f469\u200d\U0001f4bb",
    "$where",
    "a/b",
    "team-room!",
]
BAD_PEERS = [
    "",
    None,
    5,
    "a" * 129,
    "a b",
    " a",
    "a\t",
    "a\n",
    "a\r",
    "a\x00",
    "a\x1f",
    "a\x7f",
    "a\x85",
    "a\x9f",
    "a\u00a0",
    "a\u2028",
    "a\u3000",
    "a\ud800",
]


@pytest.mark.parametrize("value", GOOD_PEERS)
def test_peer_ids_accepted_everywhere(value: str) -> None:
    assert MAX_PEER_ID_LENGTH == 128
    assert validate_peer_id(value) == value
    assert store_ids.validate_peer_id(value) == value
    body = CreateBroadcaster.model_validate({"id": value, "displayName": "B", "device": {"name": "x"}})
    assert body.id == value


@pytest.mark.parametrize("value", BAD_PEERS)
def test_peer_ids_refused_everywhere(value: object) -> None:
    assert not is_valid_peer_id(value)
    with pytest.raises(InvalidId):
        validate_peer_id(value)
    with pytest.raises(InvalidId):
        store_ids.validate_peer_id(value)
    with pytest.raises(ValidationError) as info:
        CreateBroadcaster.model_validate({"id": value, "displayName": "B", "device": {"name": "x"}})
    assert info.value.errors()[0]["loc"] == ("id",)

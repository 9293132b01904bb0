"""The rules for the ids clients choose: room ids and peer ids, defined once.

Room id
    1-64 characters of ``A-Z a-z 0-9 _ -``, starting with a letter or digit
    (mediasoup-demo's random lowercase ids fit). A room id becomes part of object
    keys (``recordings/<roomId>/...``, ``chat/<roomId>/...``), of chat and meeting
    records and of URLs, so it is the narrowest rule all of them accept. It is
    checked where a room id enters: the signaling WebSocket upgrade (400), the
    broadcaster API and every REST route with ``{roomId}`` (400), the chat and
    meeting services (:mod:`control.store.ids` re-exports it) and the object key
    builders (:mod:`control.storage.keys`).

Display name
    At most :data:`MAX_DISPLAY_NAME_LENGTH` (256) characters: one limit for the
    signaling ``join``, chat senders and meeting records, so a name signaling
    accepts is never refused further on (a long name used to drop that join from
    the meeting record).

Peer id
    1-128 characters, none of them whitespace or a control character (C0, DEL,
    C1) or a lone surrogate. Peer ids never go into object keys or paths; they
    are stored as values (chat senders, meeting participants). Checked by the
    signaling upgrade, the broadcaster API (a broadcaster's ``id``) and the chat
    and meeting services, so a peer signaling accepts can always chat.

:class:`InvalidId` is a :class:`~control.errors.BadRequest` (400) whose ``code`` is
``invalid_<field>`` (``invalid_room_id``, ``invalid_peer_id``): raised anywhere, the
REST error middleware answers it as is.

Nothing here imports the rest of ``control`` but :mod:`control.errors`: every layer may import it.
"""

from __future__ import annotations

import re

from control.errors import BadRequest

__all__ = [
    "MAX_DISPLAY_NAME_LENGTH",
    "MAX_PEER_ID_LENGTH",
    "MAX_ROOM_ID_LENGTH",
    "PEER_ID_RE",
    "PEER_ID_RULE",
    "ROOM_ID_RE",
    "ROOM_ID_RULE",
    "InvalidId",
    "is_valid_peer_id",
    "is_valid_room_id",
    "snake_case",
    "validate_peer_id",
    "validate_room_id",
]

MAX_ROOM_ID_LENGTH = 64
MAX_PEER_ID_LENGTH = 128
#: The longest display name, everywhere (signaling, chat, meetings).
MAX_DISPLAY_NAME_LENGTH = 256

ROOM_ID_RULE = f"1-{MAX_ROOM_ID_LENGTH} characters of A-Z a-z 0-9 _ -, starting with a letter or digit"
PEER_ID_RULE = f"1-{MAX_PEER_ID_LENGTH} printable characters (no whitespace or control characters)"

#: Use with ``fullmatch`` (``$`` would let a trailing newline through).
ROOM_ID_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_ROOM_ID_LENGTH - 1}}}")
#: Use with ``fullmatch``. ``\s`` (Unicode) also covers U+0085, U+2028, U+2029...
PEER_ID_RE = re.compile(rf"[^\s\x00-\x1f\x7f-\x9f\ud800-\udfff]{{1,{MAX_PEER_ID_LENGTH}}}")


class InvalidId(BadRequest, ValueError):
    """A client-supplied id is malformed; ``field`` names what it was, ``code`` is
    ``invalid_<field in snake case>`` (``roomId`` -> ``invalid_room_id``)."""

    def __init__(self, field: str, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code or f"invalid_{snake_case(field)}", field=field)


def snake_case(name: str) -> str:
    """``roomId`` -> ``room_id``, ``file.key`` -> ``file_key`` (error codes from field names)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower().replace(".", "_")


def is_valid_room_id(value: object) -> bool:
    return isinstance(value, str) and ROOM_ID_RE.fullmatch(value) is not None


def is_valid_peer_id(value: object) -> bool:
    return isinstance(value, str) and PEER_ID_RE.fullmatch(value) is not None


def _check(value: object, field: str, valid: bool, rule: str) -> str:
    if valid:
        return value  # type: ignore[return-value]
    if not isinstance(value, str) or not value:
        raise InvalidId(field, f"{field} is required: {rule}")
    raise InvalidId(field, f"{field} must be {rule}")


def validate_room_id(value: object, field: str = "roomId") -> str:
    """``value`` if it is an acceptable room id, else :class:`InvalidId`.

    The message states the rule and never echoes the value."""
    return _check(value, field, is_valid_room_id(value), ROOM_ID_RULE)


def validate_peer_id(value: object, field: str = "peerId") -> str:
    """``value`` if it is an acceptable peer id, else :class:`InvalidId`."""
    return _check(value, field, is_valid_peer_id(value), PEER_ID_RULE)

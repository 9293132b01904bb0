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

Peer id
    1-128 characters, none of them whitespace or a control character (C0, DEL,
    C1) or a lone surrogate. Peer ids never go into object keys or paths; they
    are stored as values (chat senders, meeting participants). Checked by the
    signaling upgrade, the broadcaster API (a broadcaster's ``id``) and the chat
    and meeting services, so a peer signaling accepts can always chat.

:class:`InvalidId` is a :class:`~control.errors.BadRequest` (400) whose ``code`` is
``invalid_<field>`` (``invalid_room_id``, ``invalid_peer_id``): raised anywhere, the
REST error middleware answers it as is.

Display name
    At most :data:`MAX_DISPLAY_NAME_LENGTH` (256) characters, none of them a control
    character, a line separator, a bidirectional override or a lone surrogate
    (:data:`DISPLAY_NAME_RULE`): one rule for the signaling ``join`` and
    ``changeDisplayName``, chat senders and meeting records, so a name signaling
    accepts is never refused further on, and no name reaches another peer's screen
    with characters that rewrite what is around it.

Nothing here imports the rest of ``control`` but :mod:`control.errors`: every layer may import it.
"""

from __future__ import annotations

import re

from control.errors import BadRequest

__all__ = [
    "DISPLAY_NAME_FORBIDDEN_RE",
    "DISPLAY_NAME_RULE",
    "MAX_DISPLAY_NAME_LENGTH",
    "MAX_PEER_ID_LENGTH",
    "MAX_ROOM_ID_LENGTH",
    "PEER_ID_RE",
    "PEER_ID_RULE",
    "ROOM_ID_RE",
    "ROOM_ID_RULE",
    "InvalidId",
    "is_valid_display_name",
    "is_valid_peer_id",
    "is_valid_room_id",
    "snake_case",
    "validate_display_name",
    "validate_peer_id",
    "validate_room_id",
]

MAX_ROOM_ID_LENGTH = 64
MAX_PEER_ID_LENGTH = 128

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


# -- display names ----------------------------------------------------------------------

#: The longest display name, everywhere (signaling, chat, meetings, broadcasters).
MAX_DISPLAY_NAME_LENGTH = 256
DISPLAY_NAME_RULE = (
    f"at most {MAX_DISPLAY_NAME_LENGTH} characters on one line, without control characters, "
    "bidirectional overrides or unpaired surrogates"
)
#: Characters no display name may hold: C0 and C1 controls (NUL, CR, LF, ESC...), DEL,
#: the Unicode line and paragraph separators, the bidirectional marks, embeddings,
#: overrides and isolates (a name that reverses the text after it), lone surrogates.
DISPLAY_NAME_FORBIDDEN_RE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def is_valid_display_name(value: object) -> bool:
    """A display name (empty allowed: whoever requires one checks that)."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_DISPLAY_NAME_LENGTH
        and DISPLAY_NAME_FORBIDDEN_RE.search(value) is None
    )


def validate_display_name(value: object, field: str = "displayName") -> str:
    """``value`` if it follows :data:`DISPLAY_NAME_RULE`, else :class:`InvalidId`
    (code ``invalid_display_name``; the message never echoes the value)."""
    if is_valid_display_name(value):
        return value  # type: ignore[return-value]
    raise InvalidId(field, f"{field} must be {DISPLAY_NAME_RULE}", code="invalid_display_name")

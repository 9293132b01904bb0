"""Identifiers: server-generated sortable ids, and validation of client-supplied ones.

Message and meeting ids are ULIDs (https://github.com/ulid/spec): 26 characters of
Crockford base32 encoding 48 bits of Unix time in milliseconds then 80 bits of
randomness. They sort (as strings) in creation order and are unique without
coordination: within one process :func:`new_id` is strictly increasing (a second id
in the same millisecond increments the random part, and a clock that steps back does
not make ids go back), across processes the 80 random bits keep them apart.

Room and peer ids come from clients: :func:`validate_room_id` and
:func:`validate_peer_id` (and :class:`InvalidId`) are the project-wide rules of
:mod:`control.ids`, re-exported here (room ids: 1-64 characters of ``A-Z a-z 0-9 _ -``
starting with a letter or digit; peer ids: 1-128 printable characters).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

from control.ids import MAX_PEER_ID_LENGTH, MAX_ROOM_ID_LENGTH, InvalidId, validate_peer_id, validate_room_id

__all__ = [
    "ID_RE",
    "MAX_PEER_ID_LENGTH",
    "MAX_ROOM_ID_LENGTH",
    "InvalidId",
    "datetime_to_ms",
    "id_datetime",
    "id_ms",
    "is_valid_id",
    "ms_to_datetime",
    "new_id",
    "new_id_ms",
    "validate_id",
    "validate_peer_id",
    "validate_room_id",
]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, no I L O U
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
_TIME_MAX = (1 << 48) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: A ULID: the first character is at most 7 (128 bits in 26 base32 digits).
ID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def _encode(value: int) -> str:
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


class _Generator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_random = 0

    def next(self) -> tuple[int, str]:
        now = time.time_ns() // 1_000_000
        with self._lock:
            if now > self._last_ms:
                ms, rnd = now, secrets.randbits(_RANDOM_BITS)
            else:  # same millisecond, or the clock stepped back: keep increasing
                ms, rnd = self._last_ms, self._last_random + 1
                if rnd > _RANDOM_MAX:
                    ms, rnd = ms + 1, secrets.randbits(_RANDOM_BITS)
            self._last_ms, self._last_random = ms, rnd
        return ms, _encode((min(ms, _TIME_MAX) << _RANDOM_BITS) | rnd)


_generator = _Generator()


def new_id_ms() -> tuple[int, str]:
    """A new id and its millisecond timestamp (use it as the record's creation time)."""
    return _generator.next()


def new_id() -> str:
    """A new id: unique, and greater than every id this process made before."""
    return _generator.next()[1]


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def id_ms(value: str) -> int:
    """The millisecond timestamp in an id."""
    t = 0
    for ch in value[:10]:
        t = (t << 5) | _DECODE[ch]
    return t


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since the Unix epoch -> an aware UTC datetime (exact)."""
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(value: datetime) -> int:
    """An aware (or naive = UTC) datetime -> milliseconds since the epoch (truncated)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def id_datetime(value: str) -> datetime:
    return ms_to_datetime(id_ms(value))


def validate_id(value: object, field: str = "id") -> str:
    if not is_valid_id(value):
        raise InvalidId(field, f"{field} must be a 26-character id as returned by the server")
    return value  # type: ignore[return-value]

"""Object keys: built from validated ids only.

Layout (the same in S3 and in the local directory store, where a key is a path
relative to the store's root):

``recordings/<roomId>/<filename>``
    A room's recordings (``recording_key``).
``chat/<roomId>/<fileId>/<filename>``
    Files attached to chat messages (``chat_file_key``); ``fileId`` is generated
    by the server (:func:`new_file_id`), so two uploads of ``notes.pdf`` never
    collide and nobody can guess another upload's key.

Every segment must match :data:`ID_RE` (ids) or :data:`FILENAME_RE`
(filenames): ASCII letters, digits, ``_``, ``-`` (and ``.`` inside file names),
starting with a letter or digit. The room id segment follows the project's room id
rule (:mod:`control.ids`, at most 64 characters), the one signaling, the chat and
the REST routes apply: every room that can exist can store its files. So there
is no ``..``, no ``/`` or ``\\``, no control character (a trailing newline
included: patterns are matched whole), no leading dot, no percent-encoding or
unicode look-alike that could escape a prefix or inject a key.
:func:`safe_filename` turns a user's file name into one that passes.
"""

from __future__ import annotations

import re
import secrets
import unicodedata

from control.ids import InvalidId, validate_room_id

__all__ = [
    "CHAT_PREFIX",
    "FILENAME_RE",
    "ID_RE",
    "RECORDINGS_PREFIX",
    "InvalidKey",
    "chat_file_key",
    "new_file_id",
    "recording_key",
    "safe_filename",
    "validate_filename",
    "validate_id",
    "validate_key",
]

RECORDINGS_PREFIX = "recordings"
CHAT_PREFIX = "chat"

#: Ids in keys (file ids...): 1-128 characters; room ids: :func:`control.ids.validate_room_id`.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
#: File names: 1-200 characters, dots allowed after the first character, never ``..``.
FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: A whole key: at most 1024 bytes (S3's limit), segments as above.
MAX_KEY_LENGTH = 1024


class InvalidKey(InvalidId):
    """An id, file name or key that cannot be part of an object name (400 ``invalid_key``)."""

    def __init__(self, message: str, field: str = "key") -> None:
        super().__init__(field, message, code="invalid_key")


def validate_id(value: object, what: str = "id") -> str:
    """``value`` if it is a valid id segment (file ids...), else :class:`InvalidKey`.

    Room ids: :func:`_room_segment` (the narrower project-wide rule)."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidKey(
            f"invalid {what} {_show(value)}: 1-128 characters of A-Z a-z 0-9 _ -, starting with a letter or digit"
        )
    return value


def _room_segment(value: object) -> str:
    """``value`` if it is a valid room id (the one rule of :func:`control.ids.validate_room_id`),
    else :class:`InvalidKey`: a key builder refuses a key, whatever part of it is wrong."""
    try:
        return validate_room_id(value)
    except InvalidId as exc:
        raise InvalidKey(f"invalid room id in an object key: {exc.message}") from None


def validate_filename(value: object) -> str:
    """``value`` if it is a valid file name, else :class:`InvalidKey`."""
    if not isinstance(value, str) or not FILENAME_RE.fullmatch(value) or ".." in value:
        raise InvalidKey(
            f"invalid file name {_show(value)}: 1-200 characters of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit, no '..'"
        )
    return value


def validate_key(key: object) -> str:
    """``key`` if every segment is a valid id or file name (what the builders produce)."""
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_LENGTH:
        raise InvalidKey(f"invalid object key {_show(key)}")
    for segment in key.split("/"):
        if not FILENAME_RE.fullmatch(segment) or ".." in segment:
            raise InvalidKey(f"invalid object key {_show(key)}: bad segment {_show(segment)}")
    return key


def recording_key(room_id: str, filename: str) -> str:
    """``recordings/<roomId>/<filename>``."""
    return f"{RECORDINGS_PREFIX}/{_room_segment(room_id)}/{validate_filename(filename)}"


def chat_file_key(room_id: str, file_id: str, filename: str) -> str:
    """``chat/<roomId>/<fileId>/<filename>`` (``file_id`` from :func:`new_file_id`)."""
    return f"{CHAT_PREFIX}/{_room_segment(room_id)}/{validate_id(file_id, 'file id')}/{validate_filename(filename)}"


def new_file_id() -> str:
    """A fresh unguessable id for a chat file (22 URL-safe characters)."""
    while True:
        token = secrets.token_urlsafe(16)
        if ID_RE.fullmatch(token):  # token_urlsafe may start with '-' or '_'
            return token


def safe_filename(name: str, default: str = "file") -> str:
    """A user's file name made valid: accents stripped, other characters -> ``_``.

    ``"../Relevé août.PDF"`` -> ``"Releve_aout.PDF"``, ``"日本語.pdf"`` -> ``"file.pdf"``.
    """
    name = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    name = re.sub(r"\.{2,}", ".", name)
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    stem, ext = stem.strip("._-"), ext.strip("._-")[:16]
    stem = stem[: 200 - len(ext) - 1].rstrip("._-") or default
    name = f"{stem}.{ext}" if ext else stem
    return name if FILENAME_RE.fullmatch(name) and ".." not in name else default


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

"""The object-store contract shared by :class:`~control.storage.s3.S3Storage` and
:class:`~control.storage.local.LocalStorage`, its value types and its errors."""

from __future__ import annotations

import fnmatch
import hashlib
import mimetypes
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from control.errors import ParleyError
from control.storage.keys import InvalidKey

__all__ = [
    "CHAT_ALLOWED_CONTENT_TYPES",
    "MAX_PRESIGN_EXPIRY",
    "IntegrityError",
    "InvalidKey",  # re-exported from control.storage.keys
    "ObjectInfo",
    "ObjectRef",
    "ObjectStore",
    "PresignedUpload",
    "Progress",
    "StorageAuthError",
    "StorageError",
    "StorageUnavailable",
    "UploadPolicy",
    "UploadRejected",
    "file_digests",
    "guess_content_type",
]

#: Content types a chat file upload may declare (``fnmatch`` patterns).
CHAT_ALLOWED_CONTENT_TYPES: tuple[str, ...] = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "audio/*",
    "video/mp4",
    "video/webm",
    "application/pdf",
    "text/plain",
    "text/csv",
    "text/markdown",
    "application/zip",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.*",
    "application/vnd.oasis.opendocument.*",
)

#: SigV4's upper limit for presigned URLs (7 days).
MAX_PRESIGN_EXPIRY = 7 * 24 * 3600

Progress = Callable[[int], None]
"""Called (from a transfer thread) with the number of bytes just sent."""


# --------------------------------------------------------------------------- errors


class StorageError(ParleyError):
    """An object-store operation failed (500 ``storage_error``). ``retryable``: worth
    trying again later."""

    status = 500
    default_code = "storage_error"
    retryable = False


class StorageUnavailable(StorageError):
    """The server could not be reached or answered 5xx; try again later (503)."""

    status = 503
    default_code = "storage_unavailable"
    retryable = True


class StorageAuthError(StorageError):
    """The server refused the credentials or the access (403): a configuration error,
    so 500 to a client."""

    default_code = "storage_misconfigured"


class IntegrityError(StorageError):
    """The stored object does not match the local file (size or checksum)."""

    default_code = "integrity_error"
    retryable = True


class UploadRejected(StorageError, ValueError):
    """A presigned-upload request outside the policy (size, content type): 400."""

    status = 400
    default_code = "upload_rejected"


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """What an upload produced: enough for a consumer to fetch and check the object."""

    backend: Literal["s3", "local"]
    bucket: str
    key: str
    size: int
    content_type: str
    etag: str | None = None
    sha256: str | None = None
    duration: float | None = None  # seconds, for media

    def to_event(self) -> dict[str, Any]:
        """The camelCase ``object`` of a ``recording.completed`` event."""
        return {
            "storage": self.backend,
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "contentType": self.content_type,
            "duration": self.duration,
            "etag": self.etag,
            "sha256": self.sha256,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """``head()``: size, content type, ETag and user metadata of a stored object."""

    key: str
    size: int
    content_type: str
    etag: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PresignedUpload:
    """A URL a client PUTs one file to, with exactly these headers, before ``expires_at``.

    The signature covers ``Content-Type`` and ``Content-Length``: a body of another
    size or type is refused (403) by the server.
    """

    url: str
    method: str
    key: str
    headers: dict[str, str]
    expires_at: float  # unix time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class UploadPolicy:
    """Limits on client uploads (presigned PUT): a maximum size and allowed types."""

    max_bytes: int
    allowed_types: tuple[str, ...] = CHAT_ALLOWED_CONTENT_TYPES

    def check(self, size: int, content_type: str) -> None:
        if not isinstance(size, int) or size < 0:
            raise UploadRejected(f"invalid size {size!r}")
        if size > self.max_bytes:
            raise UploadRejected(f"file too large: {size} bytes, the limit is {self.max_bytes}")
        ct = (content_type or "").split(";", 1)[0].strip().lower()
        if not ct or not any(fnmatch.fnmatchcase(ct, pattern) for pattern in self.allowed_types):
            raise UploadRejected(f"content type {content_type!r} is not allowed")


def guess_content_type(path: str | Path) -> str:
    ct, _ = mimetypes.guess_type(str(path))
    return ct or "application/octet-stream"


def file_digests(path: Path, part_size: int | None = None) -> tuple[int, str, list[bytes]]:
    """``(size, sha256 hex, [md5 digest of each part])`` of a file, in one read."""
    sha = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    chunk = part_size or (8 << 20)
    part_md5 = hashlib.md5()
    in_part = 0
    with open(path, "rb") as f:
        while block := f.read(min(chunk - in_part, 1 << 20)):
            sha.update(block)
            part_md5.update(block)
            size += len(block)
            in_part += len(block)
            if in_part == chunk:
                parts.append(part_md5.digest())
                part_md5, in_part = hashlib.md5(), 0
    if in_part or not parts:
        parts.append(part_md5.digest())
    return size, sha.hexdigest(), parts


# --------------------------------------------------------------------------- contract


class ObjectStore(ABC):
    """One object store for the process (S3/MinIO, or a local directory): put, get,
    head, delete and presign objects by key, nothing more.

    Every method is a coroutine that never blocks the event loop. Keys are built by
    the callers with :mod:`control.storage.keys` (validated); a bad key raises
    :class:`InvalidKey`. Durable uploads are the :class:`~control.storage.uploads.UploadQueue`
    built on top of a store (``UploadQueue(store, journal_dir)``); what a key means
    (a recording, a chat file) is the callers' business.
    """

    backend: Literal["s3", "local"]
    bucket: str
    default_expiry: int = 3600
    #: The policy a presigned PUT applies unless given another (chat files today).
    chat_policy: UploadPolicy = UploadPolicy(max_bytes=25 << 20)

    # ---- lifecycle
    async def start(self) -> None:
        """Check the store is usable (bucket ensured); auth errors raise."""
        await self.ensure_bucket()

    async def close(self) -> None:  # noqa: B027 - a no-op unless the backend holds clients or threads
        """Release clients and threads (idempotent)."""

    @abstractmethod
    async def ensure_bucket(self) -> None:
        """Create the bucket if missing (no error if it exists or appears concurrently)."""

    # ---- objects
    @abstractmethod
    async def upload_file(
        self,
        path: str | Path,
        key: str,
        *,
        content_type: str | None = None,
        duration: float | None = None,
        metadata: dict[str, str] | None = None,
        progress: Progress | None = None,
        attempts: int | None = None,
    ) -> ObjectRef:
        """Upload ``path`` to ``key`` and verify it (size and checksum); return its reference.

        Retries with backoff on network and 5xx errors (``attempts`` in all). The local
        file is never modified or deleted. Raises :class:`StorageError` (with
        ``retryable``) when the object could not be stored and verified.
        """

    @abstractmethod
    async def head(self, key: str) -> ObjectInfo | None:
        """The object's info, ``None`` if it does not exist."""

    @abstractmethod
    async def download_file(self, key: str, dest: str | Path) -> Path:
        """Copy the object to ``dest`` (atomically); return ``dest``."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object (no error if it does not exist)."""

    # ---- presigned URLs
    @abstractmethod
    async def presigned_get_url(self, key: str, *, expires_in: int | None = None, filename: str | None = None) -> str:
        """A URL anyone can GET the object from until it expires.

        ``filename``: the browser saves it under this name (Content-Disposition).
        """

    @abstractmethod
    async def presigned_put(
        self,
        key: str,
        *,
        content_type: str,
        size: int,
        expires_in: int | None = None,
        policy: UploadPolicy | None = None,
    ) -> PresignedUpload:
        """A URL a client PUTs exactly ``size`` bytes of ``content_type`` to.

        ``policy`` (default: :attr:`chat_policy`) limits size and type; a request
        outside it raises :class:`UploadRejected` before anything is signed.
        """

    def _expiry(self, expires_in: int | None) -> int:
        value = self.default_expiry if expires_in is None else int(expires_in)
        if not 1 <= value <= MAX_PRESIGN_EXPIRY:
            raise ValueError(f"expiry must be 1..{MAX_PRESIGN_EXPIRY} seconds, not {value}")
        return value

    def describe(self) -> str:
        return f"{self.backend} bucket {self.bucket}"

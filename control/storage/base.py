"""The object-store contract shared by :class:`~control.storage.s3.S3Storage` and
:class:`~control.storage.local.LocalStorage`, its value types and its errors."""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import mimetypes
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from control.storage.keys import InvalidKey, chat_file_key, new_file_id, recording_key, safe_filename

if TYPE_CHECKING:
    from control.storage.uploads import UploadHook, UploadJob, UploadQueue

__all__ = [
    "CHAT_ALLOWED_CONTENT_TYPES",
    "MAX_PRESIGN_EXPIRY",
    "IntegrityError",
    "InvalidKey",  # re-exported from control.storage.keys
    "ObjectInfo",
    "ObjectRef",
    "ObjectStore",
    "PresignedUpload",
    "StorageAuthError",
    "StorageError",
    "StorageUnavailable",
    "UploadPolicy",
    "UploadRejected",
    "Progress",
    "backoff_delays",
    "file_digests",
    "guess_content_type",
    "run_with_retries",
]

#: Content types a chat file upload may declare (``fnmatch`` patterns).
CHAT_ALLOWED_CONTENT_TYPES: tuple[str, ...] = (
    "image/png", "image/jpeg", "image/gif", "image/webp",
    "audio/*", "video/mp4", "video/webm",
    "application/pdf", "text/plain", "text/csv", "text/markdown",
    "application/zip",
    "application/msword", "application/vnd.openxmlformats-officedocument.*",
    "application/vnd.oasis.opendocument.*",
)

#: SigV4's upper limit for presigned URLs (7 days).
MAX_PRESIGN_EXPIRY = 7 * 24 * 3600

Progress = Callable[[int], None]
"""Called (from a transfer thread) with the number of bytes just sent."""


# --------------------------------------------------------------------------- errors


class StorageError(Exception):
    """An object-store operation failed. ``retryable``: worth trying again later."""

    retryable = False


class StorageUnavailable(StorageError):
    """The server could not be reached or answered 5xx; try again later."""

    retryable = True


class StorageAuthError(StorageError):
    """The server refused the credentials or the access (403): a configuration error."""


class IntegrityError(StorageError):
    """The stored object does not match the local file (size or checksum)."""

    retryable = True


class UploadRejected(StorageError, ValueError):
    """A presigned-upload request outside the policy (size, content type)."""


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
            "storage": self.backend, "bucket": self.bucket, "key": self.key, "size": self.size,
            "contentType": self.content_type, "duration": self.duration, "etag": self.etag,
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
    part_md5 = hashlib.md5()  # noqa: S324 - S3's ETag, not security
    in_part = 0
    with open(path, "rb") as f:
        while block := f.read(min(chunk - in_part, 1 << 20)):
            sha.update(block)
            part_md5.update(block)
            size += len(block)
            in_part += len(block)
            if in_part == chunk:
                parts.append(part_md5.digest())
                part_md5, in_part = hashlib.md5(), 0  # noqa: S324
    if in_part or not parts:
        parts.append(part_md5.digest())
    return size, sha.hexdigest(), parts


def backoff_delays(initial: float, maximum: float) -> Any:
    """Exponential backoff with full jitter in [delay/2, delay]: initial, 2x... up to maximum."""
    delay = initial
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(maximum, delay * 2)


# --------------------------------------------------------------------------- contract


class ObjectStore(ABC):
    """One object store for the process (S3/MinIO, or a local directory).

    Every method is a coroutine that never blocks the event loop. Keys come from
    :mod:`control.storage.keys` (validated); a bad key raises :class:`InvalidKey`.
    """

    backend: Literal["s3", "local"]
    bucket: str
    default_expiry: int = 3600
    chat_policy: UploadPolicy = UploadPolicy(max_bytes=25 << 20)
    #: The durable upload queue (``enable_uploads``), or None.
    uploads: UploadQueue | None = None

    # ---- lifecycle
    async def start(self) -> None:
        """Check the store is usable (bucket ensured); auth errors raise."""
        await self.ensure_bucket()

    async def close(self) -> None:
        """Stop the upload queue (jobs stay journaled), release clients and threads."""
        if self.uploads is not None:
            await self.uploads.close()

    # ---- the durable upload queue (control/storage/uploads.py)
    def enable_uploads(self, journal_dir: str | Path, **options: Any) -> UploadQueue:
        """Attach an :class:`UploadQueue` journaled in ``journal_dir``; start it with
        ``await store.uploads.start()`` once the ``on_uploaded`` handlers are set."""
        from control.storage.uploads import UploadQueue

        self.uploads = UploadQueue(self, journal_dir, **options)
        return self.uploads

    async def submit_upload(self, path: str | Path, key: str, **options: Any) -> UploadJob:
        """Queue a durable upload (see :meth:`UploadQueue.submit`): journaled, retried
        until stored and verified, then the ``kind`` handler runs and, with
        ``delete_local=True``, the local file is removed. ``await
        store.uploads.wait(job)`` gives the :class:`ObjectRef`."""
        if self.uploads is None:
            raise StorageError("this store has no upload queue (enable_uploads)")
        return await self.uploads.submit(path, key, **options)

    def on_uploaded(self, kind: str, handler: UploadHook) -> None:
        """Run ``await handler(job, ref)`` once each upload of ``kind`` is confirmed."""
        if self.uploads is None:
            raise StorageError("this store has no upload queue (enable_uploads)")
        self.uploads.on_uploaded(kind, handler)

    @abstractmethod
    async def ensure_bucket(self) -> None:
        """Create the bucket if missing (no error if it exists or appears concurrently)."""

    # ---- objects
    @abstractmethod
    async def upload_file(self, path: str | Path, key: str, *, content_type: str | None = None,
                          duration: float | None = None, metadata: dict[str, str] | None = None,
                          progress: Progress | None = None, attempts: int | None = None) -> ObjectRef:
        """Upload ``path`` to ``key`` and verify it (size and checksum); return its reference.

        Retries with backoff on network and 5xx errors (``attempts`` in all). The local
        file is never modified or deleted. Raises :class:`StorageError` (with
        ``retryable``) when the object could not be stored and verified.
        """

    async def upload_recording(self, path: str | Path, room_id: str, filename: str | None = None, *,
                               content_type: str | None = None, duration: float | None = None,
                               progress: Progress | None = None) -> ObjectRef:
        """Upload a recording to ``recordings/<roomId>/<filename>`` (default: the file's name)."""
        key = recording_key(room_id, filename or Path(path).name)
        return await self.upload_file(path, key, content_type=content_type, duration=duration,
                                      progress=progress)

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
    async def presigned_get_url(self, key: str, *, expires_in: int | None = None,
                                filename: str | None = None) -> str:
        """A URL anyone can GET the object from until it expires.

        ``filename``: the browser saves it under this name (Content-Disposition).
        """

    @abstractmethod
    async def presigned_put(self, key: str, *, content_type: str, size: int,
                            expires_in: int | None = None,
                            policy: UploadPolicy | None = None) -> PresignedUpload:
        """A URL a client PUTs exactly ``size`` bytes of ``content_type`` to.

        ``policy`` (default: :attr:`chat_policy`) limits size and type; a request
        outside it raises :class:`UploadRejected` before anything is signed.
        """

    async def presign_chat_upload(self, room_id: str, filename: str, *, content_type: str,
                                  size: int, expires_in: int | None = None) -> PresignedUpload:
        """A presigned PUT for a chat file at ``chat/<roomId>/<new fileId>/<safe filename>``."""
        self.chat_policy.check(size, content_type)
        key = chat_file_key(room_id, new_file_id(), safe_filename(filename))
        return await self.presigned_put(key, content_type=content_type, size=size,
                                        expires_in=expires_in, policy=self.chat_policy)

    def _expiry(self, expires_in: int | None) -> int:
        value = self.default_expiry if expires_in is None else int(expires_in)
        if not 1 <= value <= MAX_PRESIGN_EXPIRY:
            raise ValueError(f"expiry must be 1..{MAX_PRESIGN_EXPIRY} seconds, not {value}")
        return value

    def describe(self) -> str:
        return f"{self.backend} bucket {self.bucket}"


async def run_with_retries(func: Callable[[], Any], *, attempts: int, initial: float = 0.5,
                           maximum: float = 10.0, what: str = "operation") -> Any:
    """Await ``func()`` up to ``attempts`` times while it raises a retryable StorageError."""
    from loguru import logger

    delays = backoff_delays(initial, maximum)
    for attempt in range(1, attempts + 1):
        try:
            return await func()
        except StorageError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            delay = next(delays)
            logger.warning("{} failed (attempt {}/{}), retrying in {:.1f}s: {}",
                           what, attempt, attempts, delay, exc)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")

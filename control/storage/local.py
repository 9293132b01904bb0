"""The embedded object store: a local directory with the S3 store's interface.

Used when ``MINIO_ENDPOINT`` is unset. The directory (``DATA_DIR/recordings``)
stands for the bucket: an object's key is its path relative to it
(``recordings/<roomId>/<file>``, ``chat/<roomId>/<fileId>/<file>``). Content
type, size, ETag (MD5) and sha256 live next to it in ``.meta/<key>.json``
(no valid key starts with a dot, so nothing collides).

Writes go to a temporary file in the destination directory, are fsync'ed and
renamed into place, then re-read and checked (size and sha256). File I/O runs
in threads (``asyncio.to_thread``).

Presigned URLs are HMAC-SHA256-signed URLs of this app
(``/api/storage/objects/<key>?expires=...&signature=...``, served by
:mod:`control.storage.routes`) with the same rules as S3's: a PUT must carry
exactly the signed ``Content-Type`` and ``Content-Length``. ``base_url`` is the
app's public URL; the signing key is random per process unless given.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlencode

from control.retry import run_with_retries
from control.storage.base import (
    IntegrityError,
    ObjectInfo,
    ObjectRef,
    ObjectStore,
    PresignedUpload,
    Progress,
    StorageError,
    StorageUnavailable,
    UploadPolicy,
    guess_content_type,
)
from control.storage.keys import safe_filename, validate_key

__all__ = ["URL_PREFIX", "LocalStorage", "SignatureInvalid"]

#: Where the app serves the local store's presigned URLs.
URL_PREFIX = "/api/storage/objects"
_COPY_CHUNK = 1 << 20


class SignatureInvalid(StorageError):
    """A presigned URL of the local store that is forged, altered or expired (403)."""

    status = 403
    default_code = "invalid_signature"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LocalStorage(ObjectStore):
    """A directory that behaves like a bucket. See the module docstring."""

    backend = "local"

    def __init__(
        self,
        root: str | Path,
        *,
        bucket: str = "recordings",
        base_url: str = "http://127.0.0.1:3000",
        secret: bytes | None = None,
        default_expiry: int = 3600,
        chat_policy: UploadPolicy | None = None,
        upload_attempts: int = 2,
    ) -> None:
        self.root = Path(root).resolve()
        self.bucket = bucket
        self.base_url = base_url.rstrip("/")
        self._secret = secret or secrets.token_bytes(32)
        self.default_expiry = default_expiry
        if chat_policy is not None:
            self.chat_policy = chat_policy
        self.upload_attempts = max(1, upload_attempts)

    # ------------------------------------------------------------------ paths

    def path_for(self, key: str) -> Path:
        """The file that holds ``key`` (validated; always inside :attr:`root`)."""
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise StorageError(f"key {key!r} escapes the store")  # unreachable with valid keys
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / ".meta" / f"{validate_key(key)}.json"

    # ------------------------------------------------------------------ bucket

    async def ensure_bucket(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    # ------------------------------------------------------------------ objects

    def _store_sync(
        self,
        src: Path,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        progress: Progress | None,
        duration: float | None,
        *,
        move: bool = False,
    ) -> ObjectRef:
        dest = self.path_for(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
        try:
            if move:  # a file we own already (a PUT body): rename, then hash
                os.replace(src, tmp)
                with open(tmp, "rb") as f:
                    while block := f.read(_COPY_CHUNK):
                        sha.update(block)
                        md5.update(block)
                        size += len(block)
            else:
                with open(src, "rb") as fin, open(tmp, "wb") as fout:
                    while block := fin.read(_COPY_CHUNK):
                        fout.write(block)
                        sha.update(block)
                        md5.update(block)
                        size += len(block)
                        if progress:
                            progress(len(block))
                    fout.flush()
                    os.fsync(fout.fileno())
            # verify what is on disk before it becomes visible
            check = hashlib.sha256()
            with open(tmp, "rb") as f:
                while block := f.read(_COPY_CHUNK):
                    check.update(block)
            if check.hexdigest() != sha.hexdigest() or tmp.stat().st_size != size:
                raise IntegrityError(f"stored copy of {key!r} does not match {src}")
            etag = md5.hexdigest()
            meta = {
                "content_type": content_type,
                "size": size,
                "etag": etag,
                "sha256": sha.hexdigest(),
                "metadata": dict(metadata),
                "stored_at": time.time(),
            }
            meta_path = self._meta_path(key)
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            meta_tmp = meta_path.with_name(f".{meta_path.name}.{secrets.token_hex(4)}.part")
            meta_tmp.write_text(json.dumps(meta))
            os.replace(meta_tmp, meta_path)
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return ObjectRef(
            backend="local",
            bucket=self.bucket,
            key=key,
            size=size,
            content_type=content_type,
            etag=etag,
            sha256=sha.hexdigest(),
            duration=duration,
        )

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
        key = validate_key(key)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such file to upload: {path}")
        ct = content_type or guess_content_type(path)
        meta = {str(k).lower(): str(v) for k, v in (metadata or {}).items()}

        async def once() -> ObjectRef:
            try:
                return await asyncio.to_thread(self._store_sync, path, key, ct, meta, progress, duration)
            except (StorageError, FileNotFoundError):
                raise
            except OSError as exc:  # disk full, permissions...: worth another try later
                raise StorageUnavailable(f"storing {key!r} in {self.root}: {exc}") from exc

        await self.ensure_bucket()
        return await run_with_retries(
            once, retry_on=StorageError, attempts=attempts or self.upload_attempts, what=f"local store of {key}"
        )

    async def put_file(self, tmp_path: Path, key: str, content_type: str) -> ObjectRef:
        """Move a received file (a presigned PUT's body) into place as ``key``."""
        return await asyncio.to_thread(
            self._store_sync, tmp_path, validate_key(key), content_type, {}, None, None, move=True
        )

    def _head_sync(self, key: str) -> ObjectInfo | None:
        path = self.path_for(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        try:
            meta = json.loads(self._meta_path(key).read_text())
        except (FileNotFoundError, ValueError):
            meta = {}
        return ObjectInfo(
            key=key,
            size=size,
            content_type=meta.get("content_type") or guess_content_type(path),
            etag=meta.get("etag"),
            metadata={**meta.get("metadata", {}), **({"sha256": meta["sha256"]} if "sha256" in meta else {})},
        )

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        return await asyncio.to_thread(self._head_sync, key)

    async def download_file(self, key: str, dest: str | Path) -> Path:
        src = self.path_for(key)
        dest = Path(dest)

        def copy() -> Path:
            tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, dest)
            except FileNotFoundError:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                if not src.exists():
                    raise StorageError(f"no such object {key!r}") from None
                raise
            return dest

        return await asyncio.to_thread(copy)

    async def delete(self, key: str) -> None:
        path, meta = self.path_for(key), self._meta_path(key)

        def remove() -> None:
            for p in (path, meta):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

        await asyncio.to_thread(remove)

    # ------------------------------------------------------------------ presigned URLs

    def _signature(self, method: str, key: str, expires: int, params: Mapping[str, str]) -> str:
        text = "\n".join([method, key, str(expires)] + [f"{k}={params[k]}" for k in sorted(params)])
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def _url(self, method: str, key: str, expiry: int, params: dict[str, str]) -> tuple[str, int]:
        expires = int(time.time()) + expiry
        query = {**params, "expires": str(expires), "signature": self._signature(method, key, expires, params)}
        return f"{self.base_url}{URL_PREFIX}/{quote(key)}?{urlencode(query)}", expires

    def verify_signature(self, method: str, key: str, query: Mapping[str, str]) -> dict[str, str]:
        """Check a presigned URL's query; return its signed parameters or raise
        :class:`SignatureInvalid`."""
        validate_key(key)
        try:
            expires = int(query["expires"])
            signature = query["signature"]
        except (KeyError, ValueError):
            raise SignatureInvalid("missing or malformed signature") from None
        params = {k: v for k, v in query.items() if k not in ("expires", "signature")}
        expected = self._signature(method, key, expires, params)
        if not hmac.compare_digest(expected, signature):
            raise SignatureInvalid("signature does not match")
        if expires < time.time():
            raise SignatureInvalid("URL expired")
        return params

    async def presigned_get_url(self, key: str, *, expires_in: int | None = None, filename: str | None = None) -> str:
        validate_key(key)
        params = {"filename": safe_filename(filename)} if filename else {}
        return self._url("GET", key, self._expiry(expires_in), params)[0]

    async def presigned_put(
        self,
        key: str,
        *,
        content_type: str,
        size: int,
        expires_in: int | None = None,
        policy: UploadPolicy | None = None,
    ) -> PresignedUpload:
        validate_key(key)
        (policy or self.chat_policy).check(size, content_type)
        url, expires = self._url(
            "PUT", key, self._expiry(expires_in), {"content-type": content_type, "content-length": str(size)}
        )
        await self.ensure_bucket()
        return PresignedUpload(
            url=url,
            method="PUT",
            key=key,
            headers={"Content-Type": content_type, "Content-Length": str(size)},
            expires_at=float(expires),
        )

    def describe(self) -> str:
        return f"local directory {self.root}"

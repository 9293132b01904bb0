"""S3-compatible object storage (MinIO in production) with boto3.

One boto3 client and one s3transfer ``TransferManager`` per store (created lazily
in a storage thread), made from one boto3 session for the process: botocore parses its
JSON models (S3's service model, endpoint rules, partitions) once per session, in C
with the GIL held, up to ~65 ms at a stretch here, and the event loop waits for the GIL
meanwhile; a session of its own per store parsed them again for each (every server a
test starts). :func:`load_models` parses them ahead, before a loop runs.
Every boto3 call runs in this store's thread pool, never on the event loop.

- Path-style addressing (``http://host:9000/bucket/key``): MinIO and SeaweedFS
  need it. ``https://`` endpoints verify certificates with the system/certifi
  CAs, or ``AWS_CA_BUNDLE`` (botocore reads it) for a private CA.
- Uploads: s3transfer's multipart upload (``part_size``, ``concurrency``) above
  ``part_size``; the object is then verified with ``HeadObject``: size, the
  ETag (S3's MD5, or MD5-of-part-MD5s ``-N`` for multipart, recomputed from the
  local file with the same part size) and our ``x-amz-meta-sha256``.
- Retries: botocore's ``standard`` mode retries each request on connection errors,
  throttling and 5xx; :meth:`upload_file` retries a whole failed upload with
  exponential backoff; the upload queue (``UploadQueue.submit``) keeps retrying later.
- Errors become :class:`StorageAuthError` (403, bad keys: with the S3 error code
  and the access key, never the secret), :class:`StorageUnavailable` (network,
  5xx: retryable) or :class:`StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger

from control.retry import run_with_retries
from control.storage.base import (
    IntegrityError,
    ObjectInfo,
    ObjectRef,
    ObjectStore,
    PresignedUpload,
    Progress,
    StorageAuthError,
    StorageError,
    StorageUnavailable,
    UploadPolicy,
    file_digests,
    guess_content_type,
)
from control.storage.keys import safe_filename, validate_key

__all__ = ["S3Storage"]

T = TypeVar("T")

_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "InvalidSecurity",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
    "Forbidden",
}
_RETRYABLE_CODES = {
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "OperationAborted",
    "NoSuchUpload",
}
_ETAG_RE = re.compile(r"^[0-9a-f]{32}(-[0-9]+)?$")

#: The process's boto3 session (its botocore loader caches the parsed models), and the
#: lock its use takes: a boto3 session is not thread-safe, the clients it makes are.
_SESSION: Any = None
_SESSION_LOCK = threading.Lock()


def _client_from_shared_session(**kwargs: Any) -> Any:
    """``boto3.session.Session().client("s3", **kwargs)`` from the process's one session."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            import boto3

            _SESSION = boto3.session.Session()
        return _SESSION.client("s3", **kwargs)


def load_models() -> None:
    """Parse botocore's S3 models now, in the calling thread (a client that is never
    used: no request is sent). For a process that starts stores while its event loop
    runs and does not want the first one to hold the GIL that long."""
    _client_from_shared_session(
        endpoint_url="http://127.0.0.1:9", aws_access_key_id="-", aws_secret_access_key="-", region_name="us-east-1"
    ).close()


class S3Storage(ObjectStore):
    """Object storage on an S3-compatible server. See the module docstring."""

    backend = "s3"

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        region: str = "us-east-1",
        part_size: int = 16 << 20,
        concurrency: int = 4,
        default_expiry: int = 3600,
        chat_policy: UploadPolicy | None = None,
        verify: bool | str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        request_attempts: int = 3,
        upload_attempts: int = 4,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
    ) -> None:
        if part_size < 5 << 20:
            raise ValueError("part_size must be at least 5 MiB (S3's minimum part size)")
        self.endpoint = endpoint.rstrip("/")
        self.access_key = access_key
        self._secret_key = secret_key
        self.bucket = bucket
        self.region = region
        self.part_size = part_size
        self.concurrency = max(1, concurrency)
        self.default_expiry = default_expiry
        if chat_policy is not None:
            self.chat_policy = chat_policy
        self.upload_attempts = max(1, upload_attempts)
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._verify = verify
        self._timeouts = (connect_timeout, read_timeout)
        self._request_attempts = max(1, request_attempts)
        self._client_lock = threading.Lock()
        self._client: Any = None
        self._manager: Any = None
        self._executor = ThreadPoolExecutor(max_workers=max(4, self.concurrency), thread_name_prefix="parley-s3")
        self._bucket_ready = False
        self._bucket_lock: asyncio.Lock | None = None
        self._inflight: set[Any] = set()
        self._closed = False

    # ------------------------------------------------------------------ plumbing

    def _clients(self) -> tuple[Any, Any]:
        """The process's boto3 client and TransferManager (created on first use)."""
        with self._client_lock:
            if self._client is None:
                if self._closed:
                    raise StorageError("the S3 store is closed")
                from boto3.s3.transfer import TransferConfig, create_transfer_manager
                from botocore.config import Config

                connect_timeout, read_timeout = self._timeouts
                config = Config(
                    region_name=self.region,
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                    retries={"mode": "standard", "max_attempts": self._request_attempts},
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                    max_pool_connections=max(10, self.concurrency * 2 + 4),
                    # Integrity is checked end to end by the ETag/size/sha256 check after
                    # each upload; "when_required" keeps older S3-compatible servers happy.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    user_agent_extra="parley",
                )
                client = _client_from_shared_session(
                    endpoint_url=self.endpoint,
                    aws_access_key_id=self.access_key,
                    aws_secret_access_key=self._secret_key,
                    config=config,
                    verify=self._verify,
                )
                self._manager = create_transfer_manager(
                    client,
                    TransferConfig(
                        multipart_threshold=self.part_size,
                        multipart_chunksize=self.part_size,
                        max_concurrency=self.concurrency,
                        use_threads=True,
                    ),
                )
                self._client = client
            return self._client, self._manager

    async def _run(self, func: Callable[..., T], *args: Any, what: str) -> T:
        """Run a blocking boto3 call in the storage threads; map its errors."""
        if self._closed:
            raise StorageError("the S3 store is closed")
        loop = asyncio.get_running_loop()

        def call() -> T:
            try:
                return func(*args)
            except (StorageError, FileNotFoundError):
                raise  # FileNotFoundError: the local file (the upload queue handles it)
            except Exception as exc:
                raise self._map_error(exc, what) from exc

        return await loop.run_in_executor(self._executor, call)

    def _map_error(self, exc: BaseException, what: str) -> StorageError:
        from botocore import exceptions as bex

        where = f"S3 at {self.endpoint}"
        if isinstance(exc, bex.ClientError):
            err = exc.response.get("Error", {}) or {}
            code = str(err.get("Code") or "")
            message = str(err.get("Message") or "").strip()
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            detail = code + (f": {message}" if message and message != code else "")
            if code in _AUTH_CODES or status == 403:
                hint = {
                    "InvalidAccessKeyId": "the access key is unknown to the server",
                    "SignatureDoesNotMatch": "the secret key is wrong",
                }.get(code, "wrong credentials, or this key may not access the bucket")
                return StorageAuthError(
                    f"{where} refused {what} for access key {self.access_key!r} ({detail or status}): "
                    f"{hint}; check MINIO_ACCESS_KEY and MINIO_SECRET_KEY"
                )
            if code == "NoSuchBucket":
                self._bucket_ready = False  # removed behind our back: ensure again next time
                out: StorageError = StorageUnavailable(f"{where}: {what}: bucket {self.bucket!r} does not exist")
                return out
            if status >= 500 or code in _RETRYABLE_CODES:
                return StorageUnavailable(f"{where}: {what} failed ({status} {detail})")
            return StorageError(f"{where}: {what} failed ({status} {detail})")
        if isinstance(exc, bex.SSLError):
            return StorageError(f"{where}: TLS error during {what}: {exc} (for a private CA set AWS_CA_BUNDLE)")
        if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError)):
            return StorageAuthError(f"{where}: no credentials: set MINIO_ACCESS_KEY and MINIO_SECRET_KEY")
        if isinstance(exc, (bex.HTTPClientError, bex.EndpointConnectionError, ConnectionError, TimeoutError)):
            return StorageUnavailable(f"{where} unreachable during {what}: {exc}")
        if isinstance(exc, OSError):
            return StorageError(f"{what}: {exc}")
        if type(exc).__name__ in ("CancelledError", "FatalError"):  # s3transfer on shutdown
            return StorageUnavailable(f"{what} cancelled: {exc}")
        return StorageUnavailable(f"{where}: {what} failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ bucket

    def _ensure_bucket_sync(self) -> str:
        from botocore.exceptions import ClientError

        client, _ = self._clients()
        try:
            client.head_bucket(Bucket=self.bucket)
            return "exists"
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            if status == 403:
                # HEAD has no body: ask again with a request whose error says why.
                client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
                raise
            if status != 404 and code not in ("404", "NoSuchBucket", "NotFound"):
                raise
        params: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            client.create_bucket(**params)
            return "created"
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "BucketAlreadyOwnedByYou":
                return "exists"  # another process created it a moment ago
            if code == "BucketAlreadyExists":
                client.head_bucket(Bucket=self.bucket)  # ours to use? 403 if not
                return "exists"
            raise

    async def ensure_bucket(self) -> None:
        if self._bucket_lock is None:
            self._bucket_lock = asyncio.Lock()
        async with self._bucket_lock:
            outcome = await self._run(self._ensure_bucket_sync, what=f"ensuring bucket {self.bucket!r}")
            self._bucket_ready = True
        if outcome == "created":
            logger.info("S3 bucket {} created at {}", self.bucket, self.endpoint)

    async def _bucket_once(self) -> None:
        if not self._bucket_ready:
            await self.ensure_bucket()

    # ------------------------------------------------------------------ objects

    def _expected_etag(self, size: int, part_md5s: list[bytes]) -> str:
        if size < self.part_size:
            return part_md5s[0].hex()
        combined = hashlib.md5(b"".join(part_md5s)).hexdigest()
        return f"{combined}-{len(part_md5s)}"

    def _upload_sync(
        self,
        path: Path,
        key: str,
        content_type: str,
        metadata: dict[str, str],
        progress: Progress | None,
        duration: float | None,
    ) -> ObjectRef:
        from boto3.s3.transfer import ProgressCallbackInvoker
        from s3transfer.utils import ChunksizeAdjuster

        client, manager = self._clients()
        size0 = path.stat().st_size
        chunk = ChunksizeAdjuster().adjust_chunksize(self.part_size, size0)
        size, sha256, part_md5s = file_digests(path, chunk)
        expected_etag = self._expected_etag(size, part_md5s)
        extra = {"ContentType": content_type, "Metadata": {**metadata, "sha256": sha256}}
        subscribers = [ProgressCallbackInvoker(progress)] if progress else None
        began = time.monotonic()
        future = manager.upload(str(path), self.bucket, key, extra_args=extra, subscribers=subscribers)
        self._inflight.add(future)
        try:
            future.result()
        finally:
            self._inflight.discard(future)
        head = client.head_object(Bucket=self.bucket, Key=key)
        etag = str(head.get("ETag", "")).strip('"')
        problems = []
        if head.get("ContentLength") != size:
            problems.append(f"size {head.get('ContentLength')} != {size}")
        if _ETAG_RE.match(etag) and etag != expected_etag:
            problems.append(f"ETag {etag} != {expected_etag}")
        if (head.get("Metadata") or {}).get("sha256") != sha256:
            problems.append("sha256 metadata missing or different")
        if problems:
            raise IntegrityError(f"uploaded object {key!r} does not match {path}: {'; '.join(problems)}")
        logger.debug(
            "uploaded {} ({} bytes, {} part(s)) in {:.2f}s",
            key,
            size,
            1 if size < self.part_size else len(part_md5s),
            time.monotonic() - began,
        )
        return ObjectRef(
            backend="s3",
            bucket=self.bucket,
            key=key,
            size=size,
            content_type=str(head.get("ContentType") or content_type),
            etag=etag,
            sha256=sha256,
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
        ct = content_type or guess_content_type(path)
        meta = {str(k).lower(): str(v) for k, v in (metadata or {}).items()}

        async def once() -> ObjectRef:
            await self._bucket_once()
            return await self._run(
                self._upload_sync, path, key, ct, meta, progress, duration, what=f"uploading {key!r}"
            )

        if not path.is_file():
            raise FileNotFoundError(f"no such file to upload: {path}")
        return await run_with_retries(
            once,
            retry_on=StorageError,
            attempts=attempts or self.upload_attempts,
            initial=self.retry_initial,
            maximum=self.retry_max,
            what=f"upload of {key}",
        )

    async def head(self, key: str) -> ObjectInfo | None:
        key = validate_key(key)

        def call() -> ObjectInfo | None:
            from botocore.exceptions import ClientError

            client, _ = self._clients()
            try:
                h = client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None
                raise
            return ObjectInfo(
                key=key,
                size=int(h["ContentLength"]),
                content_type=str(h.get("ContentType") or "application/octet-stream"),
                etag=str(h.get("ETag", "")).strip('"') or None,
                metadata=dict(h.get("Metadata") or {}),
            )

        return await self._run(call, what=f"HEAD {key!r}")

    async def download_file(self, key: str, dest: str | Path) -> Path:
        key = validate_key(key)
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")

        def call() -> Path:
            _, manager = self._clients()
            try:
                manager.download(self.bucket, key, str(tmp)).result()
                os.replace(tmp, dest)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            return dest

        return await self._run(call, what=f"downloading {key!r}")

    async def delete(self, key: str) -> None:
        key = validate_key(key)
        await self._run(lambda: self._clients()[0].delete_object(Bucket=self.bucket, Key=key), what=f"deleting {key!r}")

    # ------------------------------------------------------------------ presigned URLs

    async def presigned_get_url(self, key: str, *, expires_in: int | None = None, filename: str | None = None) -> str:
        key = validate_key(key)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{safe_filename(filename)}"'
        expiry = self._expiry(expires_in)
        return await self._run(
            lambda: self._clients()[0].generate_presigned_url("get_object", Params=params, ExpiresIn=expiry),
            what=f"presigning GET {key!r}",
        )

    async def presigned_put(
        self,
        key: str,
        *,
        content_type: str,
        size: int,
        expires_in: int | None = None,
        policy: UploadPolicy | None = None,
    ) -> PresignedUpload:
        key = validate_key(key)
        (policy or self.chat_policy).check(size, content_type)
        expiry = self._expiry(expires_in)
        await self._bucket_once()
        # Content-Type and Content-Length are signed (X-Amz-SignedHeaders): the server
        # refuses a body of any other size or type.
        params = {"Bucket": self.bucket, "Key": key, "ContentType": content_type, "ContentLength": size}
        url = await self._run(
            lambda: self._clients()[0].generate_presigned_url("put_object", Params=params, ExpiresIn=expiry),
            what=f"presigning PUT {key!r}",
        )
        return PresignedUpload(
            url=url,
            method="PUT",
            key=key,
            headers={"Content-Type": content_type, "Content-Length": str(size)},
            expires_at=time.time() + expiry,
        )

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Cancel in-flight transfers (their jobs stay queued) and stop the threads."""
        if self._closed:
            return
        self._closed = True
        await super().close()
        for future in list(self._inflight):
            with contextlib.suppress(Exception):
                future.cancel()

        def shutdown() -> None:
            if self._manager is not None:
                with contextlib.suppress(Exception):
                    self._manager.shutdown(cancel=True, cancel_msg="parley is shutting down")
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, shutdown)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> str:
        return f"S3 {self.endpoint} bucket {self.bucket}"

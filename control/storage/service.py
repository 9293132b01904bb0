"""Choosing and running the process's object store (``app[STORAGE]``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from loguru import logger

from control.config import Settings
from control.keys import EVENTS, SETTINGS, STORAGE
from control.storage.base import ObjectStore, StorageAuthError, StorageError, UploadPolicy
from control.storage.local import LocalStorage
from control.storage.s3 import S3Storage

__all__ = ["RECORDING_UPLOAD_KIND", "create_storage", "public_base_url", "storage_ctx"]

#: ``submit_upload(..., kind=RECORDING_UPLOAD_KIND, context={...event data...})``
#: publishes ``recording.completed`` once the recording is stored.
RECORDING_UPLOAD_KIND = "recording.completed"


def public_base_url(settings: Settings) -> str:
    """Where clients reach this app (for the local store's presigned URLs)."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def create_storage(settings: Settings, *, base_url: str | None = None) -> ObjectStore:
    """S3Storage when ``MINIO_ENDPOINT`` is set, else LocalStorage under
    ``DATA_DIR/recordings``; either with its upload queue journaled in ``DATA_DIR/uploads``."""
    policy = UploadPolicy(max_bytes=settings.chat_file_max_mb << 20)
    store: ObjectStore
    if settings.minio_endpoint:
        assert settings.minio_access_key and settings.minio_secret_key  # Settings checks it
        store = S3Storage(
            settings.minio_endpoint, settings.minio_access_key,
            settings.minio_secret_key.get_secret_value(), settings.minio_bucket,
            region=settings.minio_region, part_size=settings.minio_part_size_mb << 20,
            concurrency=settings.minio_concurrency, default_expiry=settings.presign_expiry,
            chat_policy=policy)
    else:
        store = LocalStorage(settings.recordings_dir, bucket=settings.minio_bucket,
                             base_url=base_url or public_base_url(settings),
                             default_expiry=settings.presign_expiry, chat_policy=policy)
    store.enable_uploads(settings.data_dir / "uploads")
    return store


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the object store and its upload queue.

    Wrong credentials stop start-up with a clear error; an unreachable server
    only warns (queued uploads wait and are retried). Completed recording uploads
    publish ``recording.completed`` through ``app[EVENTS]`` when it is set (so
    this entry goes after the events one).
    """
    settings = app[SETTINGS]
    store = create_storage(settings)
    events = app.get(EVENTS)
    if events is not None:
        store.on_uploaded(RECORDING_UPLOAD_KIND, events.publish_upload)
    try:
        await store.start()
    except StorageAuthError:
        await store.close()
        raise
    except StorageError as exc:
        logger.warning("object storage not usable at start-up, uploads will be retried: {}", exc)
    assert store.uploads is not None
    await store.uploads.start()
    app[STORAGE] = store
    logger.info("object storage: {}", store.describe())
    try:
        yield
    finally:
        await store.close()
        logger.info("object storage closed")

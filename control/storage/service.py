"""Choosing and running the process's object store (``app[OBJECTS]``) and its upload
queue (``app[UPLOADS]``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from loguru import logger

from control.config import Settings
from control.keys import OBJECTS, UPLOADS
from control.storage.base import ObjectStore, StorageAuthError, StorageError, UploadPolicy
from control.storage.files import RECORDING_UPLOAD_KIND
from control.storage.local import LocalStorage
from control.storage.s3 import S3Storage
from control.storage.uploads import UploadQueue

if TYPE_CHECKING:
    from control.events.bus import EventBus

__all__ = ["RECORDING_UPLOAD_KIND", "create_storage", "public_base_url", "storage_ctx"]


def public_base_url(settings: Settings) -> str:
    """Where clients reach this app (for the local store's presigned URLs)."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def create_storage(settings: Settings, *, base_url: str | None = None) -> ObjectStore:
    """S3Storage when ``MINIO_ENDPOINT`` is set, else LocalStorage under ``DATA_DIR/recordings``."""
    policy = UploadPolicy(max_bytes=settings.chat_file_max_mb << 20)
    if settings.minio_endpoint:
        assert settings.minio_access_key and settings.minio_secret_key  # Settings checks it
        return S3Storage(
            settings.minio_endpoint,
            settings.minio_access_key,
            settings.minio_secret_key.get_secret_value(),
            settings.minio_bucket,
            region=settings.minio_region,
            part_size=settings.minio_part_size_mb << 20,
            concurrency=settings.minio_concurrency,
            default_expiry=settings.presign_expiry,
            chat_policy=policy,
        )
    return LocalStorage(
        settings.recordings_dir,
        bucket=settings.minio_bucket,
        base_url=base_url or public_base_url(settings),
        default_expiry=settings.presign_expiry,
        chat_policy=policy,
    )


def storage_ctx(
    *,
    settings: web.AppKey[Settings],
    events: web.AppKey[EventBus] | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup_ctx: the object store, and the upload queue journaled in ``DATA_DIR/uploads``.

    Wrong credentials stop start-up with a clear error; an unreachable server
    only warns (queued uploads wait and are retried). Completed recording uploads
    publish ``recording.completed`` through ``events`` when given (the recording
    subsystem replaces this hook with its own, which attaches the meeting first).
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[settings]
        objects = create_storage(config)
        queue = UploadQueue(objects, config.data_dir / "uploads")
        if events is not None:
            queue.on_uploaded(RECORDING_UPLOAD_KIND, app[events].publish_upload)
        try:
            await objects.start()
        except StorageAuthError:
            await objects.close()
            raise
        except StorageError as exc:
            logger.warning("object storage not usable at start-up, uploads will be retried: {}", exc)
        await queue.start()
        app[OBJECTS] = objects
        app[UPLOADS] = queue
        logger.info("object storage: {}", objects.describe())
        try:
            yield
        finally:
            await queue.close()  # jobs stay journaled
            await objects.close()
            logger.info("object storage closed")

    return ctx

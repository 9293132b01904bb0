"""Object storage: recordings and chat files in S3/MinIO, or in a local directory.

:func:`setup` runs, for the app, one object store ``app[OBJECTS]``
(:func:`create_storage`: :class:`S3Storage` when ``MINIO_ENDPOINT`` is set, else
:class:`LocalStorage` under ``DATA_DIR/recordings``, same interface and keys) and
one durable :class:`UploadQueue` over it, ``app[UPLOADS]``, journaled in
``DATA_DIR/uploads``; and the local store's presigned-URL routes.

    objects, uploads = app[OBJECTS], app[UPLOADS]
    # durable: journaled, retried until stored and verified, survives restarts
    job = await uploads.submit(path, recording_key(room_id, "rec.mp4"),
                               content_type="video/mp4", duration=61.5,
                               delete_local=True, kind="recording.completed",
                               context={...recording.completed data without "object"...})
    ref = await uploads.wait(job)          # ObjectRef (optional)
    # direct: a few retries, then StorageError; the local file is never touched
    ref = await objects.upload_file(path, recording_key(room_id, "rec.mp4"), content_type="video/mp4")
    url = await objects.presigned_get_url(ref.key, filename="meeting.mp4")
    put = await presign_chat_upload(objects, room_id, "notes.pdf", content_type="application/pdf",
                                    size=12345)   # put.url, put.headers

Keys (``control.storage.keys``, built by the callers): ``recordings/<roomId>/<filename>``
and ``chat/<roomId>/<fileId>/<filename>``, from validated ids only.

Errors are :class:`StorageError` and its subclasses, each a
:class:`~control.errors.ParleyError` with a stable code (``storage_error``,
``storage_unavailable``, ``storage_misconfigured``, ``integrity_error``,
``upload_rejected``, ``invalid_signature``, ``invalid_key``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from control.config import Settings
from control.storage import routes as _routes_module
from control.storage.base import (
    CHAT_ALLOWED_CONTENT_TYPES,
    IntegrityError,
    ObjectInfo,
    ObjectRef,
    ObjectStore,
    PresignedUpload,
    StorageAuthError,
    StorageError,
    StorageUnavailable,
    UploadPolicy,
    UploadRejected,
)
from control.storage.files import RECORDING_UPLOAD_KIND, presign_chat_upload, upload_recording
from control.storage.keys import (
    CHAT_PREFIX,
    RECORDINGS_PREFIX,
    InvalidKey,
    chat_file_key,
    new_file_id,
    recording_key,
    safe_filename,
)
from control.storage.local import LocalStorage
from control.storage.s3 import S3Storage
from control.storage.service import create_storage, storage_ctx
from control.storage.uploads import UploadJob, UploadQueue

if TYPE_CHECKING:
    from control.events.bus import EventBus

__all__ = [
    "CHAT_ALLOWED_CONTENT_TYPES",
    "CHAT_PREFIX",
    "RECORDINGS_PREFIX",
    "RECORDING_UPLOAD_KIND",
    "IntegrityError",
    "InvalidKey",
    "LocalStorage",
    "ObjectInfo",
    "ObjectRef",
    "ObjectStore",
    "PresignedUpload",
    "S3Storage",
    "StorageAuthError",
    "StorageError",
    "StorageUnavailable",
    "UploadJob",
    "UploadPolicy",
    "UploadQueue",
    "UploadRejected",
    "chat_file_key",
    "create_storage",
    "new_file_id",
    "presign_chat_upload",
    "recording_key",
    "safe_filename",
    "setup",
    "storage_ctx",
    "upload_recording",
]


def setup(app: web.Application, *, settings: web.AppKey[Settings], events: web.AppKey[EventBus] | None) -> None:
    """Run the object store and its upload queue (``OBJECTS``, ``UPLOADS``) and serve
    the local store's presigned URLs. ``events``: where a stored recording's
    ``recording.completed`` goes (its cleanup_ctx must come first), or ``None``."""
    app.cleanup_ctx.append(storage_ctx(settings=settings, events=events))
    app.add_routes(_routes_module.routes)

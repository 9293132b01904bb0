"""Object storage: recordings and chat files in S3/MinIO, or in a local directory.

The process has one store, ``app[STORAGE]`` (:func:`create_storage`):
:class:`S3Storage` when ``MINIO_ENDPOINT`` is set, else :class:`LocalStorage`
(``DATA_DIR/recordings``) with the same interface and keys.

    store = app[STORAGE]
    # durable: journaled, retried until stored and verified, survives restarts
    job = await store.submit_upload(path, recording_key(room_id, "rec.mp4"),
                                    content_type="video/mp4", duration=61.5,
                                    delete_local=True, kind="recording.completed",
                                    context={...recording.completed data without "object"...})
    ref = await store.uploads.wait(job)          # ObjectRef (optional)
    # direct: a few retries, then StorageError; the local file is never touched
    ref = await store.upload_recording(path, room_id, content_type="video/mp4")
    url = await store.presigned_get_url(ref.key, filename="meeting.mp4")
    put = await store.presign_chat_upload(room_id, "notes.pdf", content_type="application/pdf",
                                          size=12345)   # put.url, put.headers

Keys (``control.storage.keys``): ``recordings/<roomId>/<filename>`` and
``chat/<roomId>/<fileId>/<filename>``, built from validated ids only.
"""

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
from control.storage.service import RECORDING_UPLOAD_KIND, create_storage, storage_ctx
from control.storage.uploads import UploadJob, UploadQueue

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
    "recording_key",
    "safe_filename",
    "storage_ctx",
]

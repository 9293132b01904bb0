"""What the application stores, as keys over the plain object store.

The :class:`~control.storage.base.ObjectStore` knows objects and keys only; these
helpers build the application's keys (:mod:`control.storage.keys`) and call it.
"""

from __future__ import annotations

from pathlib import Path

from control.storage.base import ObjectRef, ObjectStore, PresignedUpload, Progress
from control.storage.keys import chat_file_key, new_file_id, recording_key, safe_filename

__all__ = ["RECORDING_UPLOAD_KIND", "presign_chat_upload", "upload_recording"]

#: ``uploads.submit(..., kind=RECORDING_UPLOAD_KIND, context={...event data...})``
#: publishes ``recording.completed`` once the recording is stored.
RECORDING_UPLOAD_KIND = "recording.completed"


async def upload_recording(
    objects: ObjectStore,
    path: str | Path,
    room_id: str,
    filename: str | None = None,
    *,
    content_type: str | None = None,
    duration: float | None = None,
    progress: Progress | None = None,
) -> ObjectRef:
    """Upload a recording to ``recordings/<roomId>/<filename>`` (default: the file's name)
    directly (a few retries, then :class:`~control.storage.base.StorageError`)."""
    key = recording_key(room_id, filename or Path(path).name)
    return await objects.upload_file(path, key, content_type=content_type, duration=duration, progress=progress)


async def presign_chat_upload(
    objects: ObjectStore, room_id: str, filename: str, *, content_type: str, size: int, expires_in: int | None = None
) -> PresignedUpload:
    """A presigned PUT for a chat file at ``chat/<roomId>/<new fileId>/<safe filename>``,
    within the store's chat upload policy (:class:`~control.storage.base.UploadRejected`)."""
    objects.chat_policy.check(size, content_type)
    key = chat_file_key(room_id, new_file_id(), safe_filename(filename))
    return await objects.presigned_put(
        key, content_type=content_type, size=size, expires_in=expires_in, policy=objects.chat_policy
    )

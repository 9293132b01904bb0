"""Files that hold participants' ``integrations`` (third-party tokens) are readable by their
owner only: the event outbox's SQLite file (and its WAL), the upload journal (and its
``failed/`` entries), the recording manifests. Created 0600, in 0700 directories, whatever
the umask; an outbox file left by an older version is tightened at open."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from control.events.outbox import OutboxEntry, SQLiteOutbox
from control.storage import LocalStorage
from control.storage.base import StorageError
from control.storage.uploads import UploadQueue
from recording.manifest import Manifest

INTEGRATIONS = {"notion": {"token": "secret_notion_token"}}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The usual 022: without the explicit modes, files would be world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


async def test_sqlite_outbox_is_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "parley.sqlite3"
    outbox = SQLiteOutbox(path)
    await outbox.open()
    try:
        body = json.dumps({"data": {"participants": [{"integrations": INTEGRATIONS}]}})
        assert await outbox.add(OutboxEntry("e1", "meeting.ended", body, created_at=time.time()))
        assert mode(path.parent) == 0o700
        for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            assert mode(name) == 0o600, name
    finally:
        await outbox.close()

    older = tmp_path / "older.sqlite3"  # left world-readable by a previous version
    older.touch(mode=0o644)
    outbox = SQLiteOutbox(older)
    await outbox.open()
    await outbox.close()
    assert mode(older) == 0o600


async def test_upload_journal_is_private(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "objects")
    queue = UploadQueue(store, tmp_path / "data" / "uploads", retry_initial=0.01)
    await queue.start()
    try:
        rec = tmp_path / "rec.mp4"
        rec.write_bytes(b"\0" * 1000)
        job = await queue.submit(rec, "recordings/r1/rec.mp4", context={"integrations": INTEGRATIONS})
        entry = queue.journal_dir / f"{job.id}.json"  # the upload task has not run yet
        assert mode(queue.journal_dir) == 0o700 and mode(entry) == 0o600
        await queue.wait(job, timeout=10)

        gone = tmp_path / "gone.mp4"
        gone.write_bytes(b"\0" * 10)
        job = await queue.submit(gone, "recordings/r1/gone.mp4", context={"integrations": INTEGRATIONS})
        gone.unlink()  # cannot succeed: moved to failed/
        with pytest.raises(StorageError):
            await queue.wait(job, timeout=10)
        failed = queue.journal_dir / "failed"
        assert mode(failed) == 0o700 and mode(failed / f"{job.id}.json") == 0o600
    finally:
        await queue.close()


def test_recording_manifest_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "recording-work" / "rec1"
    directory.mkdir(parents=True)  # created by the recorder with the umask's mode
    assert mode(directory) == 0o755
    manifest = Manifest(
        directory=directory,
        recording_id="rec1",
        room_id="r1",
        meeting_id="m1",
        filename="rec1.mp4",
        started_at=time.time(),
        participants={"alice": {"integrations": INTEGRATIONS}},
    )
    manifest.save()
    assert mode(directory) == 0o700 and mode(manifest.path) == 0o600
    assert Manifest.load(directory).participants["alice"]["integrations"] == INTEGRATIONS

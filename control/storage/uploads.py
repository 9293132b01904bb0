"""The upload queue: uploads that survive failures and restarts.

``UploadQueue(objects, journal_dir)`` is built over an
:class:`~control.storage.base.ObjectStore` by the storage setup (``app[UPLOADS]``).
``uploads.submit(path, key, ...)`` writes a job to a journal
(``DATA_DIR/uploads/<jobId>.json``, fsync'ed) and uploads in the background.
A failed attempt (server down, 5xx, integrity mismatch, wrong credentials)
leaves the local file untouched; the job is retried with exponential backoff
(``retry_initial`` doubling up to ``retry_max``) for as long as it takes, and
after a restart (:meth:`UploadQueue.start` resumes every journaled job).

Once the object is stored *and verified*:

1. the job's ``kind`` handler runs, if any (``uploads.on_uploaded(kind, handler)``;
   e.g. ``recording.completed`` publishes the event with the object reference;
   it is retried with backoff until it succeeds, and may run again after a crash,
   so it must be idempotent: the job id is a stable event id);
2. the local file is deleted if ``delete_local`` (never before the object is confirmed);
3. the journal entry is removed and :meth:`UploadQueue.wait` returns the
   :class:`~control.storage.base.ObjectRef`.

A job whose local file has disappeared (or whose key is invalid) cannot succeed:
it is moved to ``uploads/failed/`` and logged as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from loguru import logger

from control.retry import backoff_delays
from control.storage.base import ObjectRef, ObjectStore, Progress, StorageError, StorageUnavailable
from control.storage.keys import InvalidKey, validate_key

__all__ = ["UploadHook", "UploadJob", "UploadQueue"]

JobState = Literal["pending", "uploaded", "done", "failed"]


@dataclass
class UploadJob:
    """One queued upload, as journaled."""

    id: str
    path: str
    key: str
    content_type: str | None = None
    duration: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    delete_local: bool = False
    kind: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    state: JobState = "pending"
    attempts: int = 0
    last_error: str | None = None
    updated_at: float = field(default_factory=time.time)
    ref: dict[str, Any] | None = None

    @property
    def object_ref(self) -> ObjectRef | None:
        return ObjectRef(**self.ref) if self.ref else None

    def summary(self) -> dict[str, Any]:
        """For admin views: everything but ``context`` (it may hold credentials)."""
        out = asdict(self)
        out.pop("context")
        return out


UploadHook = Callable[[UploadJob, ObjectRef], Awaitable[None]]


class UploadQueue:
    """Background, journaled, retried uploads to one :class:`ObjectStore`."""

    def __init__(
        self,
        objects: ObjectStore,
        journal_dir: str | Path,
        *,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
        concurrency: int = 2,
    ) -> None:
        self.objects = objects
        self.journal_dir = Path(journal_dir)
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._hooks: dict[str, UploadHook] = {}
        self._jobs: dict[str, UploadJob] = {}
        self._futures: dict[str, asyncio.Future[ObjectRef]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, Progress] = {}
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ public

    def on_uploaded(self, kind: str, handler: UploadHook) -> None:
        """Run ``handler(job, ref)`` after each upload of ``kind`` is confirmed."""
        self._hooks[kind] = handler

    async def start(self) -> int:
        """Resume the journaled jobs; returns how many."""
        self._started = True
        jobs = await asyncio.to_thread(self._load_journal)
        for job in jobs:
            self._schedule(job)
        if jobs:
            logger.info("resuming {} queued upload(s) from {}", len(jobs), self.journal_dir)
        return len(jobs)

    async def submit(
        self,
        path: str | Path,
        key: str,
        *,
        content_type: str | None = None,
        duration: float | None = None,
        metadata: dict[str, str] | None = None,
        delete_local: bool = False,
        kind: str | None = None,
        context: dict[str, Any] | None = None,
        job_id: str | None = None,
        progress: Progress | None = None,
    ) -> UploadJob:
        """Journal an upload of ``path`` to ``key`` and start it in the background."""
        if self._closed:
            raise StorageError("the upload queue is closed")
        validate_key(key)
        path = await asyncio.to_thread(Path(path).resolve)
        if not await asyncio.to_thread(path.is_file):
            raise FileNotFoundError(f"no such file to upload: {path}")
        json.dumps(context or {})  # must be journalable: fail now, not later
        job = UploadJob(
            id=job_id or uuid.uuid4().hex,
            path=str(path),
            key=key,
            content_type=content_type,
            duration=duration,
            metadata=dict(metadata or {}),
            delete_local=delete_local,
            kind=kind,
            context=dict(context or {}),
        )
        await asyncio.to_thread(self._write, job)
        if progress is not None:
            self._progress[job.id] = progress
        self._schedule(job)
        logger.info("upload {} queued: {} -> {}", job.id, path.name, key)
        return job

    async def wait(self, job: UploadJob | str, timeout: float | None = None) -> ObjectRef:  # noqa: ASYNC109 - the public API
        """The job's object reference once it is stored, verified and handled."""
        job_id = job if isinstance(job, str) else job.id
        future = self._futures.get(job_id)
        if future is None:
            raise KeyError(f"unknown upload job {job_id}")
        async with asyncio.timeout(timeout):
            return await asyncio.shield(future)

    def jobs(self) -> list[UploadJob]:
        """Jobs not finished yet (pending or waiting for their handler)."""
        return [j for j in self._jobs.values() if j.state in ("pending", "uploaded")]

    def get(self, job_id: str) -> UploadJob | None:
        return self._jobs.get(job_id)

    async def close(self) -> None:
        """Stop working; unfinished jobs stay journaled for the next start."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for future in self._futures.values():
            if not future.done():
                future.set_exception(StorageUnavailable("upload queue closed; the job resumes at the next start"))
                future.exception()  # retrieved: no "never retrieved" warning

    # ------------------------------------------------------------------ internals

    def _schedule(self, job: UploadJob) -> None:
        self._jobs[job.id] = job
        loop = asyncio.get_running_loop()
        self._futures.setdefault(job.id, loop.create_future())
        self._tasks[job.id] = loop.create_task(self._run(job), name=f"upload-{job.id}")

    async def _run(self, job: UploadJob) -> None:
        delays = backoff_delays(self.retry_initial, self.retry_max)
        log = logger.bind(upload=job.id, key=job.key)
        try:
            while True:
                if job.state == "pending":
                    try:
                        async with self._sem:
                            ref = await self.objects.upload_file(
                                job.path,
                                job.key,
                                content_type=job.content_type,
                                duration=job.duration,
                                metadata=job.metadata,
                                attempts=1,
                                progress=self._progress.get(job.id),
                            )
                    except (FileNotFoundError, InvalidKey) as exc:
                        await self._fail(job, f"{type(exc).__name__}: {exc}")
                        return
                    except Exception as exc:  # noqa: BLE001 - StorageError or a surprise: retry
                        await self._retry_later(job, exc, next(delays), log)
                        continue
                    job.state, job.ref = "uploaded", ref.to_dict()
                    job.last_error = None
                    await asyncio.to_thread(self._write, job)
                    log.info("upload {} stored and verified: {} ({} bytes)", job.id, job.key, ref.size)
                    delays = backoff_delays(self.retry_initial, self.retry_max)
                if job.state == "uploaded":
                    ref = ObjectRef(**(job.ref or {}))
                    if job.kind:
                        hook = self._hooks.get(job.kind)
                        try:
                            if hook is None:
                                raise RuntimeError(f"no handler registered for {job.kind!r}")
                            await hook(job, ref)
                        except Exception as exc:  # noqa: BLE001 - retried
                            await self._retry_later(job, exc, next(delays), log, what="handler")
                            continue
                    if job.delete_local:
                        with contextlib.suppress(FileNotFoundError):
                            await asyncio.to_thread(os.unlink, job.path)
                    await asyncio.to_thread(self._remove, job)
                    job.state = "done"
                    self._progress.pop(job.id, None)
                    future = self._futures.get(job.id)
                    if future is not None and not future.done():
                        future.set_result(ref)
                    return
        finally:
            self._tasks.pop(job.id, None)

    async def _retry_later(
        self, job: UploadJob, exc: BaseException, delay: float, log: Any, what: str = "upload"
    ) -> None:
        job.attempts += 1
        job.last_error = f"{type(exc).__name__}: {exc}"
        job.updated_at = time.time()
        await asyncio.to_thread(self._write, job)
        retryable = getattr(exc, "retryable", True)
        log.warning(
            "{} {} of {} failed (attempt {}{}), local file kept, retrying in {:.1f}s: {}",
            what,
            job.id,
            job.key,
            job.attempts,
            "" if retryable else ", not transient",
            delay,
            job.last_error,
        )
        await asyncio.sleep(delay)

    async def _fail(self, job: UploadJob, error: str) -> None:
        job.state, job.last_error, job.updated_at = "failed", error, time.time()

        def move() -> None:
            failed = self.journal_dir / "failed"
            failed.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._write(job, directory=failed)
            self._remove(job)

        await asyncio.to_thread(move)
        logger.error("upload {} of {} failed permanently: {}", job.id, job.key, error)
        future = self._futures.get(job.id)
        if future is not None and not future.done():
            future.set_exception(StorageError(f"upload {job.id} failed: {error}"))

    # journal: one JSON file per job, written atomically, readable by this user only (0600 in
    # 0700 directories): a job's context is the event it publishes, with participants' integrations
    def _write(self, job: UploadJob, directory: Path | None = None) -> None:
        directory = directory or self.journal_dir
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / f"{job.id}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(asdict(job), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _remove(self, job: UploadJob) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.journal_dir / f"{job.id}.json").unlink()

    def _load_journal(self) -> list[UploadJob]:
        jobs: list[UploadJob] = []
        if not self.journal_dir.is_dir():
            return jobs
        for path in sorted(self.journal_dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                data = json.loads(path.read_text())
                job = UploadJob(**data)
            except (ValueError, TypeError) as exc:
                logger.error("unreadable upload journal entry {}: {}", path, exc)
                continue
            if job.id in self._jobs:
                continue
            jobs.append(job)
        return jobs

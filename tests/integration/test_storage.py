"""Object storage against the SeaweedFS S3 server, and the local directory store
against the same contract tests.

Contract (both backends): bucket ensured, 30 MB upload verified (multipart on S3),
presigned GET fetched over plain HTTP, presigned PUT from a plain HTTP client (with
the size and type the URL was signed for, and nothing else), keys validated, the
durable upload queue. S3 only: concurrent bucket creation, wrong credentials, 5xx
retries, a TLS endpoint, an upload interrupted by stopping the server and finished
after it restarts (local file kept in between), a queue resumed by a new process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from control import storage as storage_subsystem
from control.config import Settings
from control.http import error_middleware
from control.keys import EVENTS, OBJECTS, SETTINGS
from control.storage import (
    InvalidKey,
    LocalStorage,
    ObjectStore,
    S3Storage,
    StorageAuthError,
    StorageError,
    UploadQueue,
    UploadRejected,
    presign_chat_upload,
    recording_key,
    upload_recording,
)
from control.storage import routes as storage_routes
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.services

MB = 1 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def http(
    url: str, *, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None, context=None
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP request (urllib): (status, headers, body), errors included."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def drop_bucket(client, bucket: str) -> None:
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        client.delete_bucket(Bucket=bucket)
    except Exception:
        pass


def s3_store(service, bucket: str, **options) -> S3Storage:
    options.setdefault("part_size", 5 * MB)
    options.setdefault("retry_initial", 0.2)
    options.setdefault("retry_max", 1.0)
    return S3Storage(service.endpoint, service.access_key, service.secret_key, bucket, region=service.region, **options)


@pytest.fixture
def bucket_name(s3) -> Iterator[str]:
    name = f"parley-t-{secrets.token_hex(5)}"
    yield name
    drop_bucket(s3.client(), name)


async def serve_local(store: LocalStorage) -> web.AppRunner:
    """The app side of the local store's presigned URLs, on a free loopback port."""
    app = web.Application(middlewares=[error_middleware])
    app[OBJECTS] = store
    app.add_routes(storage_routes.routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    store.base_url = f"http://127.0.0.1:{port}"
    return runner


@pytest.fixture(params=["s3", "local"])
async def store(request, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """The same contract, two backends."""
    if request.param == "s3":
        service = request.getfixturevalue("s3")
        bucket = f"parley-t-{secrets.token_hex(5)}"
        st: ObjectStore = s3_store(service, bucket)
        runner = None
    else:
        service, bucket = None, "recordings"
        st = LocalStorage(tmp_path / "objects", bucket=bucket)
        runner = await serve_local(st)
    try:
        yield st
    finally:
        await st.close()
        if runner is not None:
            await runner.cleanup()
        if service is not None:
            drop_bucket(service.client(), bucket)


@pytest.fixture
async def uploads(store: ObjectStore, tmp_path: Path) -> AsyncIterator[UploadQueue]:
    """The durable upload queue over ``store`` (closed before the store)."""
    queue = UploadQueue(store, tmp_path / "uploads", retry_initial=0.2, retry_max=1.0)
    try:
        yield queue
    finally:
        await queue.close()


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(30 * MB)
    path = tmp_path / "meeting.mp4"
    path.write_bytes(data)
    return path, data


# --------------------------------------------------------------------------- contract


async def test_bucket_is_ensured_before_the_first_upload(store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "small.txt"
    path.write_bytes(b"hello")
    ref = await store.upload_file(path, "recordings/room-1/small.txt")  # no start() before
    assert ref.bucket == store.bucket and ref.size == 5
    await store.ensure_bucket()  # idempotent once it exists
    await store.start()


async def test_30mb_upload_is_verified(store: ObjectStore, big_file, tmp_path: Path) -> None:
    path, data = big_file
    sent: list[int] = []
    began = time.monotonic()
    ref = await upload_recording(store, path, "room-42", content_type="video/mp4", duration=61.5, progress=sent.append)
    elapsed = time.monotonic() - began
    assert ref.key == "recordings/room-42/meeting.mp4"
    assert ref.size == len(data) and ref.sha256 == sha256(data)
    assert ref.content_type == "video/mp4" and ref.duration == 61.5
    assert sum(sent) == len(data)
    assert path.read_bytes() == data  # the local file is never touched
    info = await store.head(ref.key)
    assert info is not None and info.size == len(data) and info.content_type == "video/mp4"
    assert info.metadata.get("sha256") == ref.sha256
    if isinstance(store, S3Storage):
        # 30 MB in 5 MB parts: a 6-part multipart upload, ETag = md5 of the part md5s
        parts = [hashlib.md5(data[i : i + 5 * MB]).digest() for i in range(0, len(data), 5 * MB)]
        assert ref.etag == f"{hashlib.md5(b''.join(parts)).hexdigest()}-6"
    else:
        assert ref.etag == hashlib.md5(data).hexdigest()
    copy = await store.download_file(ref.key, tmp_path / "copy.mp4")
    assert sha256(copy.read_bytes()) == ref.sha256
    print(f"\n{store.backend}: 30 MB upload + verification in {elapsed:.2f}s")


async def test_presigned_get_over_plain_http(store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "clip.webm"
    path.write_bytes(data)
    ref = await store.upload_file(path, "recordings/room-7/clip.webm", content_type="video/webm")
    url = await store.presigned_get_url(ref.key, expires_in=300)
    status, headers, body = await asyncio.to_thread(http, url)
    assert status == 200 and body == data
    assert headers["Content-Type"] == "video/webm"
    # a download name for the browser
    url = await store.presigned_get_url(ref.key, filename="Réunion du lundi.webm")
    status, headers, body = await asyncio.to_thread(http, url)
    assert status == 200 and body == data
    assert headers["Content-Disposition"] == 'attachment; filename="Reunion_du_lundi.webm"'
    # tampering with the URL (another key) is refused
    forged = url.replace("clip.webm", "other.webm")
    status, _, _ = await asyncio.to_thread(http, forged)
    assert status == 403
    # so is an expired URL
    short = await store.presigned_get_url(ref.key, expires_in=1)
    await asyncio.sleep(2.2)
    status, _, _ = await asyncio.to_thread(http, short)
    assert status == 403


async def test_presigned_put_from_plain_http(store: ObjectStore) -> None:
    data = b"%PDF-1.7 " + os.urandom(50_000)
    put = await presign_chat_upload(
        store, "room-9", "Notes d'été (v2).pdf", content_type="application/pdf", size=len(data)
    )
    prefix, room, file_id, name = put.key.split("/")
    assert (prefix, room, name) == ("chat", "room-9", "Notes_d_ete_v2.pdf") and len(file_id) >= 16
    assert put.method == "PUT" and put.expires_at > time.time() + 3000
    assert put.headers["Content-Type"] == "application/pdf"

    # the wrong type, or a body of another size, is refused by the server
    status, _, _ = await asyncio.to_thread(
        http, put.url, method="PUT", data=data, headers={"Content-Type": "text/html"}
    )
    assert status == 403
    status, _, _ = await asyncio.to_thread(
        http, put.url, method="PUT", data=data + b"more", headers={"Content-Type": "application/pdf"}
    )
    assert status == 403
    assert await store.head(put.key) is None

    status, _, _ = await asyncio.to_thread(
        http, put.url, method="PUT", data=data, headers={"Content-Type": "application/pdf"}
    )
    assert status == 200
    info = await store.head(put.key)
    assert info is not None and info.size == len(data) and info.content_type == "application/pdf"
    status, _, body = await asyncio.to_thread(http, await store.presigned_get_url(put.key))
    assert status == 200 and body == data

    # the policy: too large, or a type that is not allowed, is never signed
    with pytest.raises(UploadRejected, match="too large"):
        await presign_chat_upload(
            store, "room-9", "big.zip", content_type="application/zip", size=store.chat_policy.max_bytes + 1
        )
    with pytest.raises(UploadRejected, match="not allowed"):
        await presign_chat_upload(store, "room-9", "run.exe", content_type="application/x-msdownload", size=10)


async def test_keys_from_validated_ids_only(store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(b"x")
    for bad_key in (
        "../x.mp4",
        "recordings/../../etc/passwd",
        "/recordings/r/x.mp4",
        "recordings//x.mp4",
        "recordings/r/.env",
        "recordings/r/x.mp4?versionId=1",
    ):
        with pytest.raises(InvalidKey):
            await store.upload_file(path, bad_key)
        with pytest.raises(InvalidKey):
            await store.presigned_get_url(bad_key)
    with pytest.raises(InvalidKey):
        await upload_recording(store, path, "../room", "x.mp4")
    with pytest.raises(InvalidKey):
        await upload_recording(store, path, "room", "x/../../y.mp4")
    with pytest.raises(FileNotFoundError):
        await store.upload_file(tmp_path / "missing.mp4", "recordings/r/missing.mp4")


async def test_upload_queue_stores_then_hands_off_then_deletes(uploads: UploadQueue, tmp_path: Path) -> None:
    data = os.urandom(2 * MB)
    path = tmp_path / "rec-1.mp4"
    path.write_bytes(data)
    handed: list = []

    async def on_done(job, ref) -> None:
        assert path.exists(), "the local file must outlive the handler"
        handed.append((job.context, ref))

    uploads.on_uploaded("recording.completed", on_done)
    await uploads.start()
    job = await uploads.submit(
        path,
        recording_key("room-3", "rec-1.mp4"),
        content_type="video/mp4",
        duration=2.0,
        delete_local=True,
        kind="recording.completed",
        context={"meetingId": "m-1"},
    )
    assert (tmp_path / "uploads" / f"{job.id}.json").exists()  # journaled before it runs
    ref = await uploads.wait(job, timeout=60)
    assert ref.sha256 == sha256(data) and ref.duration == 2.0
    assert handed == [({"meetingId": "m-1"}, ref)]
    assert not path.exists()  # deleted only after the object was confirmed
    assert not list((tmp_path / "uploads").glob("*.json"))
    assert uploads.jobs() == []


# --------------------------------------------------------------------------- S3 only


async def test_bucket_created_when_missing_concurrently_and_when_existing(s3, bucket_name: str) -> None:
    client = s3.client()
    # four "processes" (own clients) racing to create the same missing bucket
    stores = [s3_store(s3, bucket_name) for _ in range(4)]
    try:
        await asyncio.gather(*(st.ensure_bucket() for st in stores))
    finally:
        await asyncio.gather(*(st.close() for st in stores))
    client.head_bucket(Bucket=bucket_name)
    # created by someone else beforehand: no error either
    other = f"parley-t-{secrets.token_hex(5)}"
    client.create_bucket(Bucket=other)
    st = s3_store(s3, other)
    try:
        await st.start()
    finally:
        await st.close()
        drop_bucket(client, other)


async def test_wrong_credentials_are_refused_with_a_clear_error(s3, bucket_name: str, tmp_path: Path) -> None:
    wrong_secret = "not-the-secret-" + secrets.token_hex(8)
    st = S3Storage(s3.endpoint, s3.access_key, wrong_secret, bucket_name, region=s3.region, retry_initial=0.1)
    path = tmp_path / "a.txt"
    path.write_bytes(b"a")
    try:
        with pytest.raises(StorageAuthError) as info:
            await st.start()
        message = str(info.value)
        assert "SignatureDoesNotMatch" in message and "MINIO_SECRET_KEY" in message
        assert s3.access_key in message and wrong_secret not in message
        began = time.monotonic()
        with pytest.raises(StorageAuthError):  # not retried: a configuration error
            await st.upload_file(path, "recordings/r/a.txt")
        assert time.monotonic() - began < 5
    finally:
        await st.close()
    st = S3Storage(s3.endpoint, "nobody", wrong_secret, bucket_name, region=s3.region)
    try:
        with pytest.raises(StorageAuthError, match=r"InvalidAccessKeyId.*unknown"):
            await st.ensure_bucket()
    finally:
        await st.close()


async def test_app_start_fails_on_wrong_credentials(s3, bucket_name: str, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        minio_endpoint=s3.endpoint,
        minio_access_key=s3.access_key,
        minio_secret_key="wrong",
        minio_bucket=bucket_name,
    )
    app = web.Application()
    app[SETTINGS] = settings
    storage_subsystem.setup(app, settings=SETTINGS, events=None)
    runner = web.AppRunner(app)
    with pytest.raises(StorageAuthError, match="MINIO_ACCESS_KEY and MINIO_SECRET_KEY"):
        await runner.setup()
    await runner.cleanup()
    # right credentials: the bucket is created at start-up
    settings = settings.model_copy(
        update={"minio_secret_key": Settings(_env_file=None, minio_secret_key=s3.secret_key).minio_secret_key}
    )
    app = web.Application()
    app[SETTINGS] = settings
    storage_subsystem.setup(app, settings=SETTINGS, events=None)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert isinstance(app[OBJECTS], S3Storage) and EVENTS not in app
        s3.client().head_bucket(Bucket=bucket_name)
    finally:
        await runner.cleanup()


async def test_5xx_answers_are_retried_with_backoff(s3, bucket_name: str, tmp_path: Path) -> None:
    host, port = s3.endpoint.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port))
    st = S3Storage(
        f"http://127.0.0.1:{proxy.port}",
        s3.access_key,
        s3.secret_key,
        bucket_name,
        region=s3.region,
        part_size=5 * MB,
        request_attempts=2,
        upload_attempts=5,
        retry_initial=0.1,
        retry_max=0.5,
    )
    data = os.urandom(12 * MB)
    path = tmp_path / "r.mp4"
    path.write_bytes(data)
    try:
        await st.ensure_bucket()
        # more failures than botocore's own attempts: our backoff loop must take over
        proxy.fail_http = 5
        ref = await st.upload_file(path, "recordings/r/r.mp4", content_type="video/mp4")
        assert proxy.failed == 5
        assert ref.sha256 == sha256(data)
        assert s3.client().head_object(Bucket=bucket_name, Key=ref.key)["ContentLength"] == len(data)
    finally:
        await st.close()
        proxy.close()


async def test_tls_endpoint(s3, bucket_name: str, tmp_path: Path) -> None:
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    host, port = s3.endpoint.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port), tls=server_ctx)
    endpoint = f"https://127.0.0.1:{proxy.port}"
    untrusted = S3Storage(endpoint, s3.access_key, s3.secret_key, bucket_name, region=s3.region)
    trusted = S3Storage(endpoint, s3.access_key, s3.secret_key, bucket_name, region=s3.region, verify=str(cert))
    path = tmp_path / "tls.txt"
    path.write_bytes(b"over TLS")
    try:
        with pytest.raises(StorageError, match=r"TLS error.*AWS_CA_BUNDLE") as info:
            await untrusted.ensure_bucket()
        assert not info.value.retryable
        ref = await trusted.upload_file(path, "recordings/r/tls.txt")
        url = await trusted.presigned_get_url(ref.key)
        assert url.startswith("https://127.0.0.1:")
        status, _, body = await asyncio.to_thread(http, url, context=ssl.create_default_context(cafile=str(cert)))
        assert status == 200 and body == b"over TLS"
    finally:
        await untrusted.close()
        await trusted.close()
        proxy.close()


async def test_upload_interrupted_by_server_stop_completes_after_restart(s3_owned, tmp_path: Path) -> None:
    bucket = f"parley-t-{secrets.token_hex(5)}"
    st = s3_store(s3_owned, bucket, concurrency=2)
    queue = UploadQueue(st, tmp_path / "uploads", retry_initial=0.3, retry_max=1.0)
    await queue.start()
    data = os.urandom(30 * MB)
    path = tmp_path / "long-meeting.mp4"
    path.write_bytes(data)
    sent: list[int] = []
    try:
        job = await queue.submit(
            path, recording_key("room-5", path.name), content_type="video/mp4", delete_local=True, progress=sent.append
        )
        deadline = time.monotonic() + 30
        while sum(sent) < 6 * MB:  # part-way through the multipart upload
            assert time.monotonic() < deadline, "upload made no progress"
            await asyncio.sleep(0.005)
        await asyncio.to_thread(s3_owned.stop, kill=True)
        stopped_at = time.monotonic()
        try:
            while job.attempts < 2:  # at least two failed attempts while it is down
                assert time.monotonic() - stopped_at < 30, f"no retry seen: {job}"
                await asyncio.sleep(0.05)
            assert job.state == "pending" and job.last_error
            assert path.exists() and sha256(path.read_bytes()) == sha256(data)  # kept, intact
            assert (tmp_path / "uploads" / f"{job.id}.json").exists()
        finally:
            await asyncio.to_thread(s3_owned.start)
        ref = await queue.wait(job, timeout=90)
        assert ref.size == len(data) and ref.sha256 == sha256(data)
        got = s3_owned.client().get_object(Bucket=bucket, Key=ref.key)["Body"].read()
        assert sha256(got) == sha256(data)
        assert not path.exists()  # removed only now that the object is confirmed
        print(
            f"\nupload done after {job.attempts} failed attempt(s), "
            f"server down for {s3_owned.last_startup_seconds:.1f}s restart"
        )
    finally:
        await queue.close()
        await st.close()
        drop_bucket(s3_owned.client(), bucket)


async def test_queued_upload_resumes_in_a_new_process(s3_owned, tmp_path: Path) -> None:
    bucket = f"parley-t-{secrets.token_hex(5)}"
    data = os.urandom(3 * MB)
    path = tmp_path / "rec.mp4"
    path.write_bytes(data)
    first = s3_store(s3_owned, bucket)
    queue = UploadQueue(first, tmp_path / "uploads", retry_initial=0.2, retry_max=0.5)
    await queue.start()
    try:
        with s3_owned.stopped():
            job = await queue.submit(
                path,
                recording_key("room-6", "rec.mp4"),
                delete_local=True,
                kind="recording.completed",
                context={"meetingId": "m-6"},
            )
            while job.attempts < 1:
                await asyncio.sleep(0.05)
            await queue.close()  # "the process exits" with the job unfinished
            await first.close()
        assert path.exists()
        second = s3_store(s3_owned, bucket)
        handed: list = []

        async def on_done(job, ref) -> None:
            handed.append((job.id, job.context, ref.key))

        second_queue = UploadQueue(second, tmp_path / "uploads", retry_initial=0.2, retry_max=0.5)
        second_queue.on_uploaded("recording.completed", on_done)
        try:
            assert await second_queue.start() == 1
            ref = await second_queue.wait(job.id, timeout=60)
        finally:
            await second_queue.close()
            await second.close()
        assert handed == [(job.id, {"meetingId": "m-6"}, "recordings/room-6/rec.mp4")]
        assert ref.sha256 == sha256(data) and not path.exists()
    finally:
        await queue.close()
        await first.close()
        drop_bucket(s3_owned.client(), bucket)

"""Worker, against the real binary (after mediasoup's test-Worker.ts)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.plugin_workers import require_worker_binary
from workers.errors import InvalidStateError, MediasoupTypeError
from workers.worker import Worker, WorkerSettings, create_worker


@pytest.fixture(autouse=True)
def _binary() -> None:
    require_worker_binary()


async def test_create_worker_succeeds_and_reports_its_pid() -> None:
    worker = await create_worker(
        log_level="debug", log_tags=["info", "rtp"], rtc_min_port=20000, rtc_max_port=20100, app_data={"foo": 123}
    )
    assert worker.pid > 0 and not worker.closed and not worker.died
    assert worker.app_data == {"foo": 123}
    os.kill(worker.pid, 0)  # the process exists
    dump = await worker.dump()
    assert dump["pid"] == worker.pid
    assert dump["routerIds"] == [] and dump["webRtcServerIds"] == []
    worker.close()
    assert worker.closed
    assert await worker.wait_closed() == 0


async def test_create_worker_with_wrong_settings_raises_type_error() -> None:
    with pytest.raises(MediasoupTypeError):
        await Worker.create(WorkerSettings(log_level="chicken"))  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await Worker.create(WorkerSettings(log_tags=["nope"]))
    # Rejected by the worker process itself (exit code 42).
    with pytest.raises(MediasoupTypeError, match="wrong settings"):
        await Worker.create(WorkerSettings(rtc_min_port=1000, rtc_max_port=999))


async def test_create_worker_with_missing_dtls_files_fails() -> None:
    with pytest.raises(MediasoupTypeError):
        await Worker.create(
            WorkerSettings(dtls_certificate_file="/notfound/cert.pem", dtls_private_key_file="/notfound/priv.pem")
        )


async def test_update_settings_and_resource_usage(worker: Worker) -> None:
    await worker.update_settings(log_level="debug", log_tags=["ice"])
    usage = await worker.get_resource_usage()
    assert set(usage) >= {"ru_utime", "ru_stime", "ru_maxrss", "ru_nvcsw"}
    assert usage["ru_maxrss"] > 0


async def test_close_closes_routers_and_fails_later_requests(worker: Worker) -> None:
    router = await worker.create_router([])
    closed = []
    router.observer.on("close", lambda: closed.append("router"))
    worker.observer.on("close", lambda: closed.append("worker"))
    worker.close()
    worker.close()  # idempotent
    assert router.closed and closed == ["router", "worker"]
    with pytest.raises(InvalidStateError):
        await worker.dump()


async def test_sigkill_emits_died_and_fails_pending_requests_fast() -> None:
    worker = await Worker.create(WorkerSettings(log_level="none"))
    router = await worker.create_router([])
    died: asyncio.Future = asyncio.get_running_loop().create_future()
    worker.once("died", lambda error: died.set_result(error))
    router_closed = []
    router.once("workerclose", lambda: router_closed.append(True))
    # A request in flight when the process dies must fail at once, not time out.
    os.kill(worker.pid, signal.SIGSTOP)
    pending = asyncio.ensure_future(worker.dump())
    await asyncio.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    error = await asyncio.wait_for(died, 5)
    assert "signal:9" in str(error)
    with pytest.raises(InvalidStateError):
        await asyncio.wait_for(pending, 2)
    assert worker.closed and worker.died and router.closed and router_closed == [True]
    assert await worker.wait_closed() == -signal.SIGKILL


async def test_worker_process_ignores_pipe_and_hup_but_exits_on_term() -> None:
    worker = await Worker.create(WorkerSettings(log_level="none"))
    died: asyncio.Future = asyncio.get_running_loop().create_future()
    worker.once("died", lambda error: died.set_result(error))
    for sig in (signal.SIGPIPE, signal.SIGHUP, signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2):
        os.kill(worker.pid, sig)
    await asyncio.sleep(0.3)
    assert not worker.closed
    assert (await worker.dump())["pid"] == worker.pid
    os.kill(worker.pid, signal.SIGTERM)
    await asyncio.wait_for(died, 5)
    assert worker.died

"""WorkerPool, against real worker processes: load-based placement, death and respawn."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from tests.plugin_workers import MEDIA_CODECS, require_worker_binary
from tests.polling import eventually
from workers.errors import InvalidStateError, MediasoupError
from workers.worker import WorkerSettings
from workers.worker_pool import WorkerPool, worker_load

AUDIO_RTP_PARAMETERS = {
    "mid": "AUDIO",
    "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
    "encodings": [{"ssrc": 11111111}],
}


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    require_worker_binary()
    pool = WorkerPool(num_workers=2, worker_settings=WorkerSettings(log_level="none"), respawn_delay=0.05)
    await pool.start()
    yield pool
    await pool.close()


async def test_start_spawns_every_worker(pool: WorkerPool) -> None:
    assert len(pool.workers) == 2
    assert len({w.pid for w in pool.workers}) == 2
    assert sorted(w.app_data["index"] for w in pool.workers) == [0, 1]
    for worker in pool.workers:
        assert (await worker.dump())["pid"] == worker.pid


async def test_start_fails_with_a_missing_binary() -> None:
    pool = WorkerPool(num_workers=2, worker_settings=WorkerSettings(worker_bin="/nonexistent/mediasoup-worker"))
    with pytest.raises(MediasoupError):
        await pool.start()
    assert pool.workers == []


async def test_routers_go_to_the_least_loaded_worker(pool: WorkerPool) -> None:
    busy_router = await pool.create_router(MEDIA_CODECS)
    busy = busy_router.worker
    for _ in range(3):
        await busy_router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    assert worker_load(busy) == 3
    [idle] = [w for w in pool.workers if w is not busy]
    assert worker_load(idle) == 0
    assert pool.least_loaded() is idle
    # Empty rooms cost nothing: every new router goes to the idle worker until
    # it carries as much as the busy one.
    routers = [await pool.create_router(MEDIA_CODECS) for _ in range(2)]
    assert all(r.worker is idle for r in routers)
    transport = await routers[0].create_webrtc_transport(listen_ips=["127.0.0.1"])
    producer = await transport.produce("audio", AUDIO_RTP_PARAMETERS)
    consumer_transport = await routers[0].create_webrtc_transport(listen_ips=["127.0.0.1"])
    await consumer_transport.consume(producer.id, routers[0].rtp_capabilities)
    assert worker_load(idle) == 3  # two transports and one consumer
    for _ in range(2):
        await busy_router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    assert worker_load(busy) == 5
    assert (await pool.create_router(MEDIA_CODECS)).worker is idle
    # Closing transports lowers the load again.
    for transport_id in list(busy_router.transports):
        busy_router.transports[transport_id].close()
    assert worker_load(busy) == 0
    assert (await pool.create_router(MEDIA_CODECS)).worker is busy


async def test_sigkill_closes_everything_fails_pending_requests_and_respawns(pool: WorkerPool) -> None:
    victim_router = await pool.create_router(MEDIA_CODECS)
    victim = victim_router.worker
    [survivor] = [w for w in pool.workers if w is not victim]
    second_router = await victim.create_router(MEDIA_CODECS)
    send = await victim_router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    recv = await victim_router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    producer = await send.produce("audio", AUDIO_RTP_PARAMETERS)
    consumer = await recv.consume(producer.id, victim_router.rtp_capabilities)
    plain = await second_router.create_plain_transport(listen_ip="127.0.0.1")

    loop = asyncio.get_running_loop()
    died: asyncio.Future = loop.create_future()
    respawned: asyncio.Future = loop.create_future()
    pool.once("workerdied", lambda worker, routers, error: died.set_result((worker, routers, error)))
    pool.once("workerrespawned", lambda worker: respawned.set_result(worker))
    closed: list[str] = []
    victim_router.once("workerclose", lambda: closed.append("router"))
    second_router.once("workerclose", lambda: closed.append("router2"))
    for name, transport in (("send", send), ("recv", recv), ("plain", plain)):
        transport.once("routerclose", lambda name=name: closed.append(name))
    producer.once("transportclose", lambda: closed.append("producer"))
    consumer.once("transportclose", lambda: closed.append("consumer"))
    observer_closed: list[str] = []
    for name, entity in (("router", victim_router), ("send", send), ("producer", producer), ("consumer", consumer)):
        entity.observer.once("close", lambda name=name: observer_closed.append(name))

    # Requests in flight when the process dies fail at once, not at their timeout.
    os.kill(victim.pid, signal.SIGSTOP)
    pending = [
        asyncio.ensure_future(coro)
        for coro in (
            victim_router.dump(),
            send.get_stats(),
            producer.dump(),
            consumer.get_stats(),
            victim.dump(),
        )
    ]
    await asyncio.sleep(0.05)
    assert not any(p.done() for p in pending)
    started = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)

    worker, lost, error = await asyncio.wait_for(died, 5)
    assert worker is victim and victim.died and victim.closed
    assert set(lost) == {victim_router, second_router}
    assert "signal:9" in str(error)
    results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 2)
    assert all(isinstance(r, InvalidStateError) for r in results), results
    assert time.monotonic() - started < 2  # far below the channel's request timeout
    assert sorted(closed) == sorted(["router", "router2", "send", "recv", "plain", "producer", "consumer"])
    assert sorted(observer_closed) == ["consumer", "producer", "router", "send"]
    for entity in (victim_router, second_router, send, recv, plain, producer, consumer):
        assert entity.closed, entity
    assert victim.routers == set()
    assert victim_router.transports == {} and victim_router.producers == {}
    with pytest.raises(InvalidStateError):
        await victim_router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    with pytest.raises(InvalidStateError):
        await victim.create_router(MEDIA_CODECS)

    # Until the respawn, new routers land on the survivor.
    if not respawned.done():
        assert (await pool.create_router(MEDIA_CODECS)).worker is survivor
    fresh = await asyncio.wait_for(respawned, 10)
    assert fresh is not victim and fresh.pid != victim.pid and not fresh.closed
    assert fresh.app_data["index"] == victim.app_data["index"]
    assert set(pool.workers) == {survivor, fresh}
    assert await victim.wait_closed() == -signal.SIGKILL
    assert not _process_exists(victim.pid)

    # The respawned worker takes new rooms (it is the least loaded) and they work.
    for _ in range(2):
        await (await survivor.create_router(MEDIA_CODECS)).create_webrtc_transport(listen_ips=["127.0.0.1"])
    router = await pool.create_router(MEDIA_CODECS)
    assert router.worker is fresh
    send = await router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    recv = await router.create_plain_transport(listen_ip="127.0.0.1")
    producer = await send.produce("audio", AUDIO_RTP_PARAMETERS)
    consumer = await recv.consume(producer.id, router.rtp_capabilities)
    assert consumer.kind == "audio" and not consumer.closed
    assert set((await router.dump())["transportIds"]) == {send.id, recv.id}


async def test_a_worker_that_dies_again_is_respawned_again(pool: WorkerPool) -> None:
    for _ in range(2):
        victim = pool.workers[0]
        respawned: asyncio.Future = asyncio.get_running_loop().create_future()
        pool.once("workerrespawned", lambda worker, f=respawned: f.set_result(worker))
        os.kill(victim.pid, signal.SIGKILL)
        fresh = await asyncio.wait_for(respawned, 10)
        assert fresh.pid != victim.pid and len(pool.workers) == 2
    assert all(not w.closed for w in pool.workers)


async def test_close_ends_every_process() -> None:
    require_worker_binary()
    pool = WorkerPool(num_workers=3, worker_settings=WorkerSettings(log_level="none"), respawn_delay=0.05)
    await pool.start()
    workers = list(pool.workers)
    routers = [await worker.create_router(MEDIA_CODECS) for worker in workers]
    # A worker that dies just before close() is not respawned.
    died: asyncio.Future = asyncio.get_running_loop().create_future()
    pool.once("workerdied", lambda *args: died.set_result(True))
    respawns: list = []
    pool.on("workerrespawned", respawns.append)
    os.kill(workers[0].pid, signal.SIGKILL)
    await asyncio.wait_for(died, 5)
    await pool.close()
    await asyncio.sleep(0.2)
    assert respawns == []
    assert all(w.closed for w in workers) and pool.workers == []
    assert all(r.closed for r in routers)
    for worker in workers:
        assert worker.subprocess_closed
        assert not _process_exists(worker.pid)
    assert [await w.wait_closed() for w in workers[1:]] == [0, 0]
    await pool.close()  # idempotent


async def test_a_stopped_worker_is_detected_skipped_killed_and_replaced(pool: WorkerPool) -> None:
    """SIGSTOP: the process lives but answers nothing. The health probe notices it
    within 5 s, placement passes it over meanwhile, and it goes the worker-death way
    (killed, its routers reported lost, replaced)."""
    victim_router = await pool.create_router(MEDIA_CODECS)
    victim = victim_router.worker
    [survivor] = [w for w in pool.workers if w is not victim]
    # Make the victim the least loaded, so placement would pick it if it could.
    busy = await survivor.create_router(MEDIA_CODECS)
    for _ in range(2):
        await busy.create_webrtc_transport(listen_ips=["127.0.0.1"])
    assert pool.least_loaded() is victim

    loop = asyncio.get_running_loop()
    hung: asyncio.Future = loop.create_future()
    died: asyncio.Future = loop.create_future()
    respawned: asyncio.Future = loop.create_future()
    pool.once("workerhung", lambda worker: hung.set_result((worker, time.monotonic())))
    pool.once("workerdied", lambda worker, routers, error: died.set_result((worker, routers, error)))
    pool.once("workerrespawned", lambda worker: respawned.set_result(worker))

    os.kill(victim.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        # New routers never go to the stopped worker, even before it is declared hung.
        placed = []
        while not hung.done():
            placed.append(await pool.pick_worker())
            await asyncio.sleep(0.2)
        assert placed and all(w is survivor for w in placed), placed
        worker, hung_at = await hung
        assert worker is victim and hung_at - stopped_at < 5.0
        worker, lost, error = await asyncio.wait_for(died, 2)
        assert worker is victim and victim.died and victim.closed
        assert lost == [victim_router] and victim_router.closed
        assert "stopped answering" in str(error)
        new = await asyncio.wait_for(respawned, 10)
        assert new.pid != victim.pid and (await new.dump())["pid"] == new.pid
        await eventually(lambda: not _process_exists(victim.pid), timeout=5, what="the stopped worker killed")
    finally:
        if _process_exists(victim.pid):
            os.kill(victim.pid, signal.SIGKILL)


async def test_a_slow_answer_is_not_a_hang(pool: WorkerPool) -> None:
    """A worker stopped for less than the probe timeout is only passed over by
    placement while its probe is overdue; it is not killed."""
    died: list[object] = []
    pool.on("workerdied", lambda *args: died.append(args))
    worker = pool.workers[0]
    os.kill(worker.pid, signal.SIGSTOP)
    await asyncio.sleep(1.5)
    os.kill(worker.pid, signal.SIGCONT)
    await asyncio.sleep(pool.health_timeout + pool.health_interval + 0.5)
    assert not died and not worker.closed and pool.responsive(worker)
    assert (await worker.dump())["pid"] == worker.pid


async def test_a_busy_worker_is_probed_again_not_killed() -> None:
    """A probe queued behind a burst of requests (a join storm) is answered late, but
    the worker kept answering the others meanwhile: it is busy, not hung, and keeps
    its rooms. (Before, the burst alone got it killed with every room on it.)"""
    require_worker_binary()
    pool = WorkerPool(
        num_workers=1,
        worker_settings=WorkerSettings(log_level="none"),
        health_interval=0.05,
        health_timeout=0.2,
    )
    await pool.start()
    try:
        worker = pool.workers[0]
        router = await worker.create_router(MEDIA_CODECS)
        for _ in range(20):
            await router.create_webrtc_transport(listen_ips=["127.0.0.1"])
        busy: list[object] = []
        hung: list[object] = []
        pool.on("workerbusy", busy.append)
        pool.on("workerhung", hung.append)
        # One burst of ~2 s: every probe sent meanwhile waits behind hundreds of dumps
        # (the worker answers them all the while). The assertions follow at once: an
        # idle worker is never left with a probe older than the timeout here.
        for _ in range(3):  # bounded; the first burst is normally enough
            await asyncio.gather(*(router.dump() for _ in range(3000)))
            if busy:
                break
        assert busy, "no probe ever waited behind the burst: the test proves nothing"
        assert not hung and not worker.closed and not router.closed
        assert (await worker.dump())["pid"] == worker.pid
    finally:
        await pool.close()

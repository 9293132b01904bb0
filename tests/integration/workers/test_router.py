"""Router, against the real worker (after mediasoup's test-Router.ts)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.plugin_workers import MEDIA_CODECS
from workers.errors import InvalidStateError, MediasoupTypeError, NotFoundError, UnsupportedError
from workers.worker import Worker

UNSUPPORTED_MEDIA_CODECS = [
    {"kind": "audio", "mimeType": "audio/x-aiff", "clockRate": 8000, "channels": 1},
    {"kind": "video", "mimeType": "video/3gpp", "clockRate": 90000},
]


def _once(emitter: Any, event: str) -> asyncio.Future:
    """A future resolved with the args of the next ``event`` (mediasoup's ``enhancedOnce``)."""
    future: asyncio.Future = asyncio.get_running_loop().create_future()
    emitter.once(event, lambda *args: future.done() or future.set_result(args))
    return future


async def test_create_router_succeeds(worker: Worker) -> None:
    new_routers: list = []
    worker.observer.once("newrouter", new_routers.append)
    router = await worker.create_router(MEDIA_CODECS, app_data={"foo": 123})
    assert new_routers == [router]
    assert isinstance(router.id, str) and not router.closed
    caps = router.rtp_capabilities
    assert isinstance(caps["codecs"], list) and len(caps["codecs"]) == 5  # 3 codecs + 2 RTX codecs
    assert isinstance(caps["headerExtensions"], list)
    assert router.app_data == {"foo": 123}
    router.app_data = {"foo": 222, "bar": "BBB"}
    dump = await worker.dump()
    assert dump["pid"] == worker.pid
    assert dump["webRtcServerIds"] == [] and dump["routerIds"] == [router.id]
    assert dump["channelMessageHandlers"] == {
        "channelRequestHandlers": [router.id],
        "channelNotificationHandlers": [],
    }
    assert await router.dump() == {
        "id": router.id,
        "transportIds": [],
        "rtpObserverIds": [],
        "mapProducerIdConsumerIds": [],
        "mapConsumerIdProducerId": [],
        "mapProducerIdObserverIds": [],
        "mapDataProducerIdDataConsumerIds": [],
        "mapDataConsumerIdDataProducerId": [],
    }
    assert worker.routers == {router}
    worker.close()
    assert router.closed
    assert worker.routers == set()


async def test_create_router_does_not_modify_the_given_codecs(worker: Worker) -> None:
    codecs = [dict(codec) for codec in MEDIA_CODECS]
    before = repr(codecs)
    await worker.create_router(codecs)
    assert repr(codecs) == before


async def test_create_router_with_unsupported_codecs_raises_unsupported_error(worker: Worker) -> None:
    with pytest.raises(UnsupportedError):
        await worker.create_router(UNSUPPORTED_MEDIA_CODECS)
    assert worker.routers == set()


async def test_create_router_with_wrong_arguments_raises_type_error(worker: Worker) -> None:
    with pytest.raises(MediasoupTypeError):
        await worker.create_router({})  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await worker.create_router(app_data="NOT-AN-OBJECT")  # type: ignore[arg-type]


async def test_create_router_without_codecs_has_no_codecs(worker: Worker) -> None:
    router = await worker.create_router()
    assert router.rtp_capabilities["codecs"] == []
    assert router.rtp_capabilities["headerExtensions"]


async def test_create_router_raises_invalid_state_if_worker_closed(worker: Worker) -> None:
    worker.close()
    with pytest.raises(InvalidStateError):
        await worker.create_router(MEDIA_CODECS)


async def test_rtp_capabilities_getter_returns_a_copy(worker: Worker) -> None:
    router = await worker.create_router(MEDIA_CODECS)
    original = router.rtp_capabilities
    router.rtp_capabilities["headerExtensions"] = []
    router.rtp_capabilities["codecs"][0]["mimeType"] = "audio/chicken"
    assert router.rtp_capabilities == original


async def test_update_media_codecs(worker: Worker) -> None:
    router = await worker.create_router(MEDIA_CODECS)
    assert len(router.rtp_capabilities["codecs"]) == 5
    router.update_media_codecs([])
    assert router.rtp_capabilities["codecs"] == []
    assert isinstance(router.rtp_capabilities["headerExtensions"], list)
    with pytest.raises(UnsupportedError):
        router.update_media_codecs(UNSUPPORTED_MEDIA_CODECS)
    assert router.rtp_capabilities["codecs"] == []


async def test_router_close(worker: Worker) -> None:
    router = await worker.create_router(MEDIA_CODECS)
    closed: list = []
    router.observer.once("close", lambda: closed.append(True))
    router.close()
    router.close()  # idempotent
    assert closed == [True] and router.closed
    with pytest.raises(NotFoundError):
        await router.dump()
    assert (await worker.dump())["routerIds"] == []
    with pytest.raises(InvalidStateError):
        await router.create_plain_transport(listen_info={"protocol": "udp", "ip": "127.0.0.1"})


async def test_router_emits_workerclose_when_worker_closes(worker: Worker) -> None:
    router = await worker.create_router(MEDIA_CODECS)
    observer_closed: list = []
    router.observer.once("close", lambda: observer_closed.append(True))
    workerclose = _once(router, "workerclose")
    worker.close()
    await asyncio.wait_for(workerclose, 2)
    assert observer_closed == [True] and router.closed
    with pytest.raises(InvalidStateError):
        await router.dump()


async def test_router_close_closes_transports_and_drops_producers(worker: Worker) -> None:
    router = await worker.create_router(MEDIA_CODECS)
    transport = await router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    producer = await transport.produce(
        "audio",
        {
            "mid": "AUDIO",
            "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
            "encodings": [{"ssrc": 1111}],
        },
    )
    assert router.producers == {producer.id: producer}
    events: list = []
    transport.once("routerclose", lambda: events.append("transport routerclose"))
    producer.once("transportclose", lambda: events.append("producer transportclose"))
    router.close()
    assert events == ["producer transportclose", "transport routerclose"]
    assert transport.closed and producer.closed
    assert router.transports == {} and router.producers == {}


async def test_can_consume(worker: Worker) -> None:
    router = await worker.create_router(MEDIA_CODECS)
    transport = await router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    producer = await transport.produce(
        "audio",
        {
            "mid": "AUDIO",
            "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
            "encodings": [{"ssrc": 1111}],
        },
    )
    assert router.can_consume(producer.id, router.rtp_capabilities)
    assert not router.can_consume(producer.id, {"codecs": [], "headerExtensions": []})
    assert not router.can_consume("unknown", router.rtp_capabilities)
    producer.close()
    assert not router.can_consume(producer.id, router.rtp_capabilities)

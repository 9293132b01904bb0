"""PipeTransport and Router.pipe_to_router(), against two real workers (after
mediasoup's test-PipeTransport.ts), plus media really crossing workers: RTP
injected into a producer on one worker comes out of a consumer on the other,
through DirectTransports, PlainTransports and an SRTP-protected pipe.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.plugin_workers import require_worker_binary
from workers.errors import InvalidStateError, MediasoupError, MediasoupTypeError, NotFoundError
from workers.pipe_transport import PipeTransport
from workers.worker import Worker, WorkerSettings

# The codecs and producers of mediasoup's test-PipeTransport.ts.
MEDIA_CODECS = [
    {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
]
AUDIO_PRODUCER = {
    "kind": "audio",
    "rtp_parameters": {
        "mid": "AUDIO",
        "codecs": [
            {
                "mimeType": "audio/opus",
                "payloadType": 111,
                "clockRate": 48000,
                "channels": 2,
                "parameters": {"useinbandfec": 1, "foo": "bar1"},
            }
        ],
        "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 10}],
        "encodings": [{"ssrc": 11111111}],
        "rtcp": {"cname": "FOOBAR"},
    },
    "app_data": {"foo": "bar1"},
}
VIDEO_PRODUCER = {
    "kind": "video",
    "rtp_parameters": {
        "mid": "VIDEO",
        "codecs": [
            {
                "mimeType": "video/VP8",
                "payloadType": 112,
                "clockRate": 90000,
                "rtcpFeedback": [
                    {"type": "nack"},
                    {"type": "nack", "parameter": "pli"},
                    {"type": "goog-remb"},
                    {"type": "lalala"},
                ],
            }
        ],
        "headerExtensions": [
            {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 10},
            {"uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": 11},
            {"uri": "urn:3gpp:video-orientation", "id": 13},
        ],
        "encodings": [{"ssrc": 22222222}, {"ssrc": 22222223}, {"ssrc": 22222224}],
        "rtcp": {"cname": "FOOBAR"},
        "msid": "aaaa-bbbb",
    },
    "app_data": {"foo": "bar2"},
}
DATA_PRODUCER = {
    "sctp_stream_parameters": {"streamId": 666, "ordered": False, "maxPacketLifeTime": 5000},
    "label": "foo",
    "protocol": "bar",
}
CONSUMER_DEVICE_CAPABILITIES = {
    "codecs": [
        {"kind": "audio", "mimeType": "audio/opus", "preferredPayloadType": 100, "clockRate": 48000, "channels": 2},
        {
            "kind": "video",
            "mimeType": "video/VP8",
            "preferredPayloadType": 101,
            "clockRate": 90000,
            "rtcpFeedback": [{"type": "nack"}, {"type": "ccm", "parameter": "fir"}, {"type": "transport-cc"}],
        },
        {
            "kind": "video",
            "mimeType": "video/rtx",
            "preferredPayloadType": 102,
            "clockRate": 90000,
            "parameters": {"apt": 101},
            "rtcpFeedback": [],
        },
    ],
    "headerExtensions": [
        {
            "kind": "video",
            "uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            "preferredId": 4,
            "preferredEncrypt": False,
            "direction": "sendrecv",
        },
        {
            "kind": "video",
            "uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            "preferredId": 5,
            "preferredEncrypt": False,
        },
        {
            "kind": "audio",
            "uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "preferredId": 6,
            "preferredEncrypt": False,
        },
    ],
}
LOCALHOST = {"protocol": "udp", "ip": "127.0.0.1"}
SRTP_KEY = "YTdjcDBvY2JoMGY5YXNlNDc0eDJsdGgwaWRvNnJsamRrdG16aWVpZHphdHo="
DD_EXT = {
    "uri": "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension",
    "id": 7,
    "encrypt": False,
    "parameters": {},
}


def ext(uri: str, ext_id: int) -> dict[str, Any]:
    return {"uri": uri, "id": ext_id, "encrypt": False, "parameters": {}}


# mediasoup 3.27.1 offers abs-capture-time only for producers that negotiated it,
# which none of these do.
AUDIO_PIPE_EXTENSIONS = [
    ext("urn:ietf:params:rtp-hdrext:ssrc-audio-level", 6),
    DD_EXT,
    ext("http://www.webrtc.org/experiments/rtp-hdrext/playout-delay", 11),
    ext("urn:mediasoup:params:rtp-hdrext:packet-id", 12),
]
VIDEO_PIPE_EXTENSIONS = [
    DD_EXT,
    ext("urn:3gpp:video-orientation", 8),
    ext("urn:ietf:params:rtp-hdrext:toffset", 9),
    ext("http://www.webrtc.org/experiments/rtp-hdrext/playout-delay", 11),
    ext("urn:mediasoup:params:rtp-hdrext:packet-id", 12),
]


def _once(emitter: Any, event: str) -> asyncio.Future:
    future: asyncio.Future = asyncio.get_running_loop().create_future()
    emitter.once(event, lambda *args: future.done() or future.set_result(args))
    return future


async def _new_worker() -> Worker:
    return await Worker.create(WorkerSettings(log_level="warn"))


async def _close_workers(*workers: Worker) -> None:
    for worker in workers:
        worker.close()
    for worker in workers:
        await worker.wait_closed()


@pytest.fixture
async def ctx() -> AsyncIterator[SimpleNamespace]:
    """mediasoup's beforeEach: two workers, a router on each, a WebRtcTransport on
    each, an audio, a video and a data producer on the first."""
    require_worker_binary()
    worker1, worker2 = await _new_worker(), await _new_worker()
    try:
        router1 = await worker1.create_router(MEDIA_CODECS)
        router2 = await worker2.create_router(MEDIA_CODECS)
        webrtc1 = await router1.create_webrtc_transport(listen_infos=[LOCALHOST], enable_sctp=True)
        webrtc2 = await router2.create_webrtc_transport(listen_ips=["127.0.0.1"], enable_sctp=True)
        audio_producer = await webrtc1.produce(**AUDIO_PRODUCER)
        video_producer = await webrtc1.produce(**VIDEO_PRODUCER)
        data_producer = await webrtc1.produce_data(**DATA_PRODUCER)
        yield SimpleNamespace(
            worker1=worker1,
            worker2=worker2,
            router1=router1,
            router2=router2,
            webrtc1=webrtc1,
            webrtc2=webrtc2,
            audio_producer=audio_producer,
            video_producer=video_producer,
            data_producer=data_producer,
        )
    finally:
        await _close_workers(worker1, worker2)


# -- pipe_to_router with media -----------------------------------------------------------


async def test_pipe_to_router_succeeds_with_audio(ctx: SimpleNamespace) -> None:
    result = await ctx.router1.pipe_to_router(producer_id=ctx.audio_producer.id, router=ctx.router2)
    pipe_consumer, pipe_producer = result["pipeConsumer"], result["pipeProducer"]

    # Each router: its WebRtcTransport and one PipeTransport.
    assert len((await ctx.router1.dump())["transportIds"]) == 2
    assert len((await ctx.router2.dump())["transportIds"]) == 2

    expected_codecs = [
        {
            "mimeType": "audio/opus",
            "payloadType": 100,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"useinbandfec": 1, "foo": "bar1"},
            "rtcpFeedback": [],
        }
    ]
    assert isinstance(pipe_consumer.id, str) and not pipe_consumer.closed
    assert pipe_consumer.kind == "audio"
    assert "mid" not in pipe_consumer.rtp_parameters
    assert pipe_consumer.rtp_parameters["codecs"] == expected_codecs
    assert pipe_consumer.rtp_parameters["headerExtensions"] == AUDIO_PIPE_EXTENSIONS
    assert pipe_consumer.type == "pipe"
    assert pipe_consumer.paused is False and pipe_consumer.producer_paused is False
    assert pipe_consumer.score == {"score": 10, "producerScore": 10, "producerScores": []}
    assert pipe_consumer.app_data == {}

    assert pipe_producer.id == ctx.audio_producer.id
    assert not pipe_producer.closed
    assert pipe_producer.kind == "audio"
    assert "mid" not in pipe_producer.rtp_parameters
    assert pipe_producer.rtp_parameters["codecs"] == expected_codecs
    assert pipe_producer.rtp_parameters["headerExtensions"] == AUDIO_PIPE_EXTENSIONS
    assert pipe_producer.paused is False
    assert pipe_producer.app_data == {"foo": "bar1"}
    assert pipe_producer.transport.type == "pipe" and pipe_producer.transport.router is ctx.router2


async def test_pipe_to_router_succeeds_with_paused_video(ctx: SimpleNamespace) -> None:
    await ctx.router1.pipe_to_router(producer_id=ctx.audio_producer.id, router=ctx.router2)
    await ctx.video_producer.pause()
    result = await ctx.router1.pipe_to_router(producer_id=ctx.video_producer.id, router=ctx.router2)
    pipe_consumer, pipe_producer = result["pipeConsumer"], result["pipeProducer"]

    # The existing PipeTransport pair is reused.
    assert len((await ctx.router1.dump())["transportIds"]) == 2
    assert len((await ctx.router2.dump())["transportIds"]) == 2

    expected_codecs = [
        {
            "mimeType": "video/VP8",
            "payloadType": 101,
            "clockRate": 90000,
            "parameters": {},
            "rtcpFeedback": [{"type": "nack", "parameter": "pli"}, {"type": "ccm", "parameter": "fir"}],
        }
    ]
    assert pipe_consumer.kind == "video"
    assert "mid" not in pipe_consumer.rtp_parameters
    assert pipe_consumer.rtp_parameters["codecs"] == expected_codecs
    assert pipe_consumer.rtp_parameters["headerExtensions"] == VIDEO_PIPE_EXTENSIONS
    # Every encoding crosses the pipe (the far router selects layers), without RTX.
    encodings = pipe_consumer.rtp_parameters["encodings"]
    assert len(encodings) == 3 and all("rtx" not in encoding for encoding in encodings)
    assert pipe_consumer.type == "pipe"
    assert pipe_consumer.paused is False and pipe_consumer.producer_paused is True
    assert pipe_consumer.score == {"score": 10, "producerScore": 10, "producerScores": []}

    assert pipe_producer.id == ctx.video_producer.id
    assert pipe_producer.kind == "video"
    assert pipe_producer.rtp_parameters["codecs"] == expected_codecs
    assert pipe_producer.rtp_parameters["headerExtensions"] == VIDEO_PIPE_EXTENSIONS
    assert pipe_producer.paused is True


async def test_pipe_to_router_with_unknown_router_producer_or_data_producer_fails(ctx: SimpleNamespace) -> None:
    router3 = await ctx.worker1.create_router(MEDIA_CODECS)
    router3.close()
    # mediasoup gets NotFoundError from the worker here; our routers refuse
    # requests once closed, before asking the worker.
    with pytest.raises(InvalidStateError):
        await ctx.router1.pipe_to_router(router=router3, producer_id=ctx.video_producer.id)
    with pytest.raises(NotFoundError):
        await ctx.router1.pipe_to_router(router=ctx.router2, producer_id="12345678")
    with pytest.raises(NotFoundError):
        await ctx.router1.pipe_to_router(router=ctx.router2, data_producer_id="12345678")
    # The failed pair left nothing behind: no PipeTransport, no cached pair.
    assert len((await ctx.router1.dump())["transportIds"]) == 1
    assert ctx.router1.pipe_transport_pairs == {}


async def test_pipe_to_router_with_wrong_arguments_fails(ctx: SimpleNamespace) -> None:
    router1bis = await ctx.worker1.create_router(MEDIA_CODECS)
    with pytest.raises(MediasoupTypeError):
        await ctx.router1.pipe_to_router(router=router1bis)
    with pytest.raises(MediasoupTypeError):
        await ctx.router1.pipe_to_router(producer_id="1234", data_producer_id="5678", router=router1bis)
    with pytest.raises(MediasoupTypeError):
        await ctx.router1.pipe_to_router(producer_id=ctx.audio_producer.id)
    with pytest.raises(MediasoupTypeError):
        await ctx.router1.pipe_to_router(producer_id=ctx.audio_producer.id, router=ctx.router1)
    with pytest.raises(MediasoupTypeError):
        await ctx.router1.pipe_to_router(
            producer_id=ctx.audio_producer.id, router=router1bis, listen_info=LOCALHOST, listen_ip="127.0.0.1"
        )


async def test_pipe_to_router_with_keep_id_fails_if_both_routers_share_a_worker(ctx: SimpleNamespace) -> None:
    router1bis = await ctx.worker1.create_router(MEDIA_CODECS)
    with pytest.raises(MediasoupError):
        await ctx.router1.pipe_to_router(producer_id=ctx.video_producer.id, router=router1bis, keep_id=True)
    # The pipe consumer made before the failure was closed again.
    assert all(not transport.consumers for transport in ctx.router1.transports.values())


async def test_pipe_to_router_without_keep_id_succeeds_on_the_same_worker(ctx: SimpleNamespace) -> None:
    router1bis = await ctx.worker1.create_router(MEDIA_CODECS)
    result = await ctx.router1.pipe_to_router(producer_id=ctx.video_producer.id, router=router1bis, keep_id=False)
    assert result["pipeProducer"].id != ctx.video_producer.id
    assert result["pipeProducer"].id in router1bis.producers


# -- create_pipe_transport ---------------------------------------------------------------


async def test_create_pipe_transport_with_wrong_arguments_raises_type_error(ctx: SimpleNamespace) -> None:
    router = ctx.router1
    with pytest.raises(MediasoupTypeError):
        await router.create_pipe_transport()
    with pytest.raises(MediasoupTypeError):
        await router.create_pipe_transport(listen_info={**LOCALHOST, "portRange": {"min": 4000, "max": 3000}})
    with pytest.raises(MediasoupTypeError):
        await router.create_pipe_transport(listen_ip="123")
    with pytest.raises(MediasoupTypeError):
        await router.create_pipe_transport(listen_ip=["127.0.0.1"])
    with pytest.raises(MediasoupTypeError):
        await router.create_pipe_transport(listen_info={"protocol": "tcp", "ip": "127.0.0.1"})
    with pytest.raises(MediasoupTypeError):
        await router.create_pipe_transport(listen_info=LOCALHOST, app_data="NOT-AN-OBJECT")
    with pytest.raises(MediasoupTypeError):
        await router.create_pipe_transport(listen_info=LOCALHOST, listen_ip="127.0.0.1")
    # Nothing was created by the refused requests.
    assert len((await router.dump())["transportIds"]) == 1


async def test_create_pipe_transport_succeeds_and_dumps(ctx: SimpleNamespace) -> None:
    new_transports: list[Any] = []
    ctx.router1.observer.once("newtransport", new_transports.append)
    transport = await ctx.router1.create_pipe_transport(
        listen_info={**LOCALHOST, "portRange": {"min": 2000, "max": 3000}},
        enable_sctp=True,
        app_data={"foo": "bar"},
    )
    assert new_transports == [transport]
    assert isinstance(transport, PipeTransport) and transport.type == "pipe"
    assert transport.app_data == {"foo": "bar"}
    assert transport.tuple["localAddress"] == "127.0.0.1" and 2000 <= transport.tuple["localPort"] <= 3000
    assert transport.tuple["protocol"] == "udp"
    assert transport.srtp_parameters is None and transport.rtx is False
    assert transport.sctp_parameters is not None
    assert transport.sctp_parameters["port"] == 5000 and transport.sctp_parameters["MIS"] == 65535
    assert transport.sctp_state == "new"
    assert transport.id in ctx.router1.transports

    dump = await transport.dump()
    assert dump["id"] == transport.id
    assert dump["direct"] is False
    assert dump["producerIds"] == [] and dump["consumerIds"] == []
    assert dump["tuple"] == transport.tuple
    assert dump["rtx"] is False
    assert "srtpParameters" not in dump
    assert dump["sctpParameters"]["MIS"] == 65535 and dump["sctpState"] == "new"

    stats = await transport.get_stats()
    assert len(stats) == 1
    assert stats[0]["type"] == "pipe-transport"
    assert stats[0]["transportId"] == transport.id
    assert isinstance(stats[0]["timestamp"], int)
    assert stats[0]["tuple"] == transport.tuple
    assert stats[0]["bytesReceived"] == 0 and stats[0]["bytesSent"] == 0


async def test_create_pipe_transport_with_fixed_port_succeeds(ctx: SimpleNamespace) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = await ctx.router1.create_pipe_transport(listen_info={**LOCALHOST, "port": port})
    assert transport.tuple["localPort"] == port


async def test_pipe_transport_with_enable_rtx_consumes_with_rtx(ctx: SimpleNamespace) -> None:
    transport = await ctx.router1.create_pipe_transport(
        listen_info={**LOCALHOST, "portRange": {"min": 2000, "max": 3000}}, enable_rtx=True
    )
    assert transport.type == "pipe" and transport.rtx is True
    pipe_consumer = await transport.consume(ctx.video_producer.id)
    assert pipe_consumer.kind == "video"
    assert "mid" not in pipe_consumer.rtp_parameters
    assert pipe_consumer.rtp_parameters["codecs"] == [
        {
            "mimeType": "video/VP8",
            "payloadType": 101,
            "clockRate": 90000,
            "parameters": {},
            "rtcpFeedback": [
                {"type": "nack", "parameter": ""},
                {"type": "nack", "parameter": "pli"},
                {"type": "ccm", "parameter": "fir"},
            ],
        },
        {
            "mimeType": "video/rtx",
            "payloadType": 102,
            "clockRate": 90000,
            "parameters": {"apt": 101},
            "rtcpFeedback": [],
        },
    ]
    assert pipe_consumer.rtp_parameters["headerExtensions"] == VIDEO_PIPE_EXTENSIONS
    assert all("rtx" in encoding for encoding in pipe_consumer.rtp_parameters["encodings"])
    assert pipe_consumer.type == "pipe"
    assert pipe_consumer.paused is False and pipe_consumer.producer_paused is False
    assert pipe_consumer.score == {"score": 10, "producerScore": 10, "producerScores": []}
    assert pipe_consumer.app_data == {}
    assert (await transport.dump())["consumerIds"] == [pipe_consumer.id]


async def test_pipe_transport_consume_with_unknown_producer_fails(ctx: SimpleNamespace) -> None:
    transport = await ctx.router1.create_pipe_transport(listen_info=LOCALHOST)
    with pytest.raises(NotFoundError):
        await transport.consume("nope")
    with pytest.raises(MediasoupTypeError):
        await transport.consume("")
    with pytest.raises(MediasoupTypeError):
        await transport.consume(ctx.audio_producer.id, app_data="NOT-AN-OBJECT")


# -- connect and SRTP --------------------------------------------------------------------


async def test_pipe_transport_connect_with_valid_srtp_parameters_succeeds(ctx: SimpleNamespace) -> None:
    transport = await ctx.router1.create_pipe_transport(listen_ip="127.0.0.1", enable_srtp=True)
    assert transport.srtp_parameters["cryptoSuite"] == "AEAD_AES_256_GCM"
    assert len(transport.srtp_parameters["keyBase64"]) == 60  # AEAD_AES_256_GCM master key + salt
    await transport.connect(
        ip="127.0.0.2", port=9999, srtp_parameters={"cryptoSuite": "AEAD_AES_256_GCM", "keyBase64": SRTP_KEY}
    )
    assert transport.tuple["remoteIp"] == "127.0.0.2" and transport.tuple["remotePort"] == 9999
    assert (await transport.dump())["srtpParameters"] == transport.srtp_parameters


async def test_pipe_transport_connect_with_srtp_parameters_fails_if_srtp_is_off(ctx: SimpleNamespace) -> None:
    transport = await ctx.router1.create_pipe_transport(
        listen_info={**LOCALHOST, "portRange": {"min": 2000, "max": 3000}}, enable_rtx=True
    )
    assert transport.srtp_parameters is None
    with pytest.raises(MediasoupTypeError):
        await transport.connect(
            ip="127.0.0.2", port=9999, srtp_parameters={"cryptoSuite": "AEAD_AES_256_GCM", "keyBase64": SRTP_KEY}
        )
    with pytest.raises(MediasoupTypeError):
        await transport.connect(ip="127.0.0.2", port=9999, srtp_parameters="invalid")


async def test_pipe_transport_connect_with_invalid_srtp_parameters_fails(ctx: SimpleNamespace) -> None:
    transport = await ctx.router1.create_pipe_transport(listen_ip="127.0.0.1", enable_srtp=True)
    invalid: list[Any] = [
        1,
        {"keyBase64": SRTP_KEY},
        {"cryptoSuite": "AEAD_AES_256_GCM"},
        {"cryptoSuite": "FOO", "keyBase64": SRTP_KEY},
        {"cryptoSuite": 123, "keyBase64": SRTP_KEY},
        {"cryptoSuite": "AEAD_AES_256_GCM", "keyBase64": []},
    ]
    with pytest.raises(MediasoupTypeError):  # missing while SRTP is on
        await transport.connect(ip="127.0.0.2", port=9999)
    for srtp_parameters in invalid:
        with pytest.raises(MediasoupTypeError):
            await transport.connect(ip="127.0.0.2", port=9999, srtp_parameters=srtp_parameters)
    # The channel's shared builder is left clean: the next request works.
    await transport.connect(
        ip="127.0.0.2", port=9999, srtp_parameters={"cryptoSuite": "AEAD_AES_256_GCM", "keyBase64": SRTP_KEY}
    )


# -- consumers of pipe producers, and what propagates -------------------------------------


async def test_consume_of_a_pipe_producer_succeeds(ctx: SimpleNamespace) -> None:
    result = await ctx.router1.pipe_to_router(producer_id=ctx.video_producer.id, router=ctx.router2)
    consumer = await ctx.webrtc2.consume(result["pipeProducer"].id, CONSUMER_DEVICE_CAPABILITIES)
    assert not consumer.closed and consumer.kind == "video"
    assert consumer.rtp_parameters["mid"] == "0"
    assert consumer.rtp_parameters["codecs"] == [
        {
            "mimeType": "video/VP8",
            "payloadType": 101,
            "clockRate": 90000,
            "parameters": {},
            "rtcpFeedback": [
                {"type": "nack", "parameter": ""},
                {"type": "ccm", "parameter": "fir"},
                {"type": "transport-cc", "parameter": ""},
            ],
        },
        {
            "mimeType": "video/rtx",
            "payloadType": 102,
            "clockRate": 90000,
            "parameters": {"apt": 101},
            "rtcpFeedback": [],
        },
    ]
    assert consumer.rtp_parameters["headerExtensions"] == [
        ext("http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", 4),
        ext("http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", 5),
    ]
    encodings = consumer.rtp_parameters["encodings"]
    assert len(encodings) == 1
    assert isinstance(encodings[0]["ssrc"], int) and isinstance(encodings[0]["rtx"]["ssrc"], int)
    assert consumer.rtp_parameters["msid"] == "aaaa-bbbb"
    assert consumer.type == "simulcast"
    assert consumer.paused is False and consumer.producer_paused is False
    assert consumer.score == {"score": 10, "producerScore": 0, "producerScores": [0, 0, 0]}
    assert consumer.app_data == {}


async def test_producer_pause_and_resume_reach_the_pipe_producer_and_its_consumers(ctx: SimpleNamespace) -> None:
    await ctx.video_producer.pause()
    result = await ctx.router1.pipe_to_router(producer_id=ctx.video_producer.id, router=ctx.router2)
    pipe_producer = result["pipeProducer"]
    consumer = await ctx.webrtc2.consume(pipe_producer.id, CONSUMER_DEVICE_CAPABILITIES)
    assert consumer.producer_paused is True and consumer.paused is False

    resumed = asyncio.gather(_once(consumer, "producerresume"), _once(pipe_producer.observer, "resume"))
    await ctx.video_producer.resume()
    await asyncio.wait_for(resumed, 5)
    assert consumer.producer_paused is False and consumer.paused is False
    assert pipe_producer.paused is False

    paused = asyncio.gather(_once(consumer, "producerpause"), _once(pipe_producer.observer, "pause"))
    await ctx.video_producer.pause()
    await asyncio.wait_for(paused, 5)
    assert consumer.producer_paused is True and consumer.paused is False
    assert pipe_producer.paused is True


async def test_producer_close_reaches_the_pipe_producer_and_its_consumers(ctx: SimpleNamespace) -> None:
    result = await ctx.router1.pipe_to_router(producer_id=ctx.video_producer.id, router=ctx.router2)
    pipe_consumer, pipe_producer = result["pipeConsumer"], result["pipeProducer"]
    consumer = await ctx.webrtc2.consume(pipe_producer.id, CONSUMER_DEVICE_CAPABILITIES)
    closed = _once(consumer, "producerclose")
    ctx.video_producer.close()
    assert ctx.video_producer.closed
    await asyncio.wait_for(closed, 5)
    assert consumer.closed and pipe_consumer.closed and pipe_producer.closed
    assert pipe_producer.id not in ctx.router2.producers
    with pytest.raises(NotFoundError):
        await consumer.dump()


async def test_pipe_producer_close_closes_the_pipe_consumer(ctx: SimpleNamespace) -> None:
    result = await ctx.router1.pipe_to_router(producer_id=ctx.audio_producer.id, router=ctx.router2)
    pipe_consumer, pipe_producer = result["pipeConsumer"], result["pipeProducer"]
    pipe_producer.close()
    assert pipe_consumer.closed
    assert not ctx.audio_producer.closed
    local = pipe_consumer.transport
    assert (await local.dump())["consumerIds"] == []


# -- data --------------------------------------------------------------------------------


async def test_pipe_to_router_succeeds_with_data(ctx: SimpleNamespace) -> None:
    result = await ctx.router1.pipe_to_router(data_producer_id=ctx.data_producer.id, router=ctx.router2)
    pipe_data_consumer, pipe_data_producer = result["pipeDataConsumer"], result["pipeDataProducer"]
    assert len((await ctx.router1.dump())["transportIds"]) == 2
    assert len((await ctx.router2.dump())["transportIds"]) == 2

    for entity in (pipe_data_consumer, pipe_data_producer):
        assert not entity.closed and entity.type == "sctp"
        params = entity.sctp_stream_parameters
        assert isinstance(params["streamId"], int)
        assert params["ordered"] is False and params["maxPacketLifeTime"] == 5000
        assert params.get("maxRetransmits") is None
        assert entity.label == "foo" and entity.protocol == "bar"
    assert pipe_data_producer.id == ctx.data_producer.id


async def test_consume_data_of_a_pipe_data_producer_succeeds(ctx: SimpleNamespace) -> None:
    result = await ctx.router1.pipe_to_router(data_producer_id=ctx.data_producer.id, router=ctx.router2)
    data_consumer = await ctx.webrtc2.consume_data(result["pipeDataProducer"].id)
    assert not data_consumer.closed and data_consumer.type == "sctp"
    params = data_consumer.sctp_stream_parameters
    assert isinstance(params["streamId"], int)
    assert params["ordered"] is False and params["maxPacketLifeTime"] == 5000
    assert params.get("maxRetransmits") is None
    assert data_consumer.label == "foo" and data_consumer.protocol == "bar"


async def test_direct_data_messages_cross_workers_with_subchannels(ctx: SimpleNamespace) -> None:
    direct1 = await ctx.router1.create_direct_transport()
    data_producer = await direct1.produce_data(label="foo", protocol="bar")
    await ctx.router1.pipe_to_router(data_producer_id=data_producer.id, router=ctx.router2)
    direct2 = await ctx.router2.create_direct_transport()
    data_consumer = await direct2.consume_data(data_producer.id, subchannels=[123, 666])
    received = _once(data_consumer, "message")
    data_producer.send("hello", None, [123, 124], 666)
    message, ppid = await asyncio.wait_for(received, 5)
    assert message == b"hello" and ppid == 51


async def test_data_producer_close_reaches_the_pipe_data_consumer(ctx: SimpleNamespace) -> None:
    result = await ctx.router1.pipe_to_router(data_producer_id=ctx.data_producer.id, router=ctx.router2)
    data_consumer = await ctx.webrtc2.consume_data(result["pipeDataProducer"].id)
    closed = _once(data_consumer, "dataproducerclose")
    ctx.data_producer.close()
    assert ctx.data_producer.closed
    await asyncio.wait_for(closed, 5)
    assert data_consumer.closed
    assert result["pipeDataConsumer"].closed and result["pipeDataProducer"].closed
    with pytest.raises(NotFoundError):
        await data_consumer.dump()


async def test_data_crosses_a_hand_connected_srtp_pipe_pair_both_ways(ctx: SimpleNamespace) -> None:
    """As control.cluster.link does between two nodes: two PipeTransports with SRTP and
    SCTP, each connected to the other by hand (no ``pipe_to_router``); a data producer
    of each side is consumed on its side's pipe and produced on the other with the pipe
    data consumer's stream parameters, label and protocol (and the same id); messages
    arrive both ways, and closing an original closes the pipe data producer's consumer."""
    options = {"listen_info": LOCALHOST, "enable_srtp": True, "enable_sctp": True}
    pipe1 = await ctx.router1.create_pipe_transport(**options)
    pipe2 = await ctx.router2.create_pipe_transport(**options)
    assert pipe1.sctp_parameters and pipe1.sctp_state == "new"
    connected = [_once(pipe, "sctpstatechange") for pipe in (pipe1, pipe2)]
    for pipe, far in ((pipe1, pipe2), (pipe2, pipe1)):
        await pipe.connect(
            ip=far.tuple["localAddress"], port=far.tuple["localPort"], srtp_parameters=far.srtp_parameters
        )
    direct1 = await ctx.router1.create_direct_transport()
    direct2 = await ctx.router2.create_direct_transport()
    received: dict[str, asyncio.Future] = {}
    originals = []
    for source, pipe, far_pipe, far_direct, name in (
        (direct1, pipe1, pipe2, direct2, "one"),
        (direct2, pipe2, pipe1, direct1, "two"),
    ):
        original = await source.produce_data(label=f"chat-{name}", protocol="text")
        pipe_consumer = await pipe.consume_data(original.id)
        assert pipe_consumer.type == "sctp" and pipe_consumer.label == f"chat-{name}"
        piped = await far_pipe.produce_data(
            pipe_consumer.sctp_stream_parameters,
            id=original.id,
            label=pipe_consumer.label,
            protocol=pipe_consumer.protocol,
        )
        assert piped.sctp_stream_parameters["streamId"] == pipe_consumer.sctp_stream_parameters["streamId"]
        consumer = await far_direct.consume_data(piped.id)
        assert consumer.label == f"chat-{name}" and consumer.protocol == "text"
        received[name] = _once(consumer, "message")
        originals.append((original, pipe_consumer, consumer))
    for (state,) in await asyncio.wait_for(asyncio.gather(*connected), 10):
        assert state in ("connecting", "connected")
    for pipe in (pipe1, pipe2):
        if pipe.sctp_state != "connected":
            await asyncio.wait_for(_once(pipe, "sctpstatechange"), 10)
        assert pipe.sctp_state == "connected"
    for _ in range(100):  # its own notification, next to the state change's
        if pipe1.sctp_negotiated_capabilities and pipe2.sctp_negotiated_capabilities:
            break
        await asyncio.sleep(0.05)
    for pipe in (pipe1, pipe2):
        assert pipe.sctp_negotiated_capabilities["negotiatedMaxOutboundStreams"] > 0
        assert pipe._sctp_max_outbound_streams == pipe.sctp_negotiated_capabilities["negotiatedMaxOutboundStreams"]
    originals[0][0].send("from one")
    originals[1][0].send("from two")
    assert (await asyncio.wait_for(received["one"], 5))[0] == b"from one"
    assert (await asyncio.wait_for(received["two"], 5))[0] == b"from two"
    original, pipe_consumer, consumer = originals[0]
    closed = _once(consumer, "dataproducerclose")
    original.close()
    await asyncio.wait_for(_once(pipe_consumer, "dataproducerclose"), 5)
    assert pipe_consumer.closed and pipe_consumer.id not in pipe1.data_consumers
    # The pipe data producer on the far side is the user's to close (the cascade's link
    # tells the far node), which closes its consumers there.
    pipe2.data_producers[original.id].close()
    await asyncio.wait_for(closed, 5)
    assert consumer.closed


@pytest.mark.xfail(
    strict=True,
    reason="mediasoup-worker 3.27.1 decodes a subchannels header from any SCTP message entering a PipeTransport "
    "(Transport::OnAssociationMessageReceived), so an endpoint can forge one; mediasoup's newer "
    "test-PipeTransport.ts expects it filtered. Strict: this fails, as a reminder, once the worker is fixed.",
)
async def test_crafted_subchannels_payload_through_a_pipe_is_not_filtered_as_subchannels(
    ctx: SimpleNamespace,
) -> None:
    """A payload that looks like mediasoup's internal subchannels encoding must
    stay a payload: it may not select subchannels on the far side of a pipe
    (mediasoup's newest test-PipeTransport.ts)."""
    await ctx.router1.pipe_to_router(data_producer_id=ctx.data_producer.id, router=ctx.router2)
    direct = await ctx.router2.create_direct_transport()
    data_consumer = await direct.consume_data(ctx.data_producer.id, subchannels=[5])
    crafted = bytes.fromhex("A5F09CB3D6E1F28C") + struct.pack("!HH", 1, 5) + b"hello"
    received: list[bytes] = []
    data_consumer.on("message", lambda message, ppid: received.append(message))
    ctx.data_producer.send(crafted)
    await asyncio.sleep(1.0)
    assert b"hello" not in received


# -- the PipeTransport pair: one per router pair, tied lifetimes ---------------------------


async def test_pipe_to_router_called_twice_creates_a_single_pipe_transport_pair(ctx: SimpleNamespace) -> None:
    router_a = await ctx.worker1.create_router(MEDIA_CODECS)
    router_b = await ctx.worker2.create_router(MEDIA_CODECS)
    transport_a1 = await router_a.create_webrtc_transport(listen_ips=["127.0.0.1"])
    transport_a2 = await router_a.create_webrtc_transport(listen_ips=["127.0.0.1"])
    producer_a1 = await transport_a1.produce(**AUDIO_PRODUCER)
    producer_a2 = await transport_a2.produce(**AUDIO_PRODUCER)
    await asyncio.gather(
        router_a.pipe_to_router(producer_id=producer_a1.id, router=router_b),
        router_a.pipe_to_router(producer_id=producer_a2.id, router=router_b),
    )
    assert len((await router_a.dump())["transportIds"]) == 3
    assert len((await router_b.dump())["transportIds"]) == 1
    assert set(router_b.producers) == {producer_a1.id, producer_a2.id}


async def test_pipe_to_router_from_both_sides_creates_a_single_connected_pair(ctx: SimpleNamespace) -> None:
    router_a = await ctx.worker1.create_router(MEDIA_CODECS)
    router_b = await ctx.worker2.create_router(MEDIA_CODECS)
    transport_a = await router_a.create_webrtc_transport(listen_ips=["127.0.0.1"])
    transport_b = await router_b.create_webrtc_transport(listen_ips=["127.0.0.1"])
    producer_a = await transport_a.produce(**AUDIO_PRODUCER)
    producer_b = await transport_b.produce(**AUDIO_PRODUCER)
    pipes_a: dict[str, Any] = {}
    pipes_b: dict[str, Any] = {}

    def track(pipes: dict[str, Any]) -> Any:
        def on_new_transport(transport: Any) -> None:
            if isinstance(transport, PipeTransport):
                pipes[transport.id] = transport
                transport.observer.on("close", lambda: pipes.pop(transport.id, None))

        return on_new_transport

    router_a.observer.on("newtransport", track(pipes_a))
    router_b.observer.on("newtransport", track(pipes_b))
    await asyncio.gather(
        router_a.pipe_to_router(producer_id=producer_a.id, router=router_b),
        router_b.pipe_to_router(producer_id=producer_b.id, router=router_a),
    )
    assert len(pipes_a) == 1 and len(pipes_b) == 1
    (pipe_a,) = pipes_a.values()
    (pipe_b,) = pipes_b.values()
    assert pipe_a.tuple["localPort"] == pipe_b.tuple["remotePort"]
    assert pipe_b.tuple["localPort"] == pipe_a.tuple["remotePort"]

    router_a.close()
    # Closing one side of the pair closes the other, on the other worker.
    assert pipes_a == {} and pipes_b == {}
    assert router_a.pipe_transport_pairs == {} and router_b.pipe_transport_pairs == {}
    assert transport_b.id in router_b.transports and not producer_b.closed


async def test_closing_a_pipe_transport_closes_its_pair_and_a_new_one_is_made(ctx: SimpleNamespace) -> None:
    first = await ctx.router1.pipe_to_router(producer_id=ctx.audio_producer.id, router=ctx.router2)
    local, remote = first["pipeConsumer"].transport, first["pipeProducer"].transport
    remote_closed = _once(remote.observer, "close")
    producer_closed = _once(first["pipeProducer"].observer, "close")
    local.close()
    await asyncio.wait_for(asyncio.gather(remote_closed, producer_closed), 5)
    assert remote.closed and first["pipeProducer"].closed and first["pipeConsumer"].closed
    assert ctx.router1.pipe_transport_pairs == {} and ctx.router2.pipe_transport_pairs == {}
    assert (await ctx.router2.dump())["transportIds"] == [ctx.webrtc2.id]

    second = await ctx.router1.pipe_to_router(producer_id=ctx.audio_producer.id, router=ctx.router2)
    assert second["pipeConsumer"].transport is not local
    assert len((await ctx.router2.dump())["transportIds"]) == 2


async def test_pipe_transport_emits_routerclose_and_closes_its_pair_when_a_worker_dies(
    ctx: SimpleNamespace,
) -> None:
    result = await ctx.router1.pipe_to_router(producer_id=ctx.audio_producer.id, router=ctx.router2)
    local, remote = result["pipeConsumer"].transport, result["pipeProducer"].transport
    consumer = await ctx.webrtc2.consume(result["pipeProducer"].id, CONSUMER_DEVICE_CAPABILITIES)
    local_routerclose = _once(local, "routerclose")
    consumer_gone = _once(consumer, "producerclose")
    ctx.worker1.close()
    await asyncio.wait_for(local_routerclose, 5)
    assert local.closed and local.sctp_state == "closed"
    # The far side, on the surviving worker, is closed too, and so is what it fed.
    await asyncio.wait_for(consumer_gone, 5)
    assert remote.closed and result["pipeProducer"].closed
    assert (await ctx.router2.dump())["transportIds"] == [ctx.webrtc2.id]


async def test_pipe_transport_methods_fail_once_closed(ctx: SimpleNamespace) -> None:
    transport = await ctx.router1.create_pipe_transport(listen_info=LOCALHOST, enable_sctp=True)
    closes: list[Any] = []
    transport.observer.once("close", lambda: closes.append(True))
    transport.close()
    transport.close()
    assert closes == [True] and transport.closed and transport.sctp_state == "closed"
    assert transport.id not in ctx.router1.transports
    with pytest.raises(MediasoupError):
        await transport.dump()
    with pytest.raises(MediasoupError):
        await transport.get_stats()


# -- media really crossing workers ---------------------------------------------------------

OPUS_PT = 111
SSRC = 12345678


def rtp_packet(seq: int, payload: bytes, payload_type: int = OPUS_PT, ssrc: int = SSRC) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type, seq, seq * 960, ssrc) + payload


def rtp_payload(packet: bytes) -> bytes:
    """The payload of an RTP packet (skipping CSRCs, header extensions and padding)."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        (length,) = struct.unpack_from("!H", packet, offset + 2)
        offset += 4 + 4 * length
    end = len(packet) - packet[-1] if packet[0] & 0x20 else len(packet)
    return packet[offset:end]


def payloads(count: int) -> list[bytes]:
    return [bytes([seq % 256]) * 20 + f"opus-frame-{seq}".encode() for seq in range(1, count + 1)]


OPUS_PRODUCER_PARAMETERS = {
    "codecs": [{"mimeType": "audio/opus", "payloadType": OPUS_PT, "clockRate": 48000, "channels": 2}],
    "encodings": [{"ssrc": SSRC}],
}


@pytest.fixture
async def two_routers() -> AsyncIterator[SimpleNamespace]:
    """A router on each of two workers (two processes)."""
    require_worker_binary()
    worker_a, worker_b = await _new_worker(), await _new_worker()
    try:
        router_a = await worker_a.create_router(MEDIA_CODECS)
        router_b = await worker_b.create_router(MEDIA_CODECS)
        assert worker_a.pid != worker_b.pid
        yield SimpleNamespace(worker_a=worker_a, worker_b=worker_b, router_a=router_a, router_b=router_b)
    finally:
        await _close_workers(worker_a, worker_b)


async def _direct_pipeline(env: SimpleNamespace, **pipe_options: Any) -> SimpleNamespace:
    """Direct producer on router A -> pipe -> direct consumer on router B."""
    direct_a = await env.router_a.create_direct_transport()
    producer = await direct_a.produce("audio", OPUS_PRODUCER_PARAMETERS)
    piped = await env.router_a.pipe_to_router(producer_id=producer.id, router=env.router_b, **pipe_options)
    direct_b = await env.router_b.create_direct_transport()
    consumer = await direct_b.consume(producer.id, env.router_b.rtp_capabilities)
    received: asyncio.Queue[bytes] = asyncio.Queue()
    consumer.on("rtp", received.put_nowait)
    return SimpleNamespace(producer=producer, consumer=consumer, received=received, **piped)


async def _send_and_collect(pipeline: SimpleNamespace, frames: list[bytes], first_seq: int = 1) -> list[bytes]:
    for seq, frame in enumerate(frames, start=first_seq):
        pipeline.producer.send(rtp_packet(seq, frame))
        await asyncio.sleep(0.002)
    packets = [await asyncio.wait_for(pipeline.received.get(), 5) for _ in frames]
    return packets


@pytest.mark.parametrize("enable_srtp", [False, True], ids=["plain-rtp", "srtp"])
async def test_rtp_flows_across_workers_through_direct_transports(
    two_routers: SimpleNamespace, enable_srtp: bool
) -> None:
    pipeline = await _direct_pipeline(two_routers, enable_srtp=enable_srtp)
    assert pipeline.pipeProducer.transport.router is two_routers.router_b
    if enable_srtp:
        assert pipeline.pipeConsumer.transport.srtp_parameters is not None
    frames = payloads(50)
    packets = await _send_and_collect(pipeline, frames)

    consumer_params = pipeline.consumer.rtp_parameters
    for packet in packets:
        assert packet[1] & 0x7F == consumer_params["codecs"][0]["payloadType"]
        assert struct.unpack_from("!I", packet, 8)[0] == consumer_params["encodings"][0]["ssrc"]
    assert [rtp_payload(packet) for packet in packets] == frames
    # Sequence numbers stay consecutive after two rewrites (pipe, then consumer).
    seqs = [struct.unpack_from("!H", packet, 2)[0] for packet in packets]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))

    stats_a = await pipeline.pipeConsumer.transport.get_stats()
    stats_b = await pipeline.pipeProducer.transport.get_stats()
    assert stats_a[0]["rtpBytesSent"] > 0 and stats_b[0]["rtpBytesReceived"] > 0
    assert pipeline.received.empty()


async def test_pause_and_close_propagate_across_workers(two_routers: SimpleNamespace) -> None:
    pipeline = await _direct_pipeline(two_routers)
    await _send_and_collect(pipeline, payloads(5))

    paused = asyncio.gather(_once(pipeline.consumer, "producerpause"), _once(pipeline.pipeProducer.observer, "pause"))
    await pipeline.producer.pause()
    await asyncio.wait_for(paused, 5)
    assert pipeline.pipeProducer.paused and pipeline.consumer.producer_paused
    for seq in range(100, 110):
        pipeline.producer.send(rtp_packet(seq, b"while-paused"))
    await asyncio.sleep(0.3)
    assert pipeline.received.empty()  # nothing leaves a paused producer

    # Both, as for the pause: the worker tells the consumer before it answers the pipe
    # producer's resume request, whose answer is what clears ``paused`` here.
    resumed = asyncio.gather(
        _once(pipeline.consumer, "producerresume"), _once(pipeline.pipeProducer.observer, "resume")
    )
    await pipeline.producer.resume()
    await asyncio.wait_for(resumed, 5)
    assert not pipeline.pipeProducer.paused
    frames = [b"after-resume-%d" % index for index in range(5)]
    assert [rtp_payload(packet) for packet in await _send_and_collect(pipeline, frames, first_seq=200)] == frames

    consumer_closed = _once(pipeline.consumer, "producerclose")
    pipeline.producer.close()
    await asyncio.wait_for(consumer_closed, 5)
    assert pipeline.pipeConsumer.closed and pipeline.pipeProducer.closed and pipeline.consumer.closed
    assert pipeline.pipeProducer.id not in two_routers.router_b.producers
    assert pipeline.consumer.id not in (await two_routers.router_b.dump())["mapConsumerIdProducerId"]


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not 64 <= (data[1] & 0x7F) <= 95:  # skip RTCP
            self.packets.put_nowait(data)


async def test_rtp_flows_across_workers_through_plain_transports(two_routers: SimpleNamespace) -> None:
    """UDP in on worker A's PlainTransport, UDP out of worker B's PlainTransport."""
    loop = asyncio.get_running_loop()
    send_transport = await two_routers.router_a.create_plain_transport(listen_info=LOCALHOST, comedia=True)
    producer = await send_transport.produce("audio", OPUS_PRODUCER_PARAMETERS)
    piped = await two_routers.router_a.pipe_to_router(producer_id=producer.id, router=two_routers.router_b)

    receiver = _Receiver()
    udp, _ = await loop.create_datagram_endpoint(lambda: receiver, local_addr=("127.0.0.1", 0))
    recv_transport = await two_routers.router_b.create_plain_transport(listen_info=LOCALHOST)
    await recv_transport.connect(ip="127.0.0.1", port=udp.get_extra_info("sockname")[1])
    consumer = await recv_transport.consume(piped["pipeProducer"].id, two_routers.router_b.rtp_capabilities)

    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = (send_transport.tuple["localAddress"], send_transport.tuple["localPort"])
    try:
        frames = payloads(30)
        for seq, frame in enumerate(frames, start=1):
            sender.sendto(rtp_packet(seq, frame), target)
            await asyncio.sleep(0.002)
        packets = [await asyncio.wait_for(receiver.packets.get(), 5) for _ in frames]
    finally:
        sender.close()
        udp.close()
    assert [rtp_payload(packet) for packet in packets] == frames
    assert all(struct.unpack_from("!I", p, 8)[0] == consumer.rtp_parameters["encodings"][0]["ssrc"] for p in packets)


@pytest.mark.parametrize("delay", [0, 0.001, 0.003, 0.01])
async def test_router_closed_during_pipe_to_router_leaves_nothing_behind(
    two_routers: SimpleNamespace, delay: float
) -> None:
    """Whichever step the pair or the pipe producer was at, closing the router
    cleans up the other router (on the other worker); pipe_to_router() fails,
    unless it had already finished."""
    direct = await two_routers.router_a.create_direct_transport()
    producer = await direct.produce("audio", OPUS_PRODUCER_PARAMETERS)
    piping = asyncio.ensure_future(
        two_routers.router_a.pipe_to_router(producer_id=producer.id, router=two_routers.router_b)
    )
    await asyncio.sleep(delay)
    two_routers.router_a.close()
    try:
        result = await piping
    except MediasoupError:
        pass
    else:
        assert result["pipeConsumer"].closed and result["pipeProducer"].closed
    await asyncio.sleep(0.1)  # let the close requests reach worker B
    assert two_routers.router_b.transports == {} and two_routers.router_b.producers == {}
    assert two_routers.router_b.pipe_transport_pairs == {}
    assert (await two_routers.router_b.dump())["transportIds"] == []

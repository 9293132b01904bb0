"""Producer, against the real worker (after mediasoup's test-Producer.ts)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import flatbuffers
import pytest

from workers.errors import InvalidStateError, MediasoupError, MediasoupTypeError, NotFoundError, UnsupportedError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.router import Router
from workers.webrtc_transport import WebRtcTransport
from workers.worker import Worker

import FBS.Message.Body as FbsMessageBody
import FBS.Message.Message as FbsMessage
import FBS.Notification.Body as FbsNotificationBody
import FBS.Notification.Event as FbsEvent
import FBS.Notification.Notification as FbsNotification
import FBS.Producer.Score as FbsScore
import FBS.Producer.ScoreNotification as FbsScoreNotification

MEDIA_CODECS = [
    {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2, "parameters": {"foo": "111"}},
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
    {
        "kind": "video",
        "mimeType": "video/H264",
        "clockRate": 90000,
        "parameters": {
            "level-asymmetry-allowed": 1,
            "packetization-mode": 1,
            "profile-level-id": "4d0032",
            "foo": "bar",
        },
        "rtcpFeedback": [],
    },  # ignored
]
AUDIO_RTP_PARAMETERS = {
    "mid": "AUDIO",
    "codecs": [
        {
            "mimeType": "audio/opus",
            "payloadType": 0,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"useinbandfec": 1, "usedtx": 1, "foo": 222.222, "bar": "333"},
        }
    ],
    "headerExtensions": [
        {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 10},
        {"uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": 12},
    ],
    # Missing encodings on purpose.
    "rtcp": {"cname": "audio-1"},
}
VIDEO_RTP_PARAMETERS = {
    "mid": "VIDEO",
    "codecs": [
        {
            "mimeType": "video/h264",
            "payloadType": 112,
            "clockRate": 90000,
            "parameters": {"packetization-mode": 1, "profile-level-id": "4d0032"},
            "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}, {"type": "goog-remb"}],
        },
        {"mimeType": "video/rtx", "payloadType": 113, "clockRate": 90000, "parameters": {"apt": 112}},
    ],
    "headerExtensions": [
        {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 10},
        {"uri": "urn:3gpp:video-orientation", "id": 13},
    ],
    "encodings": [
        {"ssrc": 22222222, "rtx": {"ssrc": 22222223}, "scalabilityMode": "L1T3"},
        {"ssrc": 22222224, "rtx": {"ssrc": 22222225}},
        {"ssrc": 22222226, "rtx": {"ssrc": 22222227}},
        {"ssrc": 22222228, "rtx": {"ssrc": 22222229}},
    ],
    "rtcp": {"cname": "video-1"},
}
APP_DATA = {"foo": 1, "bar": "2"}


def _once(emitter: Any, event: str) -> asyncio.Future:
    future: asyncio.Future = asyncio.get_running_loop().create_future()
    emitter.once(event, lambda *args: future.done() or future.set_result(args))
    return future


@pytest.fixture
async def router(worker: Worker) -> Router:
    return await worker.create_router(MEDIA_CODECS)


@pytest.fixture
async def transport1(router: Router) -> WebRtcTransport:
    return await router.create_webrtc_transport(listen_ips=["127.0.0.1"])


@pytest.fixture
async def transport2(router: Router) -> WebRtcTransport:
    return await router.create_webrtc_transport(listen_ips=["127.0.0.1"])


async def _audio(transport: WebRtcTransport) -> Any:
    return await transport.produce("audio", copy.deepcopy(AUDIO_RTP_PARAMETERS), app_data=dict(APP_DATA))


async def _video(transport: WebRtcTransport) -> Any:
    return await transport.produce("video", copy.deepcopy(VIDEO_RTP_PARAMETERS), app_data=dict(APP_DATA))


async def test_produce_audio_succeeds(router: Router, transport1: WebRtcTransport) -> None:
    new_producers: list = []
    transport1.observer.once("newproducer", new_producers.append)
    params = copy.deepcopy(AUDIO_RTP_PARAMETERS)
    producer = await transport1.produce("audio", params, app_data=dict(APP_DATA))
    assert params == AUDIO_RTP_PARAMETERS  # the given parameters are not modified
    assert new_producers == [producer]
    assert isinstance(producer.id, str) and not producer.closed
    assert producer.kind == "audio" and producer.type == "simple"
    assert isinstance(producer.rtp_parameters, dict)
    assert isinstance(producer.consumable_rtp_parameters, dict)
    assert producer.paused is False
    assert producer.score == []
    assert producer.app_data == APP_DATA
    dump = await router.dump()
    assert dump["mapProducerIdConsumerIds"] == [{"key": producer.id, "values": []}]
    assert dump["mapConsumerIdProducerId"] == []
    transport_dump = await transport1.dump()
    assert transport_dump["id"] == transport1.id
    assert transport_dump["producerIds"] == [producer.id] and transport_dump["consumerIds"] == []
    assert router.producers == {producer.id: producer}


async def test_produce_video_succeeds(router: Router, transport2: WebRtcTransport) -> None:
    new_producers: list = []
    transport2.observer.once("newproducer", new_producers.append)
    producer = await _video(transport2)
    assert new_producers == [producer]
    assert producer.kind == "video" and producer.type == "simulcast"
    assert producer.paused is False and producer.score == [] and producer.app_data == APP_DATA
    dump = await router.dump()
    assert {"key": producer.id, "values": []} in dump["mapProducerIdConsumerIds"]
    assert dump["mapConsumerIdProducerId"] == []
    transport_dump = await transport2.dump()
    assert transport_dump["producerIds"] == [producer.id] and transport_dump["consumerIds"] == []


async def test_produce_without_header_extensions_and_rtcp(transport1: WebRtcTransport) -> None:
    producer = await transport1.produce(
        "audio",
        {
            "mid": "AUDIO2",
            "codecs": [
                {
                    "mimeType": "audio/opus",
                    "payloadType": 0,
                    "clockRate": 48000,
                    "channels": 2,
                    "parameters": {"useinbandfec": 1},
                }
            ],
        },
        app_data=dict(APP_DATA),
    )
    assert producer.kind == "audio" and producer.type == "simple" and not producer.paused
    assert producer.score == [] and producer.app_data == APP_DATA
    # A CNAME was given to the producer (the transport's).
    assert producer.rtp_parameters["rtcp"]["cname"]
    producer.close()


async def test_produce_with_wrong_arguments_raises_type_error(transport1: WebRtcTransport) -> None:
    h264 = {
        "mimeType": "video/h264",
        "payloadType": 112,
        "clockRate": 90000,
        "parameters": {"packetization-mode": 1, "profile-level-id": "4d0032"},
    }
    with pytest.raises(MediasoupTypeError):
        await transport1.produce("chicken", {})
    with pytest.raises(MediasoupTypeError):
        await transport1.produce("audio", {})
    with pytest.raises(MediasoupTypeError):  # invalid ssrc
        await transport1.produce(
            "audio",
            {"codecs": [], "headerExtensions": [], "encodings": [{"ssrc": "1111"}], "rtcp": {"cname": "qwerty"}},
        )
    with pytest.raises(MediasoupTypeError):  # empty encodings and no mid: nothing identifies the stream
        await transport1.produce(
            "video",
            {
                "codecs": [
                    h264,
                    {"mimeType": "video/rtx", "payloadType": 113, "clockRate": 90000, "parameters": {"apt": 112}},
                ],
                "headerExtensions": [],
                "encodings": [],
                "rtcp": {"cname": "qwerty"},
            },
        )
    with pytest.raises(MediasoupTypeError):  # wrong apt in the RTX codec
        await transport1.produce(
            "audio",
            {
                "codecs": [
                    h264,
                    {"mimeType": "video/rtx", "payloadType": 113, "clockRate": 90000, "parameters": {"apt": 111}},
                ],
                "headerExtensions": [],
                "encodings": [{"ssrc": 6666, "rtx": {"ssrc": 6667}}],
                "rtcp": {"cname": "video-1"},
            },
        )
    with pytest.raises(MediasoupTypeError):
        await transport1.produce("audio", copy.deepcopy(AUDIO_RTP_PARAMETERS), app_data="NOT-AN-OBJECT")  # type: ignore
    assert transport1.producers == {}


async def test_produce_with_unsupported_codecs_raises_unsupported_error(transport1: WebRtcTransport) -> None:
    with pytest.raises(UnsupportedError):
        await transport1.produce(
            "audio",
            {
                "codecs": [{"mimeType": "audio/ISAC", "payloadType": 108, "clockRate": 32000}],
                "headerExtensions": [],
                "encodings": [{"ssrc": 1111}],
                "rtcp": {"cname": "audio"},
            },
        )
    with pytest.raises(UnsupportedError):  # invalid H264 profile-level-id
        await transport1.produce(
            "video",
            {
                "codecs": [
                    {
                        "mimeType": "video/h264",
                        "payloadType": 112,
                        "clockRate": 90000,
                        "parameters": {"packetization-mode": 1, "profile-level-id": "CHICKEN"},
                    },
                    {"mimeType": "video/rtx", "payloadType": 113, "clockRate": 90000, "parameters": {"apt": 112}},
                ],
                "headerExtensions": [],
                "encodings": [{"ssrc": 6666, "rtx": {"ssrc": 6667}}],
            },
        )


async def test_produce_with_already_used_mid_or_ssrc_fails(
    transport1: WebRtcTransport, transport2: WebRtcTransport
) -> None:
    audio = {
        "mid": "AUDIO",
        "codecs": [{"mimeType": "audio/opus", "payloadType": 0, "clockRate": 48000, "channels": 2}],
        "encodings": [{"ssrc": 33333333}],
    }
    video = {
        "mid": "VIDEO2",
        "codecs": [
            {
                "mimeType": "video/h264",
                "payloadType": 112,
                "clockRate": 90000,
                "parameters": {"packetization-mode": 1, "profile-level-id": "4d0032"},
            }
        ],
        "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 10}],
        "encodings": [{"ssrc": 22222222}],
        "rtcp": {"cname": "video-1"},
    }
    await transport1.produce("audio", audio)
    with pytest.raises(MediasoupError):
        await transport1.produce("audio", audio)
    await transport2.produce("video", video)
    with pytest.raises(MediasoupError):
        await transport2.produce("video", video)
    assert len(transport1.producers) == 1 and len(transport2.producers) == 1


async def test_produce_with_same_id_fails(transport1: WebRtcTransport) -> None:
    producer = await _audio(transport1)
    with pytest.raises(MediasoupTypeError):
        await transport1.produce("audio", copy.deepcopy(AUDIO_RTP_PARAMETERS), id=producer.id)


async def test_produce_without_mid_and_single_encoding_without_rid_or_ssrc_fails(
    transport1: WebRtcTransport,
) -> None:
    with pytest.raises(MediasoupError):
        await transport1.produce(
            "audio",
            {
                "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
                "encodings": [{}],
            },
        )


@pytest.mark.parametrize(
    ("encodings", "expected_type"),
    [
        ([{"ssrc": 11111111}], "simple"),
        ([{"ssrc": 11111111, "scalabilityMode": "L1T3"}], "svc"),
        ([{"ssrc": 11111111, "scalabilityMode": "L1T3"}, {"ssrc": 22222222, "scalabilityMode": "L1T3"}], "simulcast"),
    ],
)
async def test_producer_type_follows_encodings(
    transport1: WebRtcTransport, encodings: list, expected_type: str
) -> None:
    producer = await transport1.produce(
        "video",
        {
            "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}],
            "encodings": encodings,
            "rtcp": {"cname": "test"},
        },
    )
    assert producer.type == expected_type


async def test_dump(transport1: WebRtcTransport, transport2: WebRtcTransport) -> None:
    audio = await _audio(transport1)
    dump1 = await audio.dump()
    assert dump1["id"] == audio.id and dump1["kind"] == "audio" and dump1["type"] == "simple"
    [codec] = dump1["rtpParameters"]["codecs"]
    assert codec["mimeType"] == "audio/opus" and codec["payloadType"] == 0
    assert codec["clockRate"] == 48000 and codec["channels"] == 2
    assert codec["parameters"] == {"useinbandfec": 1, "usedtx": 1, "foo": 222.222, "bar": "333"}
    assert codec["rtcpFeedback"] == []
    assert dump1["rtpParameters"]["headerExtensions"] == [
        {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 10, "parameters": {}, "encrypt": False},
        {"uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": 12, "parameters": {}, "encrypt": False},
    ]
    [encoding] = dump1["rtpParameters"]["encodings"]
    assert encoding["codecPayloadType"] == 0
    assert dump1["paused"] is False and dump1["traceEventTypes"] == []
    assert isinstance(dump1["rtpMapping"], dict)
    assert dump1["rtpMapping"]["codecs"] == [{"payloadType": 0, "mappedPayloadType": 100}]
    assert dump1["rtpStreams"] is None  # no RTP received yet

    video = await _video(transport2)
    dump2 = await video.dump()
    assert dump2["id"] == video.id and dump2["kind"] == "video" and dump2["type"] == "simulcast"
    h264, rtx = dump2["rtpParameters"]["codecs"]
    assert h264["mimeType"] == "video/H264" and h264["payloadType"] == 112 and h264["clockRate"] == 90000
    assert "channels" not in h264
    assert h264["parameters"] == {"packetization-mode": 1, "profile-level-id": "4d0032"}
    assert h264["rtcpFeedback"] == [{"type": "nack"}, {"type": "nack", "parameter": "pli"}, {"type": "goog-remb"}]
    assert rtx["mimeType"] == "video/rtx" and rtx["payloadType"] == 113 and rtx["clockRate"] == 90000
    assert "channels" not in rtx
    assert rtx["parameters"] == {"apt": 112} and rtx["rtcpFeedback"] == []
    assert dump2["rtpParameters"]["headerExtensions"] == [
        {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 10, "parameters": {}, "encrypt": False},
        {"uri": "urn:3gpp:video-orientation", "id": 13, "parameters": {}, "encrypt": False},
    ]
    encodings = dump2["rtpParameters"]["encodings"]
    assert [(e["codecPayloadType"], e["ssrc"], e["rtx"]["ssrc"]) for e in encodings] == [
        (112, 22222222, 22222223),
        (112, 22222224, 22222225),
        (112, 22222226, 22222227),
        (112, 22222228, 22222229),
    ]
    assert encodings[0]["scalabilityMode"] == "L1T3"
    assert [e["ssrc"] for e in dump2["rtpMapping"]["encodings"]] == [22222222, 22222224, 22222226, 22222228]


async def test_get_stats_is_empty_without_rtp(transport1: WebRtcTransport, transport2: WebRtcTransport) -> None:
    audio = await _audio(transport1)
    video = await _video(transport2)
    assert await audio.get_stats() == []
    assert await video.get_stats() == []


async def test_pause_and_resume(transport1: WebRtcTransport) -> None:
    producer = await _audio(transport1)
    pauses: list = []
    resumes: list = []
    producer.observer.on("pause", lambda: pauses.append(True))
    producer.observer.on("resume", lambda: resumes.append(True))
    await producer.pause()
    assert producer.paused is True
    assert (await producer.dump())["paused"] is True
    await producer.resume()
    assert producer.paused is False
    assert (await producer.dump())["paused"] is False
    # Not awaiting each call (tasks send their requests in order): the observer
    # still fires whenever the state flips.
    calls = [
        producer.pause(),
        producer.resume(),
        producer.pause(),
        producer.pause(),
        producer.pause(),
        producer.resume(),
    ]
    await asyncio.gather(*(asyncio.ensure_future(call) for call in calls))
    assert len(pauses) == 3 and len(resumes) == 3


async def test_pause_and_resume_emit_events_in_order(transport1: WebRtcTransport) -> None:
    producer = await _audio(transport1)
    events: list = []
    producer.observer.once("resume", lambda: events.append("resume"))
    producer.observer.once("pause", lambda: events.append("pause"))
    await asyncio.gather(producer.pause(), producer.resume())
    assert events == ["pause", "resume"] and producer.paused is False


async def test_enable_trace_event(transport1: WebRtcTransport) -> None:
    producer = await _audio(transport1)
    await producer.enable_trace_event(["rtp", "pli"])
    assert sorted((await producer.dump())["traceEventTypes"]) == ["pli", "rtp"]
    await producer.enable_trace_event()
    assert (await producer.dump())["traceEventTypes"] == []
    await producer.enable_trace_event(["nack", "FOO", "fir"])  # unknown types are ignored
    assert sorted((await producer.dump())["traceEventTypes"]) == ["fir", "nack"]
    await producer.enable_trace_event()
    assert (await producer.dump())["traceEventTypes"] == []


async def test_enable_trace_event_with_wrong_arguments_raises_type_error(transport1: WebRtcTransport) -> None:
    producer = await _audio(transport1)
    with pytest.raises(MediasoupTypeError):
        await producer.enable_trace_event(123)
    with pytest.raises(MediasoupTypeError):
        await producer.enable_trace_event("rtp")
    with pytest.raises(MediasoupTypeError):
        await producer.enable_trace_event(["fir", 123.123])


async def test_emits_score(transport2: WebRtcTransport) -> None:
    producer = await _video(transport2)
    scores_seen: list = []
    producer.on("score", scores_seen.append)
    body = FbsScoreNotification.ScoreNotificationT()
    body.scores = []
    for encoding_idx, ssrc, score in ((0, 11, 10), (1, 22, 9)):
        item = FbsScore.ScoreT()
        item.encodingIdx, item.ssrc, item.score = encoding_idx, ssrc, score
        body.scores.append(item)
    notification = FbsNotification.NotificationT()
    notification.handlerId = producer.id
    notification.event = FbsEvent.Event.PRODUCER_SCORE
    notification.bodyType = FbsNotificationBody.Body.Producer_ScoreNotification
    notification.body = body
    message = FbsMessage.MessageT()
    message.dataType = FbsMessageBody.Body.Notification
    message.data = notification
    builder = flatbuffers.Builder(256)
    builder.FinishSizePrefixed(message.Pack(builder))
    frame = bytes(builder.Output())
    for _ in range(3):
        producer.channel._on_data(frame)
    await asyncio.sleep(0)
    assert len(scores_seen) == 3
    assert producer.score == [
        {"encodingIdx": 0, "ssrc": 11, "rid": None, "score": 10},
        {"encodingIdx": 1, "ssrc": 22, "rid": None, "score": 9},
    ]


async def test_close(router: Router, transport1: WebRtcTransport) -> None:
    producer = await _audio(transport1)
    closed: list = []
    producer.observer.once("close", lambda: closed.append(True))
    producer.close()
    producer.close()  # idempotent
    assert closed == [True] and producer.closed
    with pytest.raises(NotFoundError):
        await producer.dump()
    dump = await router.dump()
    assert dump["mapProducerIdConsumerIds"] == [] and dump["mapConsumerIdProducerId"] == []
    transport_dump = await transport1.dump()
    assert transport_dump["producerIds"] == [] and transport_dump["consumerIds"] == []
    assert transport1.producers == {} and router.producers == {}


async def test_methods_reject_if_closed(transport1: WebRtcTransport) -> None:
    producer = await _audio(transport1)
    producer.close()
    for method in (producer.dump, producer.get_stats, producer.pause, producer.resume):
        with pytest.raises(NotFoundError):
            await method()
    with pytest.raises(NotFoundError):
        await producer.enable_trace_event(["rtp"])


async def test_emits_transportclose_when_transport_closes(router: Router, transport2: WebRtcTransport) -> None:
    producer = await _video(transport2)
    closed: list = []
    producer.observer.once("close", lambda: closed.append(True))
    transportclose = _once(producer, "transportclose")
    transport2.close()
    await asyncio.wait_for(transportclose, 2)
    assert closed == [True] and producer.closed
    assert router.producers == {}
    with pytest.raises(NotFoundError):
        await producer.dump()


async def test_emits_transportclose_when_worker_closes(worker: Worker, transport1: WebRtcTransport) -> None:
    producer = await _audio(transport1)
    events: list = []
    producer.once("transportclose", lambda: events.append("transportclose"))
    producer.observer.once("close", lambda: events.append("observer close"))
    worker.close()
    assert events == ["transportclose", "observer close"] and producer.closed
    with pytest.raises(InvalidStateError):
        await producer.dump()

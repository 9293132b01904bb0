"""Consumer, against the real worker (after mediasoup's test-Consumer.ts).

Besides mediasoup's cases, two tests push real RTP through the worker: a
consumer's key frame request reaches the producer's endpoint as an RTCP PLI,
and a simulcast consumer picks a layer, asks for a key frame on it and
forwards that layer once the key frame arrives.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import struct
import time
from typing import Any

import flatbuffers
import pytest

from workers.errors import InvalidStateError, MediasoupTypeError, NotFoundError, UnsupportedError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.router import Router
from workers.webrtc_transport import WebRtcTransport
from workers.worker import Worker

import FBS.Consumer.ConsumerScore as FbsConsumerScore
import FBS.Consumer.ScoreNotification as FbsScoreNotification
import FBS.Message.Body as FbsMessageBody
import FBS.Message.Message as FbsMessage
import FBS.Notification.Body as FbsNotificationBody
import FBS.Notification.Event as FbsEvent
import FBS.Notification.Notification as FbsNotification

MEDIA_CODECS = [
    {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2, "parameters": {"foo": "bar"}},
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
    },
]
AUDIO_RTP_PARAMETERS = {
    "mid": "AUDIO",
    "codecs": [
        {
            "mimeType": "audio/opus",
            "payloadType": 111,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"useinbandfec": 1, "usedtx": 1, "foo": 222.222, "bar": "333"},
        }
    ],
    "headerExtensions": [
        {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 10},
        {"uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": 12},
    ],
    "encodings": [{"ssrc": 11111111}],
    "rtcp": {"cname": "FOOBAR"},
    "msid": "1111-1111-1111-1111 2222-2222-2222-2222",
}
VIDEO_RTP_PARAMETERS = {
    "mid": "VIDEO",
    "codecs": [
        {
            "mimeType": "video/h264",
            "payloadType": 112,
            "clockRate": 90000,
            "parameters": {"packetization-mode": 1, "profile-level-id": "4d0032"},
            "rtcpFeedback": [
                {"type": "nack", "parameter": ""},
                {"type": "nack", "parameter": "pli"},
                {"type": "goog-remb", "parameter": ""},
            ],
        },
        {"mimeType": "video/rtx", "payloadType": 113, "clockRate": 90000, "parameters": {"apt": 112}},
    ],
    "headerExtensions": [
        {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 10},
        {"uri": "urn:3gpp:video-orientation", "id": 13},
    ],
    "encodings": [
        {"ssrc": 22222222, "scalabilityMode": "L1T5", "rtx": {"ssrc": 22222223}},
        {"ssrc": 22222224, "scalabilityMode": "L1T5", "rtx": {"ssrc": 22222225}},
        {"ssrc": 22222226, "scalabilityMode": "L1T5", "rtx": {"ssrc": 22222227}},
        {"ssrc": 22222228, "scalabilityMode": "L1T5", "rtx": {"ssrc": 22222229}},
    ],
    "rtcp": {"cname": "FOOBAR"},
}
APP_DATA = {"foo": 1, "bar": "2"}
FULL_FEEDBACK = [
    {"type": "nack", "parameter": ""},
    {"type": "nack", "parameter": "pli"},
    {"type": "ccm", "parameter": "fir"},
    {"type": "goog-remb", "parameter": ""},
]
CONSUMER_CAPS = {
    "codecs": [
        {
            "mimeType": "audio/opus",
            "kind": "audio",
            "preferredPayloadType": 100,
            "clockRate": 48000,
            "channels": 2,
            "rtcpFeedback": [{"type": "nack", "parameter": ""}],
        },
        {
            "mimeType": "video/H264",
            "kind": "video",
            "preferredPayloadType": 101,
            "clockRate": 90000,
            "parameters": {"level-asymmetry-allowed": 1, "packetization-mode": 1, "profile-level-id": "4d0032"},
            "rtcpFeedback": FULL_FEEDBACK,
        },
        {
            "mimeType": "video/rtx",
            "kind": "video",
            "preferredPayloadType": 102,
            "clockRate": 90000,
            "parameters": {"apt": 101},
            "rtcpFeedback": [],
        },
    ],
    "headerExtensions": [
        {"kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1, "preferredEncrypt": False},
        {"kind": "video", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1, "preferredEncrypt": False},
        {
            "kind": "video",
            "uri": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "preferredId": 2,
            "preferredEncrypt": False,
        },
        {
            "kind": "audio",
            "uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            "preferredId": 4,
            "preferredEncrypt": False,
        },
        {
            "kind": "video",
            "uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            "preferredId": 4,
            "preferredEncrypt": False,
        },
        {
            "kind": "audio",
            "uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "preferredId": 6,
            "preferredEncrypt": False,
        },
        {"kind": "video", "uri": "urn:3gpp:video-orientation", "preferredId": 8, "preferredEncrypt": False},
        {"kind": "video", "uri": "urn:ietf:params:rtp-hdrext:toffset", "preferredId": 9, "preferredEncrypt": False},
    ],
}
VPX_MEDIA_CODECS = [
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000, "rtcpFeedback": FULL_FEEDBACK},
    {"kind": "video", "mimeType": "video/VP9", "clockRate": 90000, "rtcpFeedback": FULL_FEEDBACK},
]
VPX_CONSUMER_CAPS = {
    "codecs": [
        {
            "kind": "video",
            "mimeType": "video/VP8",
            "preferredPayloadType": 101,
            "clockRate": 90000,
            "rtcpFeedback": FULL_FEEDBACK,
        },
        {
            "kind": "video",
            "mimeType": "video/VP9",
            "preferredPayloadType": 102,
            "clockRate": 90000,
            "rtcpFeedback": FULL_FEEDBACK,
        },
    ],
    "headerExtensions": [],
}
VP9_SVC_RTP_PARAMETERS = {
    "mid": "VIDEOSVC",
    "codecs": [
        {
            "mimeType": "video/VP9",
            "payloadType": 96,
            "clockRate": 90000,
            "parameters": {},
            "rtcpFeedback": FULL_FEEDBACK,
        }
    ],
    "headerExtensions": [],
    "encodings": [{"ssrc": 33333333, "scalabilityMode": "L3T3"}],
    "rtcp": {"cname": "FOOBAR"},
}
VP8_SIMULCAST_RTP_PARAMETERS = {
    "mid": "VIDEOVP8",
    "codecs": [
        {
            "mimeType": "video/VP8",
            "payloadType": 96,
            "clockRate": 90000,
            "parameters": {},
            "rtcpFeedback": FULL_FEEDBACK,
        }
    ],
    "headerExtensions": [],
    "encodings": [
        {"ssrc": 44444441, "scalabilityMode": "L1T5"},
        {"ssrc": 44444442, "scalabilityMode": "L1T5"},
        {"ssrc": 44444443, "scalabilityMode": "L1T5"},
    ],
    "rtcp": {"cname": "FOOBAR"},
}


def _once(emitter: Any, event: str) -> asyncio.Future:
    future: asyncio.Future = asyncio.get_running_loop().create_future()
    emitter.once(event, lambda *args: future.done() or future.set_result(args))
    return future


class _Env:
    """mediasoup's test context: a router, two transports, an audio and a video producer."""

    router: Router
    transport1: WebRtcTransport
    transport2: WebRtcTransport
    audio_producer: Any
    video_producer: Any


@pytest.fixture
async def env(worker: Worker) -> _Env:
    ctx = _Env()
    ctx.router = await worker.create_router(MEDIA_CODECS)
    ctx.transport1 = await ctx.router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    ctx.transport2 = await ctx.router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    ctx.audio_producer = await ctx.transport1.produce(
        "audio", copy.deepcopy(AUDIO_RTP_PARAMETERS), app_data=dict(APP_DATA)
    )
    ctx.video_producer = await ctx.transport1.produce(
        "video", copy.deepcopy(VIDEO_RTP_PARAMETERS), app_data=dict(APP_DATA)
    )
    return ctx


async def _vpx_transports(worker: Worker) -> tuple[Router, WebRtcTransport, WebRtcTransport]:
    router = await worker.create_router(VPX_MEDIA_CODECS)
    transport1 = await router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    transport2 = await router.create_webrtc_transport(listen_ips=["127.0.0.1"])
    return router, transport1, transport2


async def test_consume_succeeds(env: _Env) -> None:
    new_consumers: list = []
    env.transport2.observer.on("newconsumer", new_consumers.append)
    assert env.router.can_consume(env.audio_producer.id, CONSUMER_CAPS)
    caps = copy.deepcopy(CONSUMER_CAPS)
    audio = await env.transport2.consume(env.audio_producer.id, caps, app_data={"baz": "LOL"})
    assert caps == CONSUMER_CAPS  # the given capabilities are not modified
    assert new_consumers == [audio]
    assert isinstance(audio.id, str) and audio.producer_id == env.audio_producer.id
    assert not audio.closed and audio.kind == "audio"
    assert audio.rtp_parameters["mid"] == "0"
    assert audio.rtp_parameters["codecs"] == [
        {
            "mimeType": "audio/opus",
            "payloadType": 100,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"useinbandfec": 1, "usedtx": 1, "foo": 222.222, "bar": "333"},
            "rtcpFeedback": [],
        }
    ]
    assert audio.rtp_parameters["msid"] == "1111-1111-1111-1111 2222-2222-2222-2222"
    assert audio.type == "simple"
    assert audio.paused is False and audio.producer_paused is False and audio.priority == 1
    assert audio.score == {"score": 10, "producerScore": 0, "producerScores": [0]}
    assert audio.preferred_layers is None and audio.current_layers is None
    assert audio.app_data == {"baz": "LOL"}
    dump = await env.router.dump()
    assert {"key": env.audio_producer.id, "values": [audio.id]} in dump["mapProducerIdConsumerIds"]
    assert {"key": audio.id, "value": env.audio_producer.id} in dump["mapConsumerIdProducerId"]
    transport_dump = await env.transport2.dump()
    assert transport_dump["producerIds"] == [] and transport_dump["consumerIds"] == [audio.id]

    assert env.router.can_consume(env.video_producer.id, CONSUMER_CAPS)
    await env.video_producer.pause()
    video = await env.transport2.consume(
        env.video_producer.id,
        CONSUMER_CAPS,
        paused=True,
        preferred_layers={"spatialLayer": 12, "temporalLayer": 0},
        app_data={"baz": "LOL"},
    )
    assert new_consumers == [audio, video]
    assert video.producer_id == env.video_producer.id and video.kind == "video"
    assert video.rtp_parameters["mid"] == "1"
    h264, rtx = video.rtp_parameters["codecs"]
    assert h264 == {
        "mimeType": "video/H264",
        "payloadType": 103,
        "clockRate": 90000,
        "parameters": {"packetization-mode": 1, "profile-level-id": "4d0032"},
        "rtcpFeedback": FULL_FEEDBACK,
    }
    assert rtx == {
        "mimeType": "video/rtx",
        "payloadType": 104,
        "clockRate": 90000,
        "parameters": {"apt": 103},
        "rtcpFeedback": [],
    }
    assert "msid" not in video.rtp_parameters
    assert video.type == "simulcast"
    assert video.paused is True and video.producer_paused is True and video.priority == 1
    assert video.score == {"score": 10, "producerScore": 0, "producerScores": [0, 0, 0, 0]}
    # The preferred spatial layer is clamped to the producer's highest one.
    assert video.preferred_layers == {"spatialLayer": 3, "temporalLayer": 0}
    assert video.current_layers is None
    assert video.app_data == {"baz": "LOL"}

    pipe = await env.transport2.consume(env.video_producer.id, CONSUMER_CAPS, pipe=True)
    assert new_consumers == [audio, video, pipe]
    assert pipe.producer_id == env.video_producer.id and pipe.kind == "video"
    assert "mid" not in pipe.rtp_parameters
    assert pipe.rtp_parameters["codecs"] == [h264, rtx]
    assert pipe.type == "pipe"
    assert pipe.paused is False and pipe.producer_paused is True and pipe.priority == 1
    assert pipe.score == {"score": 10, "producerScore": 10, "producerScores": [0, 0, 0, 0]}
    assert pipe.preferred_layers is None and pipe.current_layers is None
    assert pipe.app_data == {}

    dump = await env.router.dump()
    by_producer = {item["key"]: sorted(item["values"]) for item in dump["mapProducerIdConsumerIds"]}
    assert by_producer == {env.audio_producer.id: [audio.id], env.video_producer.id: sorted([video.id, pipe.id])}
    assert sorted(dump["mapConsumerIdProducerId"], key=lambda item: item["key"]) == sorted(
        [
            {"key": audio.id, "value": env.audio_producer.id},
            {"key": video.id, "value": env.video_producer.id},
            {"key": pipe.id, "value": env.video_producer.id},
        ],
        key=lambda item: item["key"],
    )
    transport_dump = await env.transport2.dump()
    assert transport_dump["producerIds"] == []
    assert sorted(transport_dump["consumerIds"]) == sorted([audio.id, video.id, pipe.id])
    assert env.transport2.consumers.keys() == {audio.id, video.id, pipe.id}


async def test_consume_unknown_producer_raises_not_found(env: _Env) -> None:
    with pytest.raises(NotFoundError):
        await env.transport2.consume("12345678", CONSUMER_CAPS)


async def test_consume_with_wrong_arguments_raises_type_error(env: _Env) -> None:
    with pytest.raises(MediasoupTypeError):
        await env.transport2.consume("", CONSUMER_CAPS)
    with pytest.raises(MediasoupTypeError):
        await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS, app_data="NOT-AN-OBJECT")  # type: ignore
    with pytest.raises(MediasoupTypeError):
        await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS, mid="")
    with pytest.raises(MediasoupTypeError):
        await env.transport2.consume(env.audio_producer.id, {"codecs": "chicken"})


async def test_consume_with_enable_rtx(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS, enable_rtx=True)
    assert audio.kind == "audio"
    assert audio.rtp_parameters["codecs"] == [
        {
            "mimeType": "audio/opus",
            "payloadType": 100,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"useinbandfec": 1, "usedtx": 1, "foo": 222.222, "bar": "333"},
            "rtcpFeedback": [{"type": "nack", "parameter": ""}],
        }
    ]


async def test_consume_with_user_provided_mid(env: _Env) -> None:
    first = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    custom = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS, mid="custom-mid")
    third = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    assert first.rtp_parameters["mid"].isdigit()
    assert custom.rtp_parameters["mid"] == "custom-mid"
    assert int(first.rtp_parameters["mid"]) + 1 == int(third.rtp_parameters["mid"])


async def test_consume_with_incompatible_capabilities_raises_unsupported_error(env: _Env) -> None:
    caps: dict[str, Any]
    for caps in (
        {
            "codecs": [
                {
                    "kind": "audio",
                    "mimeType": "audio/ISAC",
                    "preferredPayloadType": 100,
                    "clockRate": 32000,
                    "channels": 1,
                }
            ],
            "headerExtensions": [],
        },
        {"codecs": [], "headerExtensions": []},
    ):
        assert not env.router.can_consume(env.audio_producer.id, caps)
        with pytest.raises(UnsupportedError):
            await env.transport2.consume(env.audio_producer.id, caps)
    assert env.transport2.consumers == {}


async def test_dump(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    dump1 = await audio.dump()
    assert dump1["id"] == audio.id and dump1["producerId"] == audio.producer_id and dump1["kind"] == "audio"
    [codec] = dump1["rtpParameters"]["codecs"]
    assert codec["mimeType"] == "audio/opus" and codec["payloadType"] == 100
    assert codec["clockRate"] == 48000 and codec["channels"] == 2
    assert codec["parameters"] == {"useinbandfec": 1, "usedtx": 1, "foo": 222.222, "bar": "333"}
    assert codec["rtcpFeedback"] == []
    assert dump1["rtpParameters"]["headerExtensions"] == [
        {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 1, "encrypt": False, "parameters": {}},
        {
            "uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            "id": 4,
            "parameters": {},
            "encrypt": False,
        },
        {"uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": 6, "parameters": {}, "encrypt": False},
    ]
    [encoding] = dump1["rtpParameters"]["encodings"]
    assert encoding["codecPayloadType"] == 100
    assert encoding["ssrc"] == audio.rtp_parameters["encodings"][0]["ssrc"]
    assert dump1["rtpParameters"]["msid"] == "1111-1111-1111-1111 2222-2222-2222-2222"
    assert dump1["type"] == "simple"
    [consumable] = dump1["consumableRtpEncodings"]
    assert consumable["ssrc"] == env.audio_producer.consumable_rtp_parameters["encodings"][0]["ssrc"]
    assert dump1["supportedCodecPayloadTypes"] == [100]
    assert dump1["paused"] is False and dump1["producerPaused"] is False and dump1["priority"] == 1
    assert dump1["traceEventTypes"] == []
    assert dump1["rtpStream"]["params"]["ssrc"] == encoding["ssrc"]
    assert dump1["rtpStream"]["params"]["rid"] is None

    video = await env.transport2.consume(env.video_producer.id, CONSUMER_CAPS, paused=True)
    dump2 = await video.dump()
    assert dump2["id"] == video.id and dump2["producerId"] == video.producer_id and dump2["kind"] == "video"
    h264, _rtx = dump2["rtpParameters"]["codecs"]
    assert h264["mimeType"] == "video/H264" and h264["payloadType"] == 103 and h264["clockRate"] == 90000
    assert "channels" not in h264
    assert h264["parameters"] == {"packetization-mode": 1, "profile-level-id": "4d0032"}
    assert h264["rtcpFeedback"] == [
        {"type": "nack"},
        {"type": "nack", "parameter": "pli"},
        {"type": "ccm", "parameter": "fir"},
        {"type": "goog-remb"},
    ]
    assert dump2["rtpParameters"]["headerExtensions"] == [
        {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 1, "encrypt": False, "parameters": {}},
        {
            "uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            "id": 4,
            "parameters": {},
            "encrypt": False,
        },
        {"uri": "urn:3gpp:video-orientation", "id": 8, "parameters": {}, "encrypt": False},
        {"uri": "urn:ietf:params:rtp-hdrext:toffset", "id": 9, "parameters": {}, "encrypt": False},
    ]
    [encoding] = dump2["rtpParameters"]["encodings"]
    assert encoding["codecPayloadType"] == 103
    assert encoding["ssrc"] == video.rtp_parameters["encodings"][0]["ssrc"]
    assert encoding["rtx"] == {"ssrc": video.rtp_parameters["encodings"][0]["rtx"]["ssrc"]}
    assert encoding["scalabilityMode"] == "L4T5"
    assert "msid" not in dump2["rtpParameters"]
    consumables = dump2["consumableRtpEncodings"]
    producer_encodings = env.video_producer.consumable_rtp_parameters["encodings"]
    assert [(e["ssrc"], e["scalabilityMode"]) for e in consumables] == [(e["ssrc"], "L1T5") for e in producer_encodings]
    assert dump2["supportedCodecPayloadTypes"] == [103]
    assert dump2["paused"] is True and dump2["producerPaused"] is False and dump2["priority"] == 1
    assert dump2["type"] == "simulcast"
    assert dump2["preferredSpatialLayer"] == 3 and dump2["preferredTemporalLayer"] == 4
    assert dump2["targetSpatialLayer"] == -1 and dump2["currentSpatialLayer"] == -1
    assert dump2["rtpStream"]["rtxStream"]["params"]["ssrc"] == encoding["rtx"]["ssrc"]

    pipe = await env.transport2.consume(env.video_producer.id, CONSUMER_CAPS, pipe=True)
    dump3 = await pipe.dump()
    assert dump3["type"] == "pipe"
    assert [s["params"]["ssrc"] for s in dump3["rtpStreams"]] == [e["ssrc"] for e in pipe.rtp_parameters["encodings"]]
    assert len(dump3["rtpStreams"]) == len(producer_encodings)


async def test_get_stats(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    [stats] = await audio.get_stats()
    assert stats["type"] == "outbound-rtp" and stats["kind"] == "audio"
    assert stats["mimeType"] == "audio/opus"
    assert stats["ssrc"] == audio.rtp_parameters["encodings"][0]["ssrc"]
    assert stats["packetCount"] == 0 and stats["byteCount"] == 0
    video = await env.transport2.consume(env.video_producer.id, CONSUMER_CAPS)
    [stats] = await video.get_stats()
    assert stats["type"] == "outbound-rtp" and stats["kind"] == "video"
    assert stats["mimeType"] == "video/H264"
    assert stats["ssrc"] == video.rtp_parameters["encodings"][0]["ssrc"]


async def test_pause_and_resume(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    pauses: list = []
    resumes: list = []
    audio.observer.on("pause", lambda: pauses.append(True))
    audio.observer.on("resume", lambda: resumes.append(True))
    await audio.pause()
    assert audio.paused is True and (await audio.dump())["paused"] is True
    await audio.resume()
    assert audio.paused is False and (await audio.dump())["paused"] is False
    calls = [audio.pause(), audio.resume(), audio.pause(), audio.pause(), audio.pause(), audio.resume()]
    await asyncio.gather(*(asyncio.ensure_future(call) for call in calls))
    assert len(pauses) == 3 and len(resumes) == 3


async def test_producer_pause_and_resume_reach_the_consumer_observer(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    events: list = []
    audio.observer.once("resume", lambda: events.append("resume"))
    audio.observer.once("pause", lambda: events.append("pause"))
    await asyncio.gather(env.audio_producer.pause(), env.audio_producer.resume())
    await asyncio.sleep(0.1)  # the consumer learns it from worker notifications
    assert events == ["pause", "resume"] and audio.paused is False


async def test_set_preferred_layers(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    video = await env.transport2.consume(env.video_producer.id, CONSUMER_CAPS)
    await audio.set_preferred_layers(1, 1)
    assert audio.preferred_layers is None  # not a simulcast/SVC consumer
    await video.set_preferred_layers(2, 3)
    assert video.preferred_layers == {"spatialLayer": 2, "temporalLayer": 3}
    await video.set_preferred_layers(3)
    assert video.preferred_layers == {"spatialLayer": 3, "temporalLayer": 4}
    await video.set_preferred_layers(3, 0)
    assert video.preferred_layers == {"spatialLayer": 3, "temporalLayer": 0}
    await video.set_preferred_layers(66, 66)
    assert video.preferred_layers == {"spatialLayer": 3, "temporalLayer": 4}
    dump = await video.dump()
    assert dump["preferredSpatialLayer"] == 3 and dump["preferredTemporalLayer"] == 4


async def test_set_preferred_layers_with_wrong_arguments_raises_type_error(env: _Env) -> None:
    video = await env.transport2.consume(env.video_producer.id, CONSUMER_CAPS)
    with pytest.raises(TypeError):
        await video.set_preferred_layers()  # type: ignore[call-arg]
    with pytest.raises(MediasoupTypeError):
        await video.set_preferred_layers("foo")  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await video.set_preferred_layers(None, 2)  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await video.set_preferred_layers(1, "123")  # type: ignore[arg-type]


async def test_svc_consumer_honors_preferred_layers(worker: Worker) -> None:
    router, transport1, transport2 = await _vpx_transports(worker)
    producer = await transport1.produce("video", copy.deepcopy(VP9_SVC_RTP_PARAMETERS))
    assert producer.type == "svc"
    assert router.can_consume(producer.id, VPX_CONSUMER_CAPS)
    consumer = await transport2.consume(
        producer.id, VPX_CONSUMER_CAPS, paused=True, preferred_layers={"spatialLayer": 1, "temporalLayer": 0}
    )
    assert consumer.type == "svc"
    assert consumer.preferred_layers == {"spatialLayer": 1, "temporalLayer": 0}
    # Out of range layers are clamped to the highest ones.
    clamped = await transport2.consume(
        producer.id, VPX_CONSUMER_CAPS, paused=True, preferred_layers={"spatialLayer": 9, "temporalLayer": 9}
    )
    assert clamped.preferred_layers == {"spatialLayer": 2, "temporalLayer": 2}
    # No temporal layer: the highest one.
    no_temporal = await transport2.consume(
        producer.id, VPX_CONSUMER_CAPS, paused=True, preferred_layers={"spatialLayer": 1}
    )
    assert no_temporal.preferred_layers == {"spatialLayer": 1, "temporalLayer": 2}


async def test_simulcast_consumer_honors_preferred_layers(worker: Worker) -> None:
    router, transport1, transport2 = await _vpx_transports(worker)
    producer = await transport1.produce("video", copy.deepcopy(VP8_SIMULCAST_RTP_PARAMETERS))
    assert producer.type == "simulcast"
    assert router.can_consume(producer.id, VPX_CONSUMER_CAPS)
    consumer = await transport2.consume(
        producer.id, VPX_CONSUMER_CAPS, paused=True, preferred_layers={"spatialLayer": 1, "temporalLayer": 0}
    )
    assert consumer.type == "simulcast"
    assert consumer.preferred_layers == {"spatialLayer": 1, "temporalLayer": 0}
    # The spatial layer is clamped to the number of encodings - 1.
    clamped = await transport2.consume(
        producer.id, VPX_CONSUMER_CAPS, paused=True, preferred_layers={"spatialLayer": 9, "temporalLayer": 9}
    )
    assert clamped.preferred_layers == {"spatialLayer": 2, "temporalLayer": 4}


@pytest.mark.parametrize(
    ("encodings", "expected_type"),
    [
        ([{"ssrc": 11111111}], "simple"),
        ([{"ssrc": 55555555, "scalabilityMode": "L1T3"}], "svc"),
        ([{"ssrc": 11111111, "scalabilityMode": "L1T3"}, {"ssrc": 22222222, "scalabilityMode": "L1T3"}], "simulcast"),
    ],
)
async def test_consumer_type_follows_the_producer(worker: Worker, encodings: list, expected_type: str) -> None:
    _router, transport1, transport2 = await _vpx_transports(worker)
    producer = await transport1.produce(
        "video",
        {
            "codecs": [
                {
                    "mimeType": "video/VP8",
                    "payloadType": 96,
                    "clockRate": 90000,
                    "rtcpFeedback": [{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"}],
                }
            ],
            "headerExtensions": [],
            "encodings": encodings,
            "rtcp": {"cname": "test"},
        },
    )
    assert producer.type == expected_type
    consumer = await transport2.consume(producer.id, VPX_CONSUMER_CAPS)
    assert consumer.type == expected_type


async def test_set_priority_and_unset_priority(env: _Env) -> None:
    video = await env.transport2.consume(env.video_producer.id, CONSUMER_CAPS)
    await video.set_priority(2)
    assert video.priority == 2
    assert (await video.dump())["priority"] == 2
    await video.unset_priority()
    assert video.priority == 1


async def test_set_priority_with_wrong_arguments_raises_type_error(env: _Env) -> None:
    video = await env.transport2.consume(env.video_producer.id, CONSUMER_CAPS)
    with pytest.raises(TypeError):
        await video.set_priority()  # type: ignore[call-arg]
    with pytest.raises(MediasoupTypeError):
        await video.set_priority(0)
    with pytest.raises(MediasoupTypeError):
        await video.set_priority("foo")  # type: ignore[arg-type]
    assert video.priority == 1


async def test_enable_trace_event(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    await audio.enable_trace_event(["rtp", "pli"])
    assert sorted((await audio.dump())["traceEventTypes"]) == ["pli", "rtp"]
    await audio.enable_trace_event()
    assert (await audio.dump())["traceEventTypes"] == []
    await audio.enable_trace_event(["nack", "FOO", "fir"])
    assert sorted((await audio.dump())["traceEventTypes"]) == ["fir", "nack"]
    await audio.enable_trace_event()
    assert (await audio.dump())["traceEventTypes"] == []


async def test_enable_trace_event_with_wrong_arguments_raises_type_error(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    with pytest.raises(MediasoupTypeError):
        await audio.enable_trace_event(123)  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await audio.enable_trace_event("rtp")  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await audio.enable_trace_event(["fir", 123.123])  # type: ignore[list-item]


async def test_emits_producerpause_and_producerresume(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    paused = _once(audio, "producerpause")
    await env.audio_producer.pause()
    await asyncio.wait_for(paused, 2)
    assert audio.paused is False and audio.producer_paused is True
    resumed = _once(audio, "producerresume")
    await env.audio_producer.resume()
    await asyncio.wait_for(resumed, 2)
    assert audio.paused is False and audio.producer_paused is False


async def test_a_producer_paused_right_after_a_consume_reaches_the_new_consumer(env: _Env) -> None:
    """A client pausing its camera right after producing (the meeting page's "camera
    off" in the lobby): the consume of that producer for another peer is answered, then
    the pause reaches the new consumer as ``producerpause``. With the event loop busy
    while the worker answers both, one read holds the consume answer and that
    notification, before the consume's caller has made the consumer: it must still get
    it (it was dropped: ``producerPaused`` stayed false and the other peer's page showed
    an empty video instead of a name card, 1 run in 4 of make test)."""
    for _ in range(3):
        consume = asyncio.ensure_future(env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS))
        pause = asyncio.ensure_future(env.audio_producer.pause())
        await asyncio.sleep(0)  # both requests written to the worker
        time.sleep(0.2)  # the worker answers both before the loop reads: one chunk
        consumer = await consume
        await pause
        await asyncio.sleep(0)
        assert consumer.producer_paused is True
        consumer.close()
        await env.audio_producer.resume()


async def test_emits_score(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    scores: list = []
    audio.on("score", scores.append)
    score = FbsConsumerScore.ConsumerScoreT()
    score.score, score.producerScore, score.producerScores = 9, 10, [8]
    body = FbsScoreNotification.ScoreNotificationT()
    body.score = score
    notification = FbsNotification.NotificationT()
    notification.handlerId = audio.id
    notification.event = FbsEvent.Event.CONSUMER_SCORE
    notification.bodyType = FbsNotificationBody.Body.Consumer_ScoreNotification
    notification.body = body
    message = FbsMessage.MessageT()
    message.dataType = FbsMessageBody.Body.Notification
    message.data = notification
    builder = flatbuffers.Builder(256)
    builder.FinishSizePrefixed(message.Pack(builder))
    frame = bytes(builder.Output())
    for _ in range(3):
        audio.channel._on_data(frame)
    await asyncio.sleep(0)
    assert len(scores) == 3
    assert audio.score == {"score": 9, "producerScore": 10, "producerScores": [8]}


async def test_close(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    video = await env.transport2.consume(env.video_producer.id, CONSUMER_CAPS)
    closed: list = []
    audio.observer.once("close", lambda: closed.append(True))
    audio.close()
    audio.close()  # idempotent
    assert closed == [True] and audio.closed
    with pytest.raises(NotFoundError):
        await audio.dump()
    dump = await env.router.dump()
    by_producer = {item["key"]: item["values"] for item in dump["mapProducerIdConsumerIds"]}
    assert by_producer == {env.audio_producer.id: [], env.video_producer.id: [video.id]}
    assert dump["mapConsumerIdProducerId"] == [{"key": video.id, "value": env.video_producer.id}]
    transport_dump = await env.transport2.dump()
    assert transport_dump["producerIds"] == [] and transport_dump["consumerIds"] == [video.id]
    assert env.transport2.consumers == {video.id: video}


async def test_methods_reject_if_closed(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    audio.close()
    for method in (audio.dump, audio.get_stats, audio.pause, audio.resume, audio.request_key_frame):
        with pytest.raises(NotFoundError):
            await method()
    with pytest.raises(TypeError):
        await audio.set_preferred_layers()  # type: ignore[call-arg]
    with pytest.raises(NotFoundError):
        await audio.set_priority(2)


async def test_emits_producerclose_when_producer_closes(env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    closed: list = []
    audio.observer.once("close", lambda: closed.append(True))
    producerclose = _once(audio, "producerclose")
    env.audio_producer.close()
    await asyncio.wait_for(producerclose, 2)
    assert closed == [True] and audio.closed
    assert env.transport2.consumers == {}
    with pytest.raises(NotFoundError):
        await audio.dump()


async def test_emits_transportclose_when_transport_closes(env: _Env) -> None:
    video = await env.transport2.consume(env.video_producer.id, CONSUMER_CAPS)
    closed: list = []
    video.observer.once("close", lambda: closed.append(True))
    transportclose = _once(video, "transportclose")
    env.transport2.close()
    await asyncio.wait_for(transportclose, 2)
    assert closed == [True] and video.closed
    with pytest.raises(NotFoundError):
        await video.dump()
    dump = await env.router.dump()
    by_producer = {item["key"]: item["values"] for item in dump["mapProducerIdConsumerIds"]}
    assert by_producer == {env.audio_producer.id: [], env.video_producer.id: []}
    assert dump["mapConsumerIdProducerId"] == []


async def test_emits_transportclose_when_worker_closes(worker: Worker, env: _Env) -> None:
    audio = await env.transport2.consume(env.audio_producer.id, CONSUMER_CAPS)
    events: list = []
    audio.once("transportclose", lambda: events.append("transportclose"))
    audio.observer.once("close", lambda: events.append("observer close"))
    worker.close()
    assert events == ["transportclose", "observer close"] and audio.closed
    with pytest.raises(InvalidStateError):
        await audio.dump()


# -- real RTP: key frame requests and simulcast layer selection ------------------------

VP8_PT = 96
PROBATION_SSRC = 1234  # mediasoup's RTP probation stream
RTCP_PSFB = 206  # payload-specific feedback; FMT 1 is PLI, FMT 4 is FIR


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]


async def _udp_endpoint() -> _Udp:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        _Udp, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    return protocol


def _vp8_packet(ssrc: int, seq: int, keyframe: bool) -> bytes:
    """An RTP packet carrying the first partition of a VP8 frame (key frame or not)."""
    header = struct.pack("!BBHII", 0x80, 0x80 | VP8_PT, seq & 0xFFFF, (seq * 3000) & 0xFFFFFFFF, ssrc)
    descriptor = bytes([0x10])  # S=1, partition 0, no extensions
    if keyframe:
        # P=0 (key frame) + size, start code and a 640x360 frame size.
        payload = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01]) + bytes(20)
    else:
        payload = bytes([0x11, 0x02, 0x00]) + bytes(20)
    return header + descriptor + payload


def _pli_media_ssrcs(packet: bytes) -> list[int]:
    """The media SSRCs of the PLIs in a (compound) RTCP packet."""
    ssrcs = []
    offset = 0
    while offset + 4 <= len(packet):
        first, packet_type, length = struct.unpack_from("!BBH", packet, offset)
        if packet_type == RTCP_PSFB and first & 0x1F == 1 and offset + 12 <= len(packet):
            ssrcs.append(struct.unpack_from("!I", packet, offset + 8)[0])
        offset += 4 * (length + 1)
    return ssrcs


async def _wait_for_pli(endpoint: _Udp, ssrc: int, timeout: float = 3.0) -> None:
    async def wait() -> None:
        while True:
            packet = await endpoint.packets.get()
            if len(packet) >= 2 and 192 <= packet[1] <= 223 and ssrc in _pli_media_ssrcs(packet):
                return

    await asyncio.wait_for(wait(), timeout)


def _sender_report(ssrc: int, rtp_timestamp: int) -> bytes:
    """An RTCP Sender Report mapping ``rtp_timestamp`` to now (what lets the worker align simulcast streams)."""
    import time

    now = time.time() + 2208988800  # NTP epoch
    seconds = int(now)
    fraction = int((now - seconds) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, seconds, fraction, rtp_timestamp & 0xFFFFFFFF, 0, 0)


async def _send_until(
    endpoint: _Udp,
    port: int,
    ssrcs: list[int],
    done: asyncio.Future,
    keyframe_ssrcs: set[int] | None = None,
    seq_start: int = 1,
    timeout: float = 5.0,
    sender_reports: bool = False,
) -> int:
    """Send VP8 packets on every SSRC (every 20 ms, and Sender Reports every 100 ms if asked)
    until ``done`` resolves; returns the next sequence number."""
    assert endpoint.transport is not None
    seq = seq_start
    deadline = asyncio.get_running_loop().time() + timeout
    while not done.done():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the worker did not react in time")
        for ssrc in ssrcs:
            endpoint.transport.sendto(_vp8_packet(ssrc, seq, ssrc in (keyframe_ssrcs or set())), ("127.0.0.1", port))
            if sender_reports and seq % 5 == 0:
                endpoint.transport.sendto(_sender_report(ssrc, seq * 3000), ("127.0.0.1", port))
        seq += 1
        await asyncio.sleep(0.02)
    return seq


async def test_request_key_frame_sends_a_pli_to_the_producer_endpoint(worker: Worker) -> None:
    router = await worker.create_router(VPX_MEDIA_CODECS)
    send_transport = await router.create_plain_transport(listen_ip="127.0.0.1", comedia=True)
    recv_transport = await router.create_plain_transport(listen_ip="127.0.0.1")
    sender, receiver = await _udp_endpoint(), await _udp_endpoint()
    await recv_transport.connect(ip="127.0.0.1", port=receiver.port)
    ssrc = 12345678
    producer = await send_transport.produce(
        "video",
        {
            "codecs": [
                {
                    "mimeType": "video/VP8",
                    "payloadType": VP8_PT,
                    "clockRate": 90000,
                    "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}],
                }
            ],
            "encodings": [{"ssrc": ssrc}],
            "rtcp": {"cname": "sender"},
        },
    )
    consumer = await recv_transport.consume(producer.id, router.rtp_capabilities)
    await producer.enable_trace_event(["pli"])
    traces: list = []
    producer.on("trace", traces.append)

    # A key frame flows through: the consumer forwards it with its own SSRC.
    forwarded: asyncio.Future = asyncio.get_running_loop().create_future()

    async def watch_receiver() -> None:
        while True:
            packet = await receiver.packets.get()
            if (  # RTP, not RTCP
                not 192 <= packet[1] <= 223
                and struct.unpack_from("!I", packet, 8)[0] == consumer.rtp_parameters["encodings"][0]["ssrc"]
            ):
                forwarded.done() or forwarded.set_result(True)

    watcher = asyncio.ensure_future(watch_receiver())
    try:
        seq = await _send_until(sender, send_transport.tuple["localPort"], [ssrc], forwarded, {ssrc})
        # Drain what the worker sent so far (its own PLIs at the start), then ask for a key frame.
        while not sender.packets.empty():
            sender.packets.get_nowait()
        await consumer.request_key_frame()
        pli = asyncio.ensure_future(_wait_for_pli(sender, ssrc))
        await _send_until(sender, send_transport.tuple["localPort"], [ssrc], pli, seq_start=seq)
        await pli
    finally:
        watcher.cancel()
    assert any(trace["type"] == "pli" and trace["direction"] == "out" for trace in traces)
    [stats] = await producer.get_stats()
    assert stats["type"] == "inbound-rtp" and stats["ssrc"] == ssrc and stats["pliCount"] >= 1
    assert stats["packetCount"] > 0 and isinstance(stats["bitrateByLayer"], dict)


async def test_simulcast_consumer_selects_a_layer_and_requests_its_key_frame(worker: Worker) -> None:
    router = await worker.create_router(VPX_MEDIA_CODECS)
    send_transport = await router.create_plain_transport(listen_ip="127.0.0.1", comedia=True)
    recv_transport = await router.create_plain_transport(listen_ip="127.0.0.1")
    sender, receiver = await _udp_endpoint(), await _udp_endpoint()
    await recv_transport.connect(ip="127.0.0.1", port=receiver.port)
    port = send_transport.tuple["localPort"]
    ssrcs = [44444441, 44444442, 44444443]
    producer = await send_transport.produce(
        "video",
        {
            "codecs": [
                {
                    "mimeType": "video/VP8",
                    "payloadType": VP8_PT,
                    "clockRate": 90000,
                    "rtcpFeedback": [
                        {"type": "nack"},
                        {"type": "nack", "parameter": "pli"},
                        {"type": "ccm", "parameter": "fir"},
                    ],
                }
            ],
            "encodings": [{"ssrc": ssrc} for ssrc in ssrcs],
            "rtcp": {"cname": "sender"},
        },
    )
    assert producer.type == "simulcast"
    consumer = await recv_transport.consume(producer.id, router.rtp_capabilities, preferred_layers={"spatialLayer": 1})
    assert consumer.type == "simulcast"
    assert consumer.preferred_layers == {"spatialLayer": 1, "temporalLayer": 0}
    layers_seen: list = []
    consumer.on("layerschange", layers_seen.append)

    # All three streams flow (with Sender Reports, so the worker can align their
    # timestamps): the consumer targets its preferred layer, 1, and asks for a
    # key frame on it, since it cannot start without one.
    pli = asyncio.ensure_future(_wait_for_pli(sender, ssrcs[1]))
    seq = await _send_until(sender, port, ssrcs, pli, sender_reports=True)
    await pli
    assert layers_seen == [] and consumer.current_layers is None
    # A key frame on layer 1: the consumer switches to it and forwards it.
    switched: asyncio.Future = asyncio.get_running_loop().create_future()
    consumer.on("layerschange", lambda layers: layers and not switched.done() and switched.set_result(layers))
    seq = await _send_until(sender, port, ssrcs, switched, {ssrcs[1]}, seq_start=seq, sender_reports=True)
    assert switched.result() == {"spatialLayer": 1, "temporalLayer": 0}
    assert consumer.current_layers == {"spatialLayer": 1, "temporalLayer": 0}
    dump = await consumer.dump()
    assert dump["currentSpatialLayer"] == 1 and dump["targetSpatialLayer"] == 1
    consumer_ssrc = consumer.rtp_parameters["encodings"][0]["ssrc"]
    await asyncio.sleep(0.1)
    forwarded = []
    while not receiver.packets.empty():
        packet = receiver.packets.get_nowait()
        if not 192 <= packet[1] <= 223:
            forwarded.append(struct.unpack_from("!I", packet, 8)[0])
    # The worker may also send bandwidth probation packets (SSRC 1234, its own).
    assert consumer_ssrc in forwarded and set(forwarded) <= {consumer_ssrc, PROBATION_SSRC}
    stats = await producer.get_stats()
    assert sorted(s["ssrc"] for s in stats) == ssrcs
    assert all(s["type"] == "inbound-rtp" and s["packetCount"] > 0 for s in stats)
    [consumer_stats, *producer_side] = await consumer.get_stats()
    assert consumer_stats["type"] == "outbound-rtp" and consumer_stats["ssrc"] == consumer_ssrc
    assert consumer_stats["packetCount"] > 0
    assert all(s["type"] == "inbound-rtp" for s in producer_side)

    # Preferring layer 0 moves the target there and asks for its key frame.
    pli = asyncio.ensure_future(_wait_for_pli(sender, ssrcs[0]))
    await consumer.set_preferred_layers(0)
    assert consumer.preferred_layers == {"spatialLayer": 0, "temporalLayer": 0}
    seq = await _send_until(sender, port, ssrcs, pli, seq_start=seq, sender_reports=True)
    await pli
    switched = asyncio.get_running_loop().create_future()
    consumer.on("layerschange", lambda layers: layers and not switched.done() and switched.set_result(layers))
    seq = await _send_until(sender, port, ssrcs, switched, {ssrcs[0]}, seq_start=seq, sender_reports=True)
    assert switched.result() == {"spatialLayer": 0, "temporalLayer": 0}

    # An explicit key frame request goes to the layer being forwarded.
    while not sender.packets.empty():
        sender.packets.get_nowait()
    await consumer.request_key_frame()
    pli = asyncio.ensure_future(_wait_for_pli(sender, ssrcs[0]))
    await _send_until(sender, port, ssrcs, pli, seq_start=seq, sender_reports=True)
    await pli


def _vp8_packet_with_rid(ssrc: int, seq: int, mid: str, rid: str, keyframe: bool) -> bytes:
    """A VP8 packet carrying MID (extension id 1) and RID (id 2) one-byte header extensions."""
    packet = _vp8_packet(ssrc, seq, keyframe)
    elements = bytes([0x10 | (len(mid) - 1)]) + mid.encode() + bytes([0x20 | (len(rid) - 1)]) + rid.encode()
    elements += bytes(-len(elements) % 4)
    extension = struct.pack("!HH", 0xBEDE, len(elements) // 4) + elements
    return bytes([packet[0] | 0x10]) + packet[1:12] + extension + packet[12:]


async def test_rid_simulcast_producer_learns_its_ssrcs_and_feeds_a_simulcast_consumer(worker: Worker) -> None:
    router = await worker.create_router(VPX_MEDIA_CODECS)
    send_transport = await router.create_plain_transport(listen_ip="127.0.0.1", comedia=True)
    recv_transport = await router.create_plain_transport(listen_ip="127.0.0.1")
    sender, receiver = await _udp_endpoint(), await _udp_endpoint()
    await recv_transport.connect(ip="127.0.0.1", port=receiver.port)
    port = send_transport.tuple["localPort"]
    rids = ["r0", "r1", "r2"]
    producer = await send_transport.produce(
        "video",
        {
            "mid": "v",
            "codecs": [
                {
                    "mimeType": "video/VP8",
                    "payloadType": VP8_PT,
                    "clockRate": 90000,
                    "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}],
                }
            ],
            "headerExtensions": [
                {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 1},
                {"uri": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", "id": 2},
            ],
            "encodings": [{"rid": rid, "scalabilityMode": "L1T1"} for rid in rids],
            "rtcp": {"cname": "sender"},
        },
    )
    assert producer.type == "simulcast"
    consumer = await recv_transport.consume(producer.id, router.rtp_capabilities, preferred_layers={"spatialLayer": 2})
    assert consumer.type == "simulcast"
    assert consumer.preferred_layers == {"spatialLayer": 2, "temporalLayer": 0}
    assert len(consumer.rtp_parameters["encodings"]) == 1  # one stream to the endpoint
    assert consumer.rtp_parameters["encodings"][0]["scalabilityMode"] == "L3T1"
    # The RTP streams use SSRCs the producer does not know yet: RID tells them apart.
    ssrcs = {rid: 70000000 + index for index, rid in enumerate(rids)}
    assert sender.transport is not None
    switched: asyncio.Future = asyncio.get_running_loop().create_future()
    consumer.on("layerschange", lambda layers: layers and not switched.done() and switched.set_result(layers))
    pli = asyncio.ensure_future(_wait_for_pli(sender, ssrcs["r0"]))
    seq = 1
    deadline = asyncio.get_running_loop().time() + 5
    # Without Sender Reports the first stream seen (r0) stays the timestamp
    # reference and the only layer the consumer may switch to: it asks for a
    # key frame there, and switches once one arrives.
    while not switched.done():
        assert asyncio.get_running_loop().time() < deadline, "no layer switch"
        for rid in rids:
            keyframe = pli.done() and rid == "r0"
            sender.transport.sendto(_vp8_packet_with_rid(ssrcs[rid], seq, "v", rid, keyframe), ("127.0.0.1", port))
        seq += 1
        await asyncio.sleep(0.02)
    assert pli.done() and switched.result() == {"spatialLayer": 0, "temporalLayer": 0}
    stats = await producer.get_stats()
    assert sorted((s["rid"], s["ssrc"]) for s in stats) == sorted(ssrcs.items())
    dump = await producer.dump()
    assert sorted((s["params"]["rid"], s["params"]["ssrc"]) for s in dump["rtpStreams"]) == sorted(ssrcs.items())
    transport_dump = await send_transport.dump()
    listener = transport_dump["rtpListener"]
    assert {item["key"] for item in listener["ssrcTable"]} == set(ssrcs.values())
    assert all(item["value"] == producer.id for item in listener["ssrcTable"])
    assert listener["midTable"] == [{"key": "v", "value": producer.id}]
    assert sorted(item["key"] for item in listener["ridTable"]) == rids

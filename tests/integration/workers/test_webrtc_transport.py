"""WebRtcTransport, against the real worker (after mediasoup's test-WebRtcTransport.ts)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import flatbuffers
import pytest

from workers.errors import InvalidStateError, MediasoupError, MediasoupTypeError, NotFoundError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.router import Router
from workers.webrtc_transport import WebRtcTransport
from workers.worker import Worker

import FBS.Message.Body as FbsMessageBody
import FBS.Message.Message as FbsMessage
import FBS.Notification.Body as FbsNotificationBody
import FBS.Notification.Event as FbsEvent
import FBS.Notification.Notification as FbsNotification
import FBS.Transport.Protocol as FbsProtocol
import FBS.Transport.Tuple as FbsTuple
import FBS.WebRtcTransport.DtlsState as FbsDtlsState
import FBS.WebRtcTransport.DtlsStateChangeNotification as FbsDtlsStateChange
import FBS.WebRtcTransport.IceSelectedTupleChangeNotification as FbsIceTupleChange
import FBS.WebRtcTransport.IceState as FbsIceState
import FBS.WebRtcTransport.IceStateChangeNotification as FbsIceStateChange

PORT_RANGE = {"min": 2000, "max": 3000}
REMOTE_DTLS: dict[str, Any] = {
    "fingerprints": [
        {
            "algorithm": "sha-256",
            "value": "82:5A:68:3D:36:C3:0A:DE:AF:E7:32:43:D2:88:83:57:AC:2D:65:E5:80:C4:B6:FB:AF:1A:A0:21:9F:6D:0C:AD",
        }
    ],
    "role": "client",
}


def _once(emitter: Any, event: str) -> asyncio.Future:
    future: asyncio.Future = asyncio.get_running_loop().create_future()
    emitter.once(event, lambda *args: future.done() or future.set_result(args))
    return future


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _inject(transport: Any, event: int, body_type: int, body: Any) -> None:
    """Feed a notification to the transport's channel as if the worker had sent it."""
    notification = FbsNotification.NotificationT()
    notification.handlerId = transport.id
    notification.event = event
    notification.bodyType = body_type
    notification.body = body
    message = FbsMessage.MessageT()
    message.dataType = FbsMessageBody.Body.Notification
    message.data = notification
    builder = flatbuffers.Builder(256)
    builder.FinishSizePrefixed(message.Pack(builder))
    transport.channel._on_data(bytes(builder.Output()))
    await asyncio.sleep(0)  # the channel dispatches notifications on the next loop turn


async def _simple_transport(router: Router, **kwargs: Any) -> WebRtcTransport:
    return await router.create_webrtc_transport(
        listen_infos=[{"protocol": "udp", "ip": "127.0.0.1", "portRange": PORT_RANGE}], **kwargs
    )


async def test_create_webrtc_transport_succeeds(router: Router) -> None:
    new_transports: list = []
    router.observer.once("newtransport", new_transports.append)
    transport = await router.create_webrtc_transport(
        listen_infos=[
            # exposeInternalIp adds an extra ICE candidate with the ip.
            {
                "protocol": "udp",
                "ip": "127.0.0.1",
                "announcedAddress": "9.9.9.1",
                "exposeInternalIp": True,
                "portRange": PORT_RANGE,
            },
            {"protocol": "tcp", "ip": "127.0.0.1", "announcedAddress": "9.9.9.1", "portRange": PORT_RANGE},
            {"protocol": "udp", "ip": "0.0.0.0", "announcedAddress": "foo1.bar.org", "portRange": PORT_RANGE},
            {"protocol": "tcp", "ip": "0.0.0.0", "announcedAddress": "foo2.bar.org", "portRange": PORT_RANGE},
            {"protocol": "udp", "ip": "127.0.0.1", "announcedAddress": None, "portRange": PORT_RANGE},
            {"protocol": "tcp", "ip": "127.0.0.1", "announcedAddress": None, "portRange": PORT_RANGE},
        ],
        enable_tcp=True,
        prefer_udp=True,
        enable_sctp=True,
        max_send_message_size=1000001,
        max_receive_message_size=1000002,
        sctp_send_buffer_size=2000001,
        sctp_per_stream_send_queue_limit=2000002,
        sctp_max_receiver_window_buffer_size=2000003,
        app_data={"foo": "bar"},
    )
    assert (await router.dump())["transportIds"] == [transport.id]
    assert new_transports == [transport]
    assert isinstance(transport.id, str) and not transport.closed
    assert transport.type == "webrtc"
    assert transport.app_data == {"foo": "bar"}
    assert transport.ice_role == "controlled"
    assert transport.ice_parameters["iceLite"] is True
    assert isinstance(transport.ice_parameters["usernameFragment"], str)
    assert isinstance(transport.ice_parameters["password"], str)
    assert transport.sctp_parameters is not None
    assert (
        transport.sctp_parameters.items()
        >= {
            "port": 5000,
            "maxSendMessageSize": 1000001,
            "maxReceiveMessageSize": 1000002,
            "sendBufferSize": 2000001,
            "perStreamSendQueueLimit": 2000002,
            "maxReceiverWindowBufferSize": 2000003,
            "isDataChannel": True,
        }.items()
    )
    candidates = transport.ice_candidates
    expected = [
        ("9.9.9.1", "udp", None),
        ("127.0.0.1", "udp", None),
        ("9.9.9.1", "tcp", "passive"),
        ("foo1.bar.org", "udp", None),
        ("foo2.bar.org", "tcp", "passive"),
        ("127.0.0.1", "udp", None),
        ("127.0.0.1", "tcp", "passive"),
    ]
    assert [(c["ip"], c["protocol"], c.get("tcpType")) for c in candidates] == expected
    assert all(c["type"] == "host" and c["address"] == c["ip"] for c in candidates)
    assert all("tcpType" not in c for c in candidates if c["protocol"] == "udp")
    priorities = [c["priority"] for c in candidates]
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == 7
    assert transport.ice_state == "new"
    assert transport.ice_selected_tuple is None
    assert isinstance(transport.dtls_parameters["fingerprints"], list)
    assert transport.dtls_parameters["role"] == "auto"
    assert transport.dtls_state == "new"
    assert transport.dtls_remote_cert is None
    assert transport.sctp_state == "new"

    dump = await transport.dump()
    assert dump["id"] == transport.id
    assert dump["producerIds"] == [] and dump["consumerIds"] == []
    assert dump["iceRole"] == transport.ice_role
    assert dump["iceParameters"] == transport.ice_parameters
    assert dump["iceCandidates"] == transport.ice_candidates
    assert dump["iceState"] == transport.ice_state
    assert dump["iceSelectedTuple"] == transport.ice_selected_tuple
    assert dump["dtlsParameters"] == transport.dtls_parameters
    assert dump["dtlsState"] == transport.dtls_state
    assert dump["sctpParameters"] == transport.sctp_parameters
    assert dump["sctpState"] == transport.sctp_state
    assert dump["sctpNegotiatedCapabilities"] == {
        "negotiatedMaxOutboundStreams": 0,
        "negotiatedMaxInboundStreams": 0,
    }
    assert isinstance(dump["recvRtpHeaderExtensions"], dict)
    assert dump["rtpListener"] == {"ssrcTable": [], "midTable": [], "ridTable": []}
    assert dump["mapSsrcConsumerId"] == [] and dump["mapRtxSsrcConsumerId"] == []
    assert dump["traceEventTypes"] == []
    transport.close()
    assert transport.closed


async def test_create_webrtc_transport_with_deprecated_listen_ips(router: Router) -> None:
    transport = await router.create_webrtc_transport(
        listen_ips=[{"ip": "127.0.0.1", "announcedIp": None}],
        enable_udp=True,
        enable_tcp=True,
        prefer_udp=False,
        initial_available_outgoing_bitrate=1000000,
    )
    candidates = transport.ice_candidates
    assert [(c["ip"], c["protocol"], c.get("tcpType")) for c in candidates] == [
        ("127.0.0.1", "udp", None),
        ("127.0.0.1", "tcp", "passive"),
    ]
    assert candidates[0]["priority"] > candidates[1]["priority"]


async def test_create_webrtc_transport_with_fixed_port(router: Router) -> None:
    port = _free_port(socket.SOCK_STREAM)
    transport = await router.create_webrtc_transport(
        # udpReusePort is ignored for TCP.
        listen_infos=[{"protocol": "tcp", "ip": "127.0.0.1", "port": port, "flags": {"udpReusePort": True}}],
    )
    assert transport.ice_candidates[0]["port"] == port


async def test_create_webrtc_transport_with_port_range(router: Router) -> None:
    port_range = {"min": 11111, "max": 11112}
    ports = []
    for _ in range(2):
        transport = await router.create_webrtc_transport(
            listen_infos=[{"protocol": "udp", "ip": "127.0.0.1", "portRange": port_range}]
        )
        [candidate] = transport.ice_candidates
        assert candidate["ip"] == "127.0.0.1" and candidate["protocol"] == "udp"
        assert port_range["min"] <= candidate["port"] <= port_range["max"]
        ports.append(candidate["port"])
    assert sorted(ports) == [11111, 11112]
    # No more ports available.
    with pytest.raises(MediasoupError):
        await router.create_webrtc_transport(
            listen_infos=[{"protocol": "udp", "ip": "127.0.0.1", "portRange": port_range}]
        )
    assert len(router.transports) == 2


async def test_create_webrtc_transport_with_wrong_arguments_raises_type_error(router: Router) -> None:
    with pytest.raises(MediasoupTypeError):
        await router.create_webrtc_transport()
    with pytest.raises(MediasoupTypeError):
        await router.create_webrtc_transport(
            listen_infos=[{"protocol": "udp", "ip": "127.0.0.1", "portRange": {"min": 4000, "max": 3000}}]
        )
    with pytest.raises(MediasoupTypeError):
        await router.create_webrtc_transport(listen_ips=[123])
    with pytest.raises(MediasoupTypeError):
        await router.create_webrtc_transport(listen_infos="127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await router.create_webrtc_transport(listen_ips="127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await router.create_webrtc_transport(listen_ips=["127.0.0.1"], app_data="NOT-AN-OBJECT")  # type: ignore
    with pytest.raises(MediasoupTypeError):
        await router.create_webrtc_transport(
            listen_ips=["127.0.0.1"], listen_infos=[{"protocol": "udp", "ip": "127.0.0.1"}]
        )
    # A refused request leaves the channel usable.
    assert (await _simple_transport(router)).ice_candidates
    assert router.transports.keys() == {t.id for t in router.transports.values()}


async def test_create_webrtc_transport_with_non_bindable_ip_fails(router: Router) -> None:
    with pytest.raises(MediasoupError):
        await router.create_webrtc_transport(
            listen_infos=[{"protocol": "udp", "ip": "8.8.8.8", "portRange": PORT_RANGE}]
        )
    assert router.transports == {}


async def test_get_stats(router: Router) -> None:
    transport = await router.create_webrtc_transport(
        listen_infos=[{"protocol": "udp", "ip": "127.0.0.1", "announcedAddress": "9.9.9.1", "portRange": PORT_RANGE}]
    )
    [stats] = await transport.get_stats()
    assert stats["type"] == "webrtc-transport"
    assert stats["transportId"] == transport.id
    assert isinstance(stats["timestamp"], int)
    assert stats["iceRole"] == "controlled" and stats["iceState"] == "new" and stats["dtlsState"] == "new"
    assert stats["sctpState"] is None
    for key in (
        "bytesReceived",
        "recvBitrate",
        "bytesSent",
        "sendBitrate",
        "rtpBytesReceived",
        "rtpRecvBitrate",
        "rtpBytesSent",
        "rtpSendBitrate",
        "rtxBytesReceived",
        "rtxRecvBitrate",
        "rtxBytesSent",
        "rtxSendBitrate",
        "probationBytesSent",
        "probationSendBitrate",
    ):
        assert stats[key] == 0, key
    assert stats["iceSelectedTuple"] is None
    assert stats["maxIncomingBitrate"] is None


async def test_connect_succeeds_once(router: Router) -> None:
    transport = await _simple_transport(router)
    assert await transport.connect(dtls_parameters=REMOTE_DTLS) is None
    with pytest.raises(MediasoupError):  # already connected
        await transport.connect(dtls_parameters=REMOTE_DTLS)
    assert transport.dtls_parameters["role"] == "server"


async def test_connect_with_wrong_arguments_raises_type_error(router: Router) -> None:
    transport = await _simple_transport(router)
    fingerprint = REMOTE_DTLS["fingerprints"][0]
    with pytest.raises(MediasoupTypeError):
        await transport.connect(dtls_parameters={})
    with pytest.raises(MediasoupTypeError):
        await transport.connect(
            dtls_parameters={
                "fingerprints": [{"algorithm": "sha-256000", "value": fingerprint["value"]}],
                "role": "client",
            }
        )
    with pytest.raises(MediasoupTypeError):
        await transport.connect(dtls_parameters={"fingerprints": [fingerprint], "role": "chicken"})
    with pytest.raises(MediasoupTypeError):
        await transport.connect(dtls_parameters={"fingerprints": [], "role": "client"})
    assert transport.dtls_parameters["role"] == "auto"
    # The channel still works after refused requests.
    await transport.connect(dtls_parameters=REMOTE_DTLS)
    assert transport.dtls_parameters["role"] == "server"


async def test_bitrate_limits(router: Router) -> None:
    transport = await _simple_transport(router)
    assert await transport.set_max_incoming_bitrate(1000000) is None
    await transport.set_max_incoming_bitrate(0)  # no limit
    await transport.set_max_outgoing_bitrate(2000000)
    await transport.set_max_outgoing_bitrate(0)
    await transport.set_min_outgoing_bitrate(100000)
    await transport.set_min_outgoing_bitrate(0)
    # Max lower than the current min fails, and min higher than the current max.
    await transport.set_min_outgoing_bitrate(3000000)
    with pytest.raises(MediasoupError):
        await transport.set_max_outgoing_bitrate(2000000)
    await transport.set_min_outgoing_bitrate(0)
    await transport.set_max_outgoing_bitrate(2000000)
    with pytest.raises(MediasoupError):
        await transport.set_min_outgoing_bitrate(3000000)
    await transport.set_max_outgoing_bitrate(0)


async def test_restart_ice(router: Router) -> None:
    transport = await _simple_transport(router)
    previous = dict(transport.ice_parameters)
    params = await transport.restart_ice()
    assert isinstance(params["usernameFragment"], str) and isinstance(params["password"], str)
    assert params["iceLite"] is True
    assert transport.ice_parameters == params
    assert params["usernameFragment"] != previous["usernameFragment"]
    assert params["password"] != previous["password"]


async def test_enable_trace_event(router: Router) -> None:
    transport = await _simple_transport(router)
    await transport.enable_trace_event(["foo", "probation"])  # unknown types are ignored
    assert (await transport.dump())["traceEventTypes"] == ["probation"]
    await transport.enable_trace_event()
    assert (await transport.dump())["traceEventTypes"] == []
    await transport.enable_trace_event(["probation", "FOO", "bwe", "BAR"])
    assert (await transport.dump())["traceEventTypes"] == ["probation", "bwe"]
    await transport.enable_trace_event()
    assert (await transport.dump())["traceEventTypes"] == []


async def test_enable_trace_event_with_wrong_arguments_raises_type_error(router: Router) -> None:
    transport = await _simple_transport(router)
    with pytest.raises(MediasoupTypeError):
        await transport.enable_trace_event(123)  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await transport.enable_trace_event("probation")  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await transport.enable_trace_event(["probation", 123.123])  # type: ignore[list-item]


async def test_events_from_the_worker(router: Router) -> None:
    transport = await _simple_transport(router)
    ice_states: list = []
    transport.on("icestatechange", ice_states.append)
    body = FbsIceStateChange.IceStateChangeNotificationT()
    body.iceState = FbsIceState.IceState.COMPLETED
    await _inject(
        transport,
        FbsEvent.Event.WEBRTCTRANSPORT_ICE_STATE_CHANGE,
        FbsNotificationBody.Body.WebRtcTransport_IceStateChangeNotification,
        body,
    )
    assert ice_states == ["completed"] and transport.ice_state == "completed"

    tuples: list = []
    transport.on("iceselectedtuplechange", tuples.append)
    fbs_tuple = FbsTuple.TupleT()
    fbs_tuple.localAddress, fbs_tuple.localPort = "1.1.1.1", 1111
    fbs_tuple.remoteIp, fbs_tuple.remotePort = "2.2.2.2", 2222
    fbs_tuple.protocol = FbsProtocol.Protocol.UDP
    body = FbsIceTupleChange.IceSelectedTupleChangeNotificationT()
    body.tuple = fbs_tuple
    await _inject(
        transport,
        FbsEvent.Event.WEBRTCTRANSPORT_ICE_SELECTED_TUPLE_CHANGE,
        FbsNotificationBody.Body.WebRtcTransport_IceSelectedTupleChangeNotification,
        body,
    )
    expected_tuple = {
        "localIp": "1.1.1.1",  # deprecated alias of localAddress
        "localAddress": "1.1.1.1",
        "localPort": 1111,
        "remoteIp": "2.2.2.2",
        "remotePort": 2222,
        "protocol": "udp",
    }
    assert tuples == [expected_tuple] and transport.ice_selected_tuple == expected_tuple

    dtls_states: list = []
    transport.on("dtlsstatechange", dtls_states.append)
    body = FbsDtlsStateChange.DtlsStateChangeNotificationT()
    body.dtlsState = FbsDtlsState.DtlsState.CONNECTING
    await _inject(
        transport,
        FbsEvent.Event.WEBRTCTRANSPORT_DTLS_STATE_CHANGE,
        FbsNotificationBody.Body.WebRtcTransport_DtlsStateChangeNotification,
        body,
    )
    assert dtls_states == ["connecting"] and transport.dtls_state == "connecting"


async def test_methods_reject_if_closed(router: Router) -> None:
    transport = await _simple_transport(router)
    closed: list = []
    transport.observer.once("close", lambda: closed.append(True))
    transport.close()
    transport.close()  # idempotent
    assert closed == [True] and transport.closed
    assert transport.ice_state == "closed" and transport.ice_selected_tuple is None
    assert transport.dtls_state == "closed" and transport.sctp_state is None
    assert router.transports == {}
    with pytest.raises(NotFoundError):
        await transport.dump()
    with pytest.raises(NotFoundError):
        await transport.get_stats()
    with pytest.raises(MediasoupTypeError):
        await transport.connect(dtls_parameters={})
    with pytest.raises(NotFoundError):
        await transport.set_max_incoming_bitrate(200000)
    with pytest.raises(NotFoundError):
        await transport.set_max_outgoing_bitrate(200000)
    with pytest.raises(NotFoundError):
        await transport.set_min_outgoing_bitrate(100000)
    with pytest.raises(NotFoundError):
        await transport.restart_ice()


async def test_emits_routerclose_when_router_closes(router: Router) -> None:
    transport = await router.create_webrtc_transport(listen_ips=["127.0.0.1"], enable_sctp=True)
    closed: list = []
    transport.observer.once("close", lambda: closed.append(True))
    routerclose = _once(transport, "routerclose")
    router.close()
    await asyncio.wait_for(routerclose, 2)
    assert closed == [True] and transport.closed
    assert transport.ice_state == "closed" and transport.ice_selected_tuple is None
    assert transport.dtls_state == "closed" and transport.sctp_state == "closed"
    with pytest.raises(NotFoundError):
        await transport.dump()


async def test_emits_routerclose_when_worker_closes(worker: Worker, router: Router) -> None:
    transport = await _simple_transport(router)
    closed: list = []
    transport.observer.once("close", lambda: closed.append(True))
    routerclose = _once(transport, "routerclose")
    worker.close()
    await asyncio.wait_for(routerclose, 2)
    assert closed == [True] and transport.closed
    assert transport.ice_state == "closed" and transport.ice_selected_tuple is None
    assert transport.dtls_state == "closed" and transport.sctp_state is None
    with pytest.raises(InvalidStateError):
        await transport.dump()

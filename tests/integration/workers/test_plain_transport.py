"""PlainTransport, against the real worker (after mediasoup's test-PlainTransport.ts)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from workers.errors import InvalidStateError, MediasoupError, MediasoupTypeError, NotFoundError
from workers.router import Router
from workers.worker import Worker

PORT_RANGE = {"min": 2000, "max": 3000}
KEY_80 = "ZnQ3eWJraDg0d3ZoYzM5cXN1Y2pnaHU5NWxrZTVv"
KEY_256_GCM = "YTdjcDBvY2JoMGY5YXNlNDc0eDJsdGgwaWRvNnJsamRrdG16aWVpZHphdHo="
MULTICAST_IP = "224.0.0.1"


def _once(emitter: Any, event: str) -> asyncio.Future:
    future: asyncio.Future = asyncio.get_running_loop().create_future()
    emitter.once(event, lambda *args: future.done() or future.set_result(args))
    return future


def _free_udp_port(ip: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


async def test_create_plain_transport_succeeds(router: Router) -> None:
    transport1 = await router.create_plain_transport(
        listen_info={"protocol": "udp", "ip": "127.0.0.1", "portRange": PORT_RANGE}
    )
    assert (await router.dump())["transportIds"] == [transport1.id]

    new_transports: list = []
    router.observer.once("newtransport", new_transports.append)
    transport2 = await router.create_plain_transport(
        listen_info={"protocol": "udp", "ip": "127.0.0.1", "announcedAddress": "9.9.9.1", "portRange": PORT_RANGE},
        enable_sctp=True,
        app_data={"foo": "bar"},
    )
    assert new_transports == [transport2]
    assert isinstance(transport2.id, str) and not transport2.closed
    assert transport2.type == "plain"
    assert transport2.app_data == {"foo": "bar"}
    assert transport2.tuple["localIp"] == "9.9.9.1"  # deprecated alias of localAddress
    assert transport2.tuple["localAddress"] == "9.9.9.1"
    assert PORT_RANGE["min"] <= transport2.tuple["localPort"] <= PORT_RANGE["max"]
    assert transport2.tuple["protocol"] == "udp"
    assert transport2.rtcp_tuple is None
    assert transport2.sctp_parameters is not None
    assert (
        transport2.sctp_parameters.items()
        >= {
            "port": 5000,
            "maxSendMessageSize": 262144,
            "maxReceiveMessageSize": 262144,
            "sendBufferSize": 2000000,
            "perStreamSendQueueLimit": 2000000,
            "maxReceiverWindowBufferSize": 5242880,
            "isDataChannel": False,
        }.items()
    )
    assert transport2.sctp_state == "new"
    assert transport2.srtp_parameters is None

    dump = await transport2.dump()
    assert dump["id"] == transport2.id
    assert dump["producerIds"] == [] and dump["consumerIds"] == []
    assert dump["tuple"] == transport2.tuple
    assert dump["rtcpTuple"] == transport2.rtcp_tuple
    assert dump["sctpParameters"] == transport2.sctp_parameters
    assert dump["sctpState"] == "new"
    assert dump["rtcpMux"] is True and dump["comedia"] is False
    assert isinstance(dump["recvRtpHeaderExtensions"], dict)
    assert isinstance(dump["rtpListener"], dict)
    transport2.close()
    assert transport2.closed

    another = await router.create_plain_transport(listen_ip="127.0.0.1")
    assert another.tuple["localAddress"] == "127.0.0.1"

    rtp_port, rtcp_port = _free_udp_port(), _free_udp_port()
    transport3 = await router.create_plain_transport(
        listen_info={"protocol": "udp", "ip": "127.0.0.1", "port": rtp_port},
        rtcp_listen_info={"protocol": "udp", "ip": "127.0.0.1", "port": rtcp_port},
    )
    assert transport3.app_data == {}
    assert transport3.tuple["localIp"] == "127.0.0.1" and transport3.tuple["localAddress"] == "127.0.0.1"
    assert transport3.tuple["localPort"] == rtp_port and transport3.tuple["protocol"] == "udp"
    assert transport3.rtcp_tuple["localIp"] == "127.0.0.1"
    assert transport3.rtcp_tuple["localAddress"] == "127.0.0.1"
    assert transport3.rtcp_tuple["localPort"] == rtcp_port and transport3.rtcp_tuple["protocol"] == "udp"
    assert transport3.sctp_parameters is None and transport3.sctp_state is None
    dump3 = await transport3.dump()
    assert dump3["id"] == transport3.id
    assert dump3["tuple"] == transport3.tuple and dump3["rtcpTuple"] == transport3.rtcp_tuple
    assert dump3["rtcpMux"] is False  # a separate RTCP listen info turns rtcpMux off
    assert dump3["sctpState"] is None


async def test_create_plain_transport_with_wrong_arguments_raises_type_error(router: Router) -> None:
    with pytest.raises(MediasoupTypeError):
        await router.create_plain_transport()
    with pytest.raises(MediasoupTypeError):
        await router.create_plain_transport(
            listen_info={"protocol": "udp", "ip": "127.0.0.1", "portRange": {"min": 4000, "max": 3000}}
        )
    with pytest.raises(MediasoupTypeError):
        await router.create_plain_transport(listen_ip="123")
    with pytest.raises(MediasoupTypeError):
        await router.create_plain_transport(listen_ip=["127.0.0.1"])
    with pytest.raises(MediasoupTypeError):
        await router.create_plain_transport(listen_info={"protocol": "tcp", "ip": "127.0.0.1"})
    with pytest.raises(MediasoupTypeError):
        await router.create_plain_transport(
            listen_info={"protocol": "udp", "ip": "127.0.0.1"},
            app_data="NOT-AN-OBJECT",  # type: ignore[arg-type]
        )
    with pytest.raises(MediasoupTypeError):
        await router.create_plain_transport(listen_ip="127.0.0.1", srtp_crypto_suite="FOO")
    assert router.transports == {}
    # Refused requests leave the channel usable.
    assert (await router.create_plain_transport(listen_ip="127.0.0.1")).tuple["localAddress"] == "127.0.0.1"


async def test_create_plain_transport_with_enable_srtp(router: Router) -> None:
    transport = await router.create_plain_transport(listen_ip="127.0.0.1", enable_srtp=True)
    assert transport.srtp_parameters is not None
    assert transport.srtp_parameters["cryptoSuite"] == "AES_CM_128_HMAC_SHA1_80"  # the default
    assert len(transport.srtp_parameters["keyBase64"]) == 40
    bad_srtp: list[Any] = [
        None,  # missing srtpParameters
        1,
        {"keyBase64": KEY_80},  # missing cryptoSuite
        {"cryptoSuite": "AES_CM_128_HMAC_SHA1_80"},  # missing keyBase64
        {"cryptoSuite": "FOO", "keyBase64": KEY_80},
        {"cryptoSuite": 123, "keyBase64": KEY_80},
        {"cryptoSuite": "AES_CM_128_HMAC_SHA1_80", "keyBase64": []},
    ]
    for srtp in bad_srtp:
        with pytest.raises(MediasoupTypeError):
            await transport.connect(ip="127.0.0.2", port=9999, srtp_parameters=srtp)
    # Valid parameters; the crypto suite changes to the remote one.
    assert (
        await transport.connect(
            ip="127.0.0.2", port=9999, srtp_parameters={"cryptoSuite": "AEAD_AES_256_GCM", "keyBase64": KEY_256_GCM}
        )
        is None
    )
    assert transport.srtp_parameters["cryptoSuite"] == "AEAD_AES_256_GCM"
    assert len(transport.srtp_parameters["keyBase64"]) == 60
    assert transport.tuple["remoteIp"] == "127.0.0.2" and transport.tuple["remotePort"] == 9999


async def test_connect_with_srtp_and_comedia(router: Router) -> None:
    transport = await router.create_plain_transport(
        listen_info={"protocol": "udp", "ip": "127.0.0.1"}, enable_srtp=True, comedia=True
    )
    assert transport.srtp_parameters is not None
    assert transport.srtp_parameters["cryptoSuite"] == "AES_CM_128_HMAC_SHA1_80"
    assert len(transport.srtp_parameters["keyBase64"]) == 40
    # Until comedia latches a remote, the tuple is local only.
    assert transport.tuple["localAddress"] == "127.0.0.1" and transport.tuple["protocol"] == "udp"
    assert transport.tuple["remoteIp"] is None
    # No ip/port with comedia: just the remote SRTP key.
    await transport.connect(srtp_parameters={"cryptoSuite": "AEAD_AES_256_GCM", "keyBase64": KEY_256_GCM})
    assert transport.srtp_parameters["cryptoSuite"] == "AEAD_AES_256_GCM"
    assert len(transport.srtp_parameters["keyBase64"]) == 60
    assert transport.tuple["remoteIp"] is None


async def test_create_plain_transport_with_non_bindable_ip_fails(router: Router) -> None:
    with pytest.raises(MediasoupError):
        await router.create_plain_transport(listen_ip="8.8.8.8")


async def test_two_transports_on_one_port_with_udp_reuse_port(router: Router) -> None:
    port = _free_udp_port()
    # ipv6Only is ignored for an IPv4 address.
    first = await router.create_plain_transport(
        listen_info={
            "protocol": "udp",
            "ip": MULTICAST_IP,
            "port": port,
            "flags": {"udpReusePort": True, "ipv6Only": True},
        }
    )
    second = await router.create_plain_transport(
        listen_info={"protocol": "udp", "ip": MULTICAST_IP, "port": port, "flags": {"udpReusePort": True}}
    )
    assert first.tuple["localPort"] == second.tuple["localPort"] == port


async def test_two_transports_on_one_port_without_udp_reuse_port_fail(router: Router) -> None:
    port = _free_udp_port()
    info = {"protocol": "udp", "ip": MULTICAST_IP, "port": port, "flags": {"udpReusePort": False}}
    assert await router.create_plain_transport(listen_info=info)
    with pytest.raises(MediasoupError):
        await router.create_plain_transport(listen_info=info)


async def test_get_stats(router: Router) -> None:
    transport = await router.create_plain_transport(listen_ip="127.0.0.1")
    [stats] = await transport.get_stats()
    assert stats["type"] == "plain-rtp-transport"
    assert stats["transportId"] == transport.id
    assert isinstance(stats["timestamp"], int)
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
    assert stats["tuple"]["localIp"] == "127.0.0.1" and stats["tuple"]["localAddress"] == "127.0.0.1"
    assert isinstance(stats["tuple"]["localPort"], int) and stats["tuple"]["protocol"] == "udp"
    assert stats["rtcpTuple"] is None
    assert stats["rtcpMux"] is True and stats["comedia"] is False


async def test_connect_succeeds_once(router: Router) -> None:
    transport = await router.create_plain_transport(listen_ip="127.0.0.1", rtcp_mux=False)
    assert await transport.connect(ip="1.2.3.4", port=1234, rtcp_port=1235) is None
    with pytest.raises(MediasoupError):  # already connected
        await transport.connect(ip="1.2.3.4", port=1234, rtcp_port=1235)
    assert transport.tuple["remoteIp"] == "1.2.3.4" and transport.tuple["remotePort"] == 1234
    assert transport.tuple["protocol"] == "udp"
    assert transport.rtcp_tuple is not None
    assert transport.rtcp_tuple["remoteIp"] == "1.2.3.4" and transport.rtcp_tuple["remotePort"] == 1235
    assert transport.rtcp_tuple["protocol"] == "udp"


async def test_connect_with_wrong_arguments_raises_type_error(router: Router) -> None:
    transport = await router.create_plain_transport(listen_ip="127.0.0.1", rtcp_mux=False)
    # SRTP is not enabled, so srtpParameters are refused.
    with pytest.raises(MediasoupTypeError):
        await transport.connect(
            ip="127.0.0.2",
            port=9998,
            rtcp_port=9999,
            srtp_parameters={"cryptoSuite": "AES_CM_128_HMAC_SHA1_80", "keyBase64": KEY_80},
        )
    with pytest.raises(MediasoupTypeError):
        await transport.connect()
    with pytest.raises(MediasoupTypeError):
        await transport.connect(ip="::::1234")
    # rtcpMux is off, so rtcpPort is required.
    with pytest.raises(MediasoupTypeError):
        await transport.connect(ip="127.0.0.1", port=1234)
    # port is required.
    with pytest.raises(MediasoupTypeError):
        await transport.connect(ip="127.0.0.1", rtcp_port=1235)


async def test_methods_reject_if_closed(router: Router) -> None:
    transport = await router.create_plain_transport(listen_ip="127.0.0.1")
    closed: list = []
    transport.observer.once("close", lambda: closed.append(True))
    transport.close()
    assert closed == [True] and transport.closed
    with pytest.raises(NotFoundError):
        await transport.dump()
    with pytest.raises(NotFoundError):
        await transport.get_stats()
    with pytest.raises(NotFoundError):
        await transport.connect()


async def test_create_plain_transport_with_fixed_port(router: Router) -> None:
    port = _free_udp_port()
    transport = await router.create_plain_transport(listen_info={"protocol": "udp", "ip": "127.0.0.1", "port": port})
    assert transport.tuple["localPort"] == port


async def test_emits_routerclose_when_router_closes(router: Router) -> None:
    transport = await router.create_plain_transport(listen_ip="127.0.0.1", enable_sctp=True)
    closed: list = []
    transport.observer.once("close", lambda: closed.append(True))
    routerclose = _once(transport, "routerclose")
    router.close()
    await asyncio.wait_for(routerclose, 2)
    assert closed == [True] and transport.closed
    assert transport.sctp_state == "closed"
    with pytest.raises(NotFoundError):
        await transport.dump()


async def test_emits_routerclose_when_worker_closes(worker: Worker, router: Router) -> None:
    transport = await router.create_plain_transport(listen_ip="127.0.0.1")
    closed: list = []
    transport.observer.once("close", lambda: closed.append(True))
    routerclose = _once(transport, "routerclose")
    worker.close()
    await asyncio.wait_for(routerclose, 2)
    assert closed == [True] and transport.closed
    with pytest.raises(InvalidStateError):
        await transport.dump()

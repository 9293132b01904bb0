"""WebRtcServer, against the real worker (after mediasoup's test-WebRtcServer.ts)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from tests.plugin_workers import require_worker_binary
from workers.errors import InvalidStateError, MediasoupError, MediasoupTypeError, NotFoundError
from workers.worker import Worker, WorkerSettings


def _once(emitter: Any, event: str) -> asyncio.Future:
    future: asyncio.Future = asyncio.get_running_loop().create_future()
    emitter.once(event, lambda *args: future.done() or future.set_result(args))
    return future


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _udp_port() -> int:
    return _free_port(socket.SOCK_DGRAM)


def _tcp_port() -> int:
    return _free_port(socket.SOCK_STREAM)


async def _check_created(worker: Worker, listen_infos: list[dict], expected_ports: tuple[Any, Any]) -> None:
    new_servers: list = []
    worker.observer.once("newwebrtcserver", new_servers.append)
    server = await worker.create_webrtc_server(listen_infos, app_data={"foo": 123})
    assert new_servers == [server]
    assert isinstance(server.id, str) and not server.closed
    assert server.app_data == {"foo": 123}
    dump = await worker.dump()
    assert dump["webRtcServerIds"] == [server.id] and dump["routerIds"] == []
    assert dump["channelMessageHandlers"] == {
        "channelRequestHandlers": [server.id],
        "channelNotificationHandlers": [],
    }
    server_dump = await server.dump()
    udp_port, tcp_port = expected_ports
    [udp] = server_dump["udpSockets"]
    [tcp] = server_dump["tcpServers"]
    assert udp["ip"] == "127.0.0.1" and (udp["port"] == udp_port if udp_port else udp["port"] > 0)
    assert tcp["ip"] == "127.0.0.1" and (tcp["port"] == tcp_port if tcp_port else tcp["port"] > 0)
    assert server_dump["id"] == server.id
    assert server_dump["webRtcTransportIds"] == [] and server_dump["localIceUsernameFragments"] == []
    assert worker.webrtc_servers == {server}
    worker.close()
    assert server.closed
    assert worker.webrtc_servers == set()


async def test_create_webrtc_server_succeeds(worker: Worker) -> None:
    udp_port, tcp_port = _udp_port(), _tcp_port()
    await _check_created(
        worker,
        [
            {"protocol": "udp", "ip": "127.0.0.1", "port": udp_port},
            {"protocol": "tcp", "ip": "127.0.0.1", "announcedAddress": "foo.bar.org", "port": tcp_port},
        ],
        (udp_port, tcp_port),
    )


async def test_create_webrtc_server_with_port_range(worker: Worker) -> None:
    udp_port, tcp_port = _udp_port(), _tcp_port()
    await _check_created(
        worker,
        [
            {"protocol": "udp", "ip": "127.0.0.1", "portRange": {"min": udp_port, "max": udp_port}},
            {
                "protocol": "tcp",
                "ip": "127.0.0.1",
                "announcedAddress": "1.2.3.4",
                "portRange": {"min": tcp_port, "max": tcp_port},
            },
        ],
        (udp_port, tcp_port),
    )


async def test_create_webrtc_server_without_port(worker: Worker) -> None:
    await _check_created(
        worker,
        [
            {"protocol": "udp", "ip": "127.0.0.1"},
            {"protocol": "tcp", "ip": "127.0.0.1", "announcedAddress": "1.2.3.4"},
        ],
        (None, None),
    )


async def test_create_webrtc_server_with_wrong_arguments_raises_type_error(worker: Worker) -> None:
    with pytest.raises(MediasoupTypeError):
        await worker.create_webrtc_server(None)  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await worker.create_webrtc_server("NOT-AN-ARRAY")  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await worker.create_webrtc_server(["NOT-AN-OBJECT"])  # type: ignore[list-item]
    with pytest.raises(MediasoupTypeError):  # empty listenInfos
        await worker.create_webrtc_server([])
    with pytest.raises(MediasoupTypeError):
        await worker.create_webrtc_server([{"protocol": "udp", "ip": "127.0.0.1"}], app_data="NOT-AN-OBJECT")  # type: ignore[arg-type]
    assert worker.webrtc_servers == set()
    assert (await worker.dump())["webRtcServerIds"] == []


async def test_create_webrtc_server_with_unavailable_listen_infos_fails(worker: Worker) -> None:
    require_worker_binary()
    worker2 = await Worker.create(WorkerSettings(log_level="none"))
    try:
        port1, port2 = _udp_port(), _udp_port()
        with pytest.raises(MediasoupError):  # an IP we cannot bind
            await worker.create_webrtc_server(
                [
                    {"protocol": "udp", "ip": "127.0.0.1", "port": port1},
                    {"protocol": "udp", "ip": "1.2.3.4", "port": port2},
                ]
            )
        with pytest.raises(MediasoupError):  # the same UDP port twice
            await worker.create_webrtc_server(
                [
                    {"protocol": "udp", "ip": "127.0.0.1", "port": port1},
                    {"protocol": "udp", "ip": "127.0.0.1", "announcedAddress": "1.2.3.4", "port": port1},
                ]
            )
        await worker.create_webrtc_server([{"protocol": "udp", "ip": "127.0.0.1", "port": port1}])
        with pytest.raises(MediasoupError):  # the same UDP port in a second worker
            await worker2.create_webrtc_server([{"protocol": "udp", "ip": "127.0.0.1", "port": port1}])
        assert len(worker.webrtc_servers) == 1 and worker2.webrtc_servers == set()
    finally:
        worker2.close()
        await worker2.wait_closed()


async def test_create_webrtc_server_raises_invalid_state_if_worker_closed(worker: Worker) -> None:
    worker.close()
    with pytest.raises(InvalidStateError):
        await worker.create_webrtc_server([{"protocol": "udp", "ip": "127.0.0.1", "port": _udp_port()}])


async def test_close(worker: Worker) -> None:
    server = await worker.create_webrtc_server([{"protocol": "udp", "ip": "127.0.0.1", "port": _udp_port()}])
    closed: list = []
    server.observer.once("close", lambda: closed.append(True))
    server.close()
    server.close()  # idempotent
    with pytest.raises(NotFoundError):
        await server.dump()
    assert closed == [True] and server.closed
    assert worker.webrtc_servers == set()
    assert (await worker.dump())["webRtcServerIds"] == []


async def test_emits_workerclose_when_worker_closes(worker: Worker) -> None:
    server = await worker.create_webrtc_server([{"protocol": "tcp", "ip": "127.0.0.1", "port": _tcp_port()}])
    closed: list = []
    server.observer.once("close", lambda: closed.append(True))
    workerclose = _once(server, "workerclose")
    worker.close()
    await asyncio.wait_for(workerclose, 2)
    assert closed == [True] and server.closed
    with pytest.raises(InvalidStateError):
        await server.dump()


async def test_transport_on_server_is_tracked_until_it_closes(worker: Worker) -> None:
    udp_port, tcp_port = _udp_port(), _tcp_port()
    server = await worker.create_webrtc_server(
        [
            {"protocol": "udp", "ip": "127.0.0.1", "port": udp_port},
            {
                "protocol": "tcp",
                "ip": "127.0.0.1",
                "announcedAddress": "media1.foo.org",
                "exposeInternalIp": True,
                "port": tcp_port,
            },
        ]
    )
    handled: list = []
    unhandled: list = []
    server.observer.once("webrtctransporthandled", handled.append)
    server.observer.once("webrtctransportunhandled", unhandled.append)
    router = await worker.create_router()
    new_transports: list = []
    router.observer.once("newtransport", new_transports.append)
    # UDP disabled: only TCP candidates.
    transport = await router.create_webrtc_transport(webrtc_server=server, enable_udp=False, app_data={"foo": "bar"})
    assert (await router.dump())["transportIds"] == [transport.id]
    assert handled == [transport] and new_transports == [transport]
    assert not transport.closed and transport.app_data == {"foo": "bar"}
    candidates = transport.ice_candidates
    assert [(c["address"], c["ip"], c["port"], c["protocol"], c["type"], c["tcpType"]) for c in candidates] == [
        ("media1.foo.org", "media1.foo.org", tcp_port, "tcp", "host", "passive"),
        ("127.0.0.1", "127.0.0.1", tcp_port, "tcp", "host", "passive"),
    ]
    assert candidates[0]["priority"] > candidates[1]["priority"]
    assert transport.ice_state == "new" and transport.ice_selected_tuple is None
    assert server.webrtc_transports == {transport.id: transport}
    assert router.transports == {transport.id: transport}
    dump = await server.dump()
    assert dump["udpSockets"] == [{"ip": "127.0.0.1", "port": udp_port}]
    assert dump["tcpServers"] == [{"ip": "127.0.0.1", "port": tcp_port}]
    assert dump["webRtcTransportIds"] == [transport.id]
    [fragment] = dump["localIceUsernameFragments"]
    assert fragment["webRtcTransportId"] == transport.id
    assert fragment["localIceUsernameFragment"] == transport.ice_parameters["usernameFragment"]

    transport.close()
    assert transport.closed
    assert unhandled == [transport]
    assert server.webrtc_transports == {} and router.transports == {}
    dump = await server.dump()
    assert dump["webRtcTransportIds"] == [] and dump["localIceUsernameFragments"] == []


async def test_closing_the_server_closes_its_transports(worker: Worker) -> None:
    udp_port, tcp_port = _udp_port(), _tcp_port()
    server = await worker.create_webrtc_server(
        [
            {"protocol": "udp", "ip": "127.0.0.1", "port": udp_port},
            {"protocol": "tcp", "ip": "127.0.0.1", "port": tcp_port},
        ]
    )
    handled: list = []
    unhandled: list = []
    server.observer.once("webrtctransporthandled", handled.append)
    server.observer.once("webrtctransportunhandled", unhandled.append)
    router = await worker.create_router()
    transport = await router.create_webrtc_transport(webrtc_server=server, app_data={"foo": "bar"})
    assert handled == [transport]
    assert (await router.dump())["transportIds"] == [transport.id]
    candidates = transport.ice_candidates
    assert [(c["ip"], c["port"], c["protocol"], c["type"], c.get("tcpType")) for c in candidates] == [
        ("127.0.0.1", udp_port, "udp", "host", None),
        ("127.0.0.1", tcp_port, "tcp", "host", "passive"),
    ]
    assert transport.ice_state == "new" and transport.ice_selected_tuple is None
    dump = await server.dump()
    assert dump["webRtcTransportIds"] == [transport.id]
    assert [f["webRtcTransportId"] for f in dump["localIceUsernameFragments"]] == [transport.id]
    # Restarting ICE adds a username fragment for the transport in the server.
    await transport.restart_ice()
    dump = await server.dump()
    assert [f["webRtcTransportId"] for f in dump["localIceUsernameFragments"]] == [transport.id, transport.id]

    closed: list = []
    server.observer.once("close", lambda: closed.append(True))
    listen_server_closed: list = []
    transport.once("listenserverclose", lambda: listen_server_closed.append(True))
    transport_observer_closed: list = []
    transport.observer.once("close", lambda: transport_observer_closed.append(True))
    server.close()
    assert server.closed and closed == [True]
    assert listen_server_closed == [True] and transport_observer_closed == [True]
    assert unhandled == [transport]
    assert transport.closed
    assert transport.ice_state == "closed" and transport.ice_selected_tuple is None
    assert transport.dtls_state == "closed" and transport.sctp_state is None
    assert server.webrtc_transports == {} and router.transports == {}
    dump = await worker.dump()
    assert dump["webRtcServerIds"] == [] and dump["routerIds"] == [router.id]
    assert dump["channelMessageHandlers"]["channelRequestHandlers"] == [router.id]
    router_dump = await router.dump()
    assert router_dump["id"] == router.id and router_dump["transportIds"] == []


async def test_transports_of_a_server_close_with_their_router(worker: Worker) -> None:
    server = await worker.create_webrtc_server([{"protocol": "udp", "ip": "127.0.0.1", "port": _udp_port()}])
    router = await worker.create_router()
    transport = await router.create_webrtc_transport(webrtc_server=server)
    routerclose = _once(transport, "routerclose")
    router.close()
    await asyncio.wait_for(routerclose, 2)
    assert transport.closed
    # The worker dropped the transport from the server as well.
    dump = await server.dump()
    assert dump["webRtcTransportIds"] == [] and dump["localIceUsernameFragments"] == []
    # Closing the server later does not reopen or re-close the transport.
    listen_server_closed: list = []
    transport.once("listenserverclose", lambda: listen_server_closed.append(True))
    server.close()
    assert listen_server_closed == []


async def test_worker_close_closes_servers_and_their_transports(worker: Worker) -> None:
    server = await worker.create_webrtc_server([{"protocol": "udp", "ip": "127.0.0.1", "port": _udp_port()}])
    router = await worker.create_router()
    transport = await router.create_webrtc_transport(webrtc_server=server)
    events: list = []
    transport.once("routerclose", lambda: events.append("transport routerclose"))
    server.once("workerclose", lambda: events.append("server workerclose"))
    worker.close()
    assert events == ["transport routerclose", "server workerclose"]
    assert transport.closed and server.closed and server.webrtc_transports == {}

"""Media dependency faults: a worker's WebRtcServer that cannot be created at first
(its ports are taken) is retried until it is, never cached as a failure for good."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import pytest

from tests.e2e.harness import running_server
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)


def take_ports(count: int) -> tuple[int, list[socket.socket]]:
    """``count`` consecutive loopback ports, bound (UDP and TCP): the first, the sockets."""
    for _ in range(200):
        first = random.randint(20000, 30000)
        held: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    sock = socket.socket(socket.AF_INET, kind)
                    held.append(sock)
                    sock.bind(("127.0.0.1", port))
                    if kind == socket.SOCK_STREAM:
                        sock.listen()
        except OSError:
            for sock in held:
                sock.close()
            continue
        return first, held
    raise RuntimeError("no free port range")


async def test_a_webrtc_server_failure_is_retried_not_cached(tmp_path: Path) -> None:
    first, held = take_ports(2)
    try:
        async with running_server(
            tmp_path, mediasoup_num_workers=1, mediasoup_rtc_min_port=first, mediasoup_rtc_max_port=first + 1
        ) as server:
            # The app started although the worker's WebRtcServer could not be created.
            [worker] = server.pool.workers
            rooms = server.rooms
            assert not rooms.server_ready(worker)
            with pytest.raises(Exception, match="port"):
                await rooms.webrtc_server(worker)
            with pytest.raises(Exception, match="port"):
                await rooms.get_or_create_room("waiting")
            await asyncio.sleep(1.0)  # a retry or two fail meanwhile
            assert not rooms.server_ready(worker)

            for sock in held:
                sock.close()
            held = []
            await eventually(lambda: rooms.server_ready(worker), what="the WebRtcServer retried", interval=0.1)
            webrtc_server = await rooms.webrtc_server(worker)
            assert not webrtc_server.closed
            room = await rooms.get_or_create_room("served")
            assert room.primary.worker is worker
    finally:
        for sock in held:
            sock.close()

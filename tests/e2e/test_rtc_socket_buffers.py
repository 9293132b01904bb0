"""``MEDIASOUP_UDP_RECV_BUFFER_BYTES`` reaches the worker's RTC UDP socket: the kernel
reports its receive buffer (``ss -m``: ``rb``, twice what was asked, capped by
``net.core.rmem_max``). A buffer left at the kernel's default was why peers lost packets
whenever the worker waited for its core (``bench/RESULTS.md``, capacity)."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

from tests.e2e.harness import running_server

ASKED = 1024 * 1024


async def _receive_buffer(port: int) -> int:
    ss = shutil.which("ss")
    assert ss is not None, "ss (iproute2) is needed to read a socket's buffer"
    process = await asyncio.create_subprocess_exec(
        ss, "-u", "-a", "-m", "-n", "-H", f"sport = :{port}", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 20)
    match = re.search(r"\brb(\d+)", stdout.decode())
    assert match is not None, stdout.decode()
    return int(match.group(1))


async def test_worker_udp_socket_gets_the_receive_buffer(tmp_path: Path) -> None:
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    async with running_server(tmp_path, mediasoup_num_workers=1, mediasoup_udp_recv_buffer_bytes=ASKED) as server:
        (worker,) = server.pool.workers
        webrtc_server = await server.rooms.webrtc_server(worker)
        (udp,) = (await webrtc_server.dump())["udpSockets"]
        # Linux doubles SO_RCVBUF (bookkeeping overhead) after capping it at rmem_max.
        assert await _receive_buffer(udp["port"]) == 2 * min(ASKED, rmem_max)

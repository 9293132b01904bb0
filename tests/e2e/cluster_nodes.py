"""Parley nodes of one cluster on loopback, for the cluster tests (``control.cluster``).

``async with cluster_node(tmp_path, redis_url, "a", rtc_base=41000) as node`` runs a
real node in this process: its own port (chosen before start, since the node
advertises ``http://127.0.0.1:<port>`` to the others), its own RTC port range and
data directory, ``NODE_ID`` = its name. :func:`node_process` runs one as a
subprocess (``python -m control``) for the tests that SIGKILL a node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from control.app import create_app
from control.cluster import CLUSTER, ClusterNode, site
from tests.e2e.harness import Server, server_settings, stop_runner
from tests.plugin_workers import require_worker_binary
from tests.services import REPO, free_ports, port_open


class Node(Server):
    @property
    def cluster(self) -> ClusterNode:
        return self.app[CLUSTER]


def node_settings(
    tmp_path: Path, redis_url: str, name: str, port: int, rtc_base: int, **overrides: Any
) -> dict[str, Any]:
    return {
        "port": port,
        "data_dir": tmp_path / name / "data",
        "redis_url": redis_url,
        "node_id": name,
        "node_advertise_url": f"http://127.0.0.1:{port}",
        "mediasoup_rtc_min_port": rtc_base,
        "mediasoup_rtc_max_port": rtc_base + 999,
        # A "host" of its own: the cluster tests exercise the relay, deterministically
        # (same-host socket handover only once a node has advertised its socket). The
        # handover tests pass ``cluster_host_id=None`` (this kernel's boot id).
        "cluster_host_id": f"host-{name}",
        **overrides,
    }


@contextlib.asynccontextmanager
async def cluster_node(
    tmp_path: Path, redis_url: str, name: str, *, rtc_base: int, **overrides: Any
) -> AsyncIterator[Node]:
    """``port=`` in ``overrides``: that port (a node restarting where it was), else a free
    one; ``tls=`` an ``ssl.SSLContext`` its clients connect with (wss)."""
    require_worker_binary()
    port = int(overrides.pop("port", 0)) or free_ports(1)[0]
    tls = overrides.pop("tls", None)
    values = node_settings(tmp_path, redis_url, name, port, rtc_base, **overrides)
    settings = await asyncio.to_thread(server_settings, tmp_path, **values)
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    try:
        await site(runner, "127.0.0.1", port, ssl_context=tls).start()  # as control.cli does
        yield Node(app, port)
    finally:
        await stop_runner(runner, f"node {name}")


@contextlib.asynccontextmanager
async def node_process(
    tmp_path: Path, redis_url: str, name: str, *, rtc_base: int, env_overrides: dict[str, str] | None = None
) -> AsyncIterator[tuple[subprocess.Popen[bytes], int]]:
    """A node as ``python -m control`` (dev mode, loopback); yields (process, port) once it
    listens, waiting with the event loop free (it serves the test's other node).
    ``env_overrides``: more of its environment (``CLUSTER_DRAIN_TIMEOUT_SECONDS``...)."""
    require_worker_binary()
    port = free_ports(1)[0]
    values = node_settings(tmp_path, redis_url, name, port, rtc_base)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "RABBITMQ_", "MINIO_", "API_"))}
    env.update({key.upper(): "" if value is None else str(value) for key, value in values.items()})
    env.update({"HOST": "127.0.0.1", "MEDIASOUP_NUM_WORKERS": "1", "MEDIASOUP_LISTEN_IP": "127.0.0.1"})
    env.update(env_overrides or {})
    (tmp_path / name).mkdir(parents=True, exist_ok=True)
    log = open(tmp_path / name / "node.log", "wb")  # noqa: SIM115 - closed below
    env["PYTHONPATH"] = str(REPO)  # this tree's code; cwd elsewhere so no .env applies
    process = subprocess.Popen(
        [sys.executable, "-m", "control", "run"], cwd=tmp_path / name, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"node {name} did not start:\n{(tmp_path / name / 'node.log').read_text()[-3000:]}"
                )
            await asyncio.sleep(0.1)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        await asyncio.to_thread(process.wait, 10)
        log.close()

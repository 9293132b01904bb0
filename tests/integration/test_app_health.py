"""The real server: `parley run` as a subprocess with real mediasoup workers.

It must answer /api/health with live worker pids, shut down on SIGTERM/SIGINT with
exit status 0, and leave no worker process behind. Needs the built mediasoup-worker
(`make setup`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from control.app import create_app
from control.config import Settings
from control.keys import SETTINGS, WORKER_POOL

REPO = Path(__file__).resolve().parents[2]
PARLEY = REPO / ".venv" / "bin" / "parley"
SETTINGS_VARS = {name.upper() for name in Settings.model_fields}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    data_dir: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get_health(self, timeout: float = 5.0) -> tuple[int, dict]:
        url = f"http://127.0.0.1:{self.port}/api/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def wait_healthy(self) -> dict:
        deadline = time.monotonic() + START_TIMEOUT
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"parley run exited with {self.proc.returncode} before answering:\n{self.log}")
            try:
                status, body = self.get_health(timeout=2)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last = exc
            else:
                if status == 200:
                    return body
                last = (status, body)
            time.sleep(0.2)
        pytest.fail(f"/api/health not 200 within {START_TIMEOUT}s (last: {last!r}):\n{self.log}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    assert PARLEY.exists(), f"{PARLEY} missing: run `make setup`"
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    env.update(
        PORT=str(port),
        HOST="127.0.0.1",
        DATA_DIR=str(data_dir),
        MEDIASOUP_NUM_WORKERS="2",
        LOG_LEVEL="INFO",
        LOG_FORMAT="text",
    )
    log_path = tmp_path / "parley.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(PARLEY), "run"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    srv = Server(proc, port, log_path, data_dir)
    try:
        yield srv
    finally:
        if proc.poll() is None:  # only the process this test started
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_health_then_graceful_stop(server: Server, stop_signal: signal.Signals) -> None:
    body = server.wait_healthy()
    assert body["status"] == "ok"
    workers = body["workers"]
    assert len(workers) == 2, body
    pids = [w["pid"] for w in workers]
    for w in workers:
        assert w["alive"] is True, body
        assert isinstance(w["pid"], int) and process_alive(w["pid"]), body
        assert parent_pid(w["pid"]) == server.proc.pid  # the server's own worker processes
        assert w["resource_usage"]["ru_maxrss"] > 0, body

    log = server.log
    assert f"http://127.0.0.1:{server.port}" in log
    assert str(server.data_dir) in log  # where the embedded defaults keep their data
    assert "Traceback" not in log

    server.proc.send_signal(stop_signal)
    try:
        code = server.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"parley did not exit within {STOP_TIMEOUT}s of {stop_signal.name}:\n{server.log}")
    assert code == 0, server.log

    deadline = time.monotonic() + 5
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if process_alive(pid)], "worker processes outlived the server"
    assert "Traceback" not in server.log, server.log


async def test_health_is_503_without_a_live_worker(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, mediasoup_num_workers=1, data_dir=tmp_path / "data")
    app = create_app(settings)
    assert app[SETTINGS] is settings
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/api/health"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "ok"
            pool = app[WORKER_POOL]
            (worker,) = pool.workers
            worker.close()
            await worker.wait_closed()
            async with session.get(url) as resp:
                body = await resp.json()
                assert resp.status == 503, body
                assert body["status"] == "unavailable"
                assert all(not w["alive"] for w in body["workers"])
    finally:
        await runner.cleanup()
    assert not process_alive(worker.pid)

#!/usr/bin/env python3
"""Join storm: N peers join one room at the same moment; p50/p99 join latency.

Each peer does what mediasoup-demo's client does, over the protoo WebSocket:
connect, ``getRouterRtpCapabilities``, ``createWebRtcTransport`` (send and
receive), ``join``, then ``produce`` one audio producer (fixed Opus parameters,
its own SSRC), and accepts every ``newConsumer`` the server sends. Measured per
peer, from the moment its WebSocket connect starts:

- **join**: until the ``join`` answer arrives;
- **produced**: until its ``produce`` answer arrives;
- **mesh**: until it has accepted a consumer of every other peer's producer
  (the room is a full mesh: N x (N-1) consumers in total).

No media flows (no ICE/DTLS): this measures signaling and the workers' control
path under a burst, not RTP. By default the server is this project's app,
started in-process on loopback with real workers (``MEDIASOUP_WORKER_BIN`` or
the built one); ``--url ws://host:port`` measures a running server instead.
There is no peer implementation to compare with in this script (mediasoup-demo's
Node server is not part of the repo): the figures are absolute, labeled with
the machine.

    .venv/bin/python bench/join_storm.py                     # 50 peers, 2 workers
    .venv/bin/python bench/join_storm.py --peers 100 --workers 4 --rounds 3
    .venv/bin/python bench/join_storm.py --url ws://127.0.0.1:3000 --peers 20
    .venv/bin/python bench/join_storm.py --compare-auth --peers 50 --rounds 4
    .venv/bin/python bench/join_storm.py --compare-cluster --pairs 200 --peers 20 --rounds 2
    .venv/bin/python bench/join_storm.py --compare-cluster --pairs 200 --peers 20 --rounds 2 --no-handover
    .venv/bin/python bench/join_storm.py --cluster-floor --pairs 200

``--compare-auth`` (access control, issue 14): two in-process servers at once, one
with API keys where every peer joins with its own token (``?token=``, minted before
the storm starts, so only verification and the grant checks are timed), one in dev
mode (no keys: open join); the rounds alternate between them on the same machine
(a fresh pair of servers per round, start order and storm order alternated, see
:func:`compare_auth`) and the script prints the join p50 of each and the ratio
tokens / open (the issue asks for at most 1.05); then single joins alternating one by
one between a keyed and a dev-mode server (4 x ``--peers`` each, the figure least moved
by other load on the machine), a control where half the peers of the same storms carry
a token, the process CPU time per storm, and the verification cost measured apart.

``--compare-cluster`` (scale-out, issue 19): its own ``redis-server`` on a free loopback
port and two nodes ``a`` and ``b`` as ``python -m control run`` subprocesses (dev mode,
one worker each); a room placed on ``b`` with a resident peer; then ``--pairs`` single
joins through ``b`` itself (direct) and through ``a`` (relayed to ``b``), alternating one
by one (ABBA), each timed step by step (the upgrade, then each protoo request up to the
``join`` answer); the p50 of each step, the ratio relayed / direct (the issue asks for at
most 1.1); the Redis commands per join of each kind (``INFO commandstats`` deltas over
joins run one kind at a time, minus the heartbeats' rate measured while idle); and
``--rounds`` storms of ``--peers`` peers into a new room on ``b``, half of them through
``a``. Both nodes run on this host: ``a`` passes the clients' sockets to ``b`` (socket
handover, ``control.cluster.handover``; the report counts the connections ``a`` handed
over and relayed); ``--no-handover`` (``CLUSTER_SOCKET_HANDOVER=false``) measures the
relay, what holds between nodes of different hosts.

``--cluster-floor`` (issue 19, where the relayed join's extra time goes): the same two
nodes and room, and single joins rotating one by one between ``b`` itself, a minimal
C relay in front of ``b`` (``bench/floor_relay.c``, built with ``cc``: one epoll
process that copies bytes, no HTTP, no access check, no routing: the least any
process in the path costs on this machine) and ``a`` relaying to ``b``: the p50 of
each step and both ratios to the direct join.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.protoo_client import ProtooClient

OPUS = {
    "mid": "0",
    "codecs": [
        {
            "mimeType": "audio/opus",
            "payloadType": 111,
            "clockRate": 48000,
            "channels": 2,
            "parameters": {"useinbandfec": 1},
            "rtcpFeedback": [],
        }
    ],
    "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 1}],
    "rtcp": {"cname": "bench"},
}


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


async def one_peer(
    url: str, index: int, peers: int, start: asyncio.Event, results: dict[str, list[float]], clients: list[ProtooClient]
) -> None:
    await start.wait()
    t0 = time.perf_counter()
    client = await ProtooClient.connect(url)
    clients.append(client)
    consumers = 0
    mesh_done = asyncio.Event()

    async def on_request(method: str, data: dict[str, Any]) -> dict[str, Any]:
        nonlocal consumers
        if method == "newConsumer":
            consumers += 1
            if consumers >= peers - 1:
                mesh_done.set()
        return {}

    client.on_request = on_request
    if peers == 1:
        mesh_done.set()
    caps = await client.request("getRouterRtpCapabilities", timeout=120)
    send = await client.request("createWebRtcTransport", {"producing": True, "consuming": False}, timeout=120)
    await client.request("createWebRtcTransport", {"producing": False, "consuming": True}, timeout=120)
    await client.request(
        "join", {"displayName": f"peer {index}", "device": {"name": "bench"}, "rtpCapabilities": caps}, timeout=120
    )
    results["join"].append(time.perf_counter() - t0)
    params = {**OPUS, "encodings": [{"ssrc": 100_000 + index}]}
    await client.request("produce", {"transportId": send["id"], "kind": "audio", "rtpParameters": params}, timeout=120)
    results["produced"].append(time.perf_counter() - t0)
    await asyncio.wait_for(mesh_done.wait(), 300)
    results["mesh"].append(time.perf_counter() - t0)


async def storm(
    url_for: Any, peers: int, groups: dict[int, dict[str, list[float]]] | None = None, room: str | None = None
) -> dict[str, list[float]]:
    """One storm (into ``room``, default a new one); ``groups`` (peer index -> its own
    results) splits the figures of a mixed storm."""
    room = room or f"storm-{uuid.uuid4().hex[:8]}"
    results: dict[str, list[float]] = {"join": [], "produced": [], "mesh": []}
    start = asyncio.Event()
    clients: list[ProtooClient] = []
    tasks = [
        asyncio.ensure_future(
            one_peer(url_for(room, f"p{i}"), i, peers, start, (groups or {}).get(i, results), clients)
        )
        for i in range(peers)
    ]
    await asyncio.sleep(0.05)
    t0, cpu0 = time.perf_counter(), time.process_time()
    start.set()
    try:
        await asyncio.gather(*tasks)
    finally:
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        for client in clients:
            try:
                await client.close()
            except Exception:
                pass
    results["wall"] = [wall]
    results["cpu"] = [cpu]  # this process (clients + in-process server), until the last peer meshed
    return results


def report(all_results: list[dict[str, list[float]]], peers: int, workers: int | None, where: str) -> str:
    lines = [
        f"join storm: {peers} peers joining one room at once, {len(all_results)} round(s), {where}",
        f"machine: {machine()}" + (f", {workers} mediasoup worker(s)" if workers else ""),
        "",
        "| phase (from WebSocket connect) | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for phase, label in (
        ("join", "join answered"),
        ("produced", "produce answered"),
        ("mesh", f"all {peers - 1} consumers accepted"),
    ):
        values = [v * 1000 for r in all_results for v in r[phase]]
        lines.append(
            f"| {label} | {percentile(values, 50):.0f} | {percentile(values, 90):.0f} | "
            f"{percentile(values, 99):.0f} | {max(values):.0f} |"
        )
    walls = [r["wall"][0] for r in all_results]
    lines.append("")
    lines.append(
        f"whole storm (first connect -> last peer meshed): median {statistics.median(walls):.2f} s; "
        f"{peers * (peers - 1)} consumers"
    )
    return "\n".join(lines)


BENCH_KEY, BENCH_SECRET = "APIbench", "bench-secret-" + "b" * 40


async def start_server(tmp: Path, workers: int, **overrides: Any) -> tuple[Any, int]:
    """The app on a free loopback port, embedded backends under ``tmp``: (runner, port)."""
    from aiohttp import web

    from control.app import create_app
    from control.config import Settings

    settings = Settings(
        _env_file=None,
        host="127.0.0.1",
        data_dir=tmp,
        mongodb_uri=None,
        rabbitmq_url=None,
        minio_endpoint=None,
        mediasoup_num_workers=workers,
        mediasoup_listen_ip="127.0.0.1",
        peer_reconnect_grace_seconds=0,
        # Every peer of the storm comes from 127.0.0.1: the per-client limits would
        # measure themselves, not joins.
        max_connections_per_ip=1_000_000,
        connections_per_second_per_ip=100_000,
        connection_burst_per_ip=1_000_000,
        **overrides,
    )
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def verify_cost(keys: Any, tokens: list[str]) -> float:
    """Seconds per :func:`control.auth.verify` of a participant's token (what a join adds)."""
    from control.auth import verify

    t0 = time.perf_counter()
    for token in tokens:
        verify(token, keys)
    return (time.perf_counter() - t0) / len(tokens)


def auth_report(
    by_mode: dict[str, list[dict[str, list[float]]]],
    in_one: dict[str, list[dict[str, list[float]]]],
    sequential: dict[str, list[float]],
    peers: int,
    workers: int,
    verify_seconds: float,
) -> str:
    """Join p50 (and the other phases) of each mode, and the ratio tokens / open."""
    lines = [
        f"join storm, tokens vs open join: {peers} peers per room, {len(by_mode['tokens'])} round(s) each, "
        "alternating, a fresh pair of in-process servers on loopback per round (start order swapped each round)",
        f"machine: {machine()}, {workers} mediasoup worker(s) per server",
        "",
        "| mode | join p50 ms | join p90 ms | produce p50 ms | mesh p50 ms | per-round join p50 ms |",
        "|---|---:|---:|---:|---:|---|",
    ]
    p50: dict[str, float] = {}
    medians: dict[str, float] = {}
    for mode, label in (("open", "open join (dev mode, no keys)"), ("tokens", "API keys, a token per peer")):
        rounds = by_mode[mode]
        joins = [v * 1000 for r in rounds for v in r["join"]]
        p50[mode] = percentile(joins, 50)
        phase = {k: percentile([v * 1000 for r in rounds for v in r[k]], 50) for k in ("produced", "mesh")}
        per_round = ", ".join(f"{percentile([v * 1000 for v in r['join']], 50):.0f}" for r in rounds)
        medians[mode] = statistics.median(percentile([v * 1000 for v in r["join"]], 50) for r in rounds)
        lines.append(
            f"| {label} | {p50[mode]:.1f} | {percentile(joins, 90):.1f} | {phase['produced']:.1f} | "
            f"{phase['mesh']:.1f} | {per_round} |"
        )
    ratio = p50["tokens"] / p50["open"]
    cpu = {m: statistics.median(r["cpu"][0] for r in by_mode[m]) for m in ("open", "tokens")}
    mixed = {m: percentile([v * 1000 for r in in_one[m] for v in r["join"]], 50) for m in ("open", "tokens")}
    lines += [
        "",
        f"join p50 ratio tokens/open: {ratio:.3f} ({'within' if ratio <= 1.05 else 'ABOVE'} the 1.05 bound); "
        f"median of the rounds' p50s: {medians['tokens']:.1f} / {medians['open']:.1f} ms, "
        f"ratio {medians['tokens'] / medians['open']:.3f}",
        f"control, the same storms (one server with keys and AUTH_OPEN_JOIN=true, half the peers with a token, "
        f"{len(in_one['open'])} round(s)): join p50 {mixed['tokens']:.1f} ms with a token, {mixed['open']:.1f} ms "
        f"without, ratio {mixed['tokens'] / mixed['open']:.3f}",
        f"single joins alternating one by one between the two servers ({len(sequential['open'])} each, "
        f"connect to join answer): median {statistics.median(sequential['tokens']) * 1000:.2f} ms with a token, "
        f"{statistics.median(sequential['open']) * 1000:.2f} ms open, ratio "
        f"{statistics.median(sequential['tokens']) / statistics.median(sequential['open']):.3f}",
        f"CPU time of this process per storm (clients + server, connect to full mesh; other processes' load "
        f"does not count), median: {cpu['tokens'] * 1000:.0f} ms with tokens, {cpu['open'] * 1000:.0f} ms open, "
        f"ratio {cpu['tokens'] / cpu['open']:.3f}",
        f"token verification (PyJWT HS256 + claims, measured apart): {verify_seconds * 1e6:.0f} us per join, "
        f"{verify_seconds * 1000 / p50['open'] * 100:.3f}% of the open join p50",
    ]
    return "\n".join(lines)


async def compare_auth(peers: int, rounds: int, workers: int) -> str:
    """Alternate storms against a keyed server (a token per peer) and a dev-mode one (none).

    Each round starts a fresh pair of servers. In one process, the first-started of two
    identical dev servers measured about 40% slower than the other (an A/A run: 0.62 and 0.54
    ratios), more than any auth effect; so the start order alternates every round and the
    storm order (ABBA) every two, and neither mode keeps the favoured server.
    """
    from pydantic import SecretStr

    from control.auth import grants_from_names, mint
    from control.auth.keys import KeyRing

    keys = KeyRing.build(BENCH_KEY, SecretStr(BENCH_SECRET))
    grants = ("join", "publish", "subscribe", "data")
    keyed_settings: dict[str, Any] = {"api_key": BENCH_KEY, "api_secret": BENCH_SECRET}

    def url(port: int, room: str, peer: str, token: bool) -> str:
        base = f"ws://127.0.0.1:{port}/?roomId={room}&peerId={peer}"
        if not token:
            return base
        return base + "&token=" + mint(keys, identity=peer, grants=grants_from_names(grants, room=room))

    by_mode: dict[str, list[dict[str, list[float]]]] = {"open": [], "tokens": []}
    in_one: dict[str, list[dict[str, list[float]]]] = {"open": [], "tokens": []}
    # The embedded stores on tmpfs when there is one: every join writes its meeting and a
    # chat line with fsync, and a disk shared with other work made whole rounds stall.
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        for r in range(rounds):
            servers: dict[str, tuple[Any, int]] = {}
            for mode in ("tokens", "open") if r % 2 else ("open", "tokens"):
                extra = keyed_settings if mode == "tokens" else {}
                servers[mode] = await start_server(Path(tmp, f"{mode}-{r}"), workers, **extra)
            try:
                for mode, (runner, port) in servers.items():  # warm-up of the fresh servers: not counted
                    size = peers if r == 0 else min(peers, 10)
                    await storm(lambda room, peer, p=port, m=mode: url(p, room, peer, m == "tokens"), size)
                    await settle(runner)
                for mode in ("tokens", "open") if (r // 2) % 2 else ("open", "tokens"):
                    runner, port = servers[mode]
                    result = await storm(lambda room, peer, p=port, m=mode: url(p, room, peer, m == "tokens"), peers)
                    by_mode[mode].append(result)
                    await settle(runner)
            finally:
                for runner, _ in servers.values():
                    await runner.cleanup()

        # Single joins, alternating one by one between a keyed and a dev-mode server.
        servers = {
            "open": await start_server(Path(tmp, "seq-open"), workers),
            "tokens": await start_server(Path(tmp, "seq-tokens"), workers, **keyed_settings),
        }
        try:
            sequential = await interleaved_joins(
                lambda mode, room, peer: url(servers[mode][1], room, peer, mode == "tokens"), max(peers, 1) * 4
            )
        finally:
            for runner, _ in servers.values():
                await runner.cleanup()

        # Control: the same storms, half the peers with a token, half without, one server
        # with keys and AUTH_OPEN_JOIN=true: both groups under exactly the same load.
        mixed, port = await start_server(Path(tmp, "mixed"), workers, auth_open_join=True, **keyed_settings)
        try:
            for r in range(rounds):
                figures: dict[str, dict[str, list[float]]] = {
                    mode: {"join": [], "produced": [], "mesh": []} for mode in ("open", "tokens")
                }
                with_token = {i for i in range(peers) if (i + r) % 2 == 0}
                groups = {i: figures["tokens" if i in with_token else "open"] for i in range(peers)}
                await storm(lambda room, peer, w=with_token: url(port, room, peer, int(peer[1:]) in w), peers, groups)
                for mode in figures:
                    in_one[mode].append(figures[mode])
                await settle(mixed)
        finally:
            await mixed.cleanup()
    sample = [mint(keys, identity=f"p{i}", grants=grants_from_names(grants, room="r")) for i in range(2000)]
    return auth_report(by_mode, in_one, sequential, peers, workers, verify_cost(keys, sample))


async def one_join(url: str) -> float:
    """Seconds from WebSocket connect to the ``join`` answer of one peer alone (then it leaves)."""
    t0 = time.perf_counter()
    client = await ProtooClient.connect(url)
    try:
        caps = await client.request("getRouterRtpCapabilities", timeout=60)
        await client.request("createWebRtcTransport", {"producing": True, "consuming": False}, timeout=60)
        await client.request("createWebRtcTransport", {"producing": False, "consuming": True}, timeout=60)
        join = {"displayName": "one", "device": {"name": "bench"}, "rtpCapabilities": caps}
        await client.request("join", join, timeout=60)
        return time.perf_counter() - t0
    finally:
        await client.close()


async def interleaved_joins(url: Any, pairs: int) -> dict[str, list[float]]:
    """``pairs`` single joins on each server, one after the other, alternating every join
    (ABBA), into a room a resident peer keeps open: load drift hits both modes alike."""
    room = f"seq-{uuid.uuid4().hex[:8]}"
    residents = [await ProtooClient.connect(url(mode, room, "resident")) for mode in ("open", "tokens")]
    times: dict[str, list[float]] = {"open": [], "tokens": []}
    try:
        for i in range(pairs):
            for mode in ("tokens", "open") if i % 2 else ("open", "tokens"):
                times[mode].append(await one_join(url(mode, room, f"s{i}")))
    finally:
        for resident in residents:
            await resident.close()
    return times


async def settle(runner: Any) -> None:
    """Until the server has closed the last storm's room (its consumers gone), then a breath."""
    from control.keys import ROOMS

    rooms = runner.app[ROOMS]
    for _ in range(200):
        if not rooms.rooms:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)


# --------------------------------------------------------------------------- cluster (issue 19)

PHASES = ("connect", "getRouterRtpCapabilities", "send transport", "recv transport", "join")


async def phased_join(url: str) -> dict[str, float]:
    """One peer alone: seconds of each step from WebSocket connect to the ``join`` answer
    (``connect`` is the upgrade, the rest one protoo request each), and ``total``."""
    steps: dict[str, float] = {}
    t0 = last = time.perf_counter()

    def step(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        steps[name], last = now - last, now

    client = await ProtooClient.connect(url)
    step("connect")
    try:
        caps = await client.request("getRouterRtpCapabilities", timeout=60)
        step("getRouterRtpCapabilities")
        await client.request("createWebRtcTransport", {"producing": True, "consuming": False}, timeout=60)
        step("send transport")
        await client.request("createWebRtcTransport", {"producing": False, "consuming": True}, timeout=60)
        step("recv transport")
        join = {"displayName": "one", "device": {"name": "bench"}, "rtpCapabilities": caps}
        await client.request("join", join, timeout=60)
        step("join")
        steps["total"] = time.perf_counter() - t0
        return steps
    finally:
        await client.close()


class RedisCounter:
    """Redis commands run by the nodes, from ``INFO commandstats`` deltas (this script's
    own INFO calls left out); :meth:`background` measures what the nodes' heartbeats
    run per second while nothing joins, subtracted from the joins' figures."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.per_second: dict[str, float] = {}

    async def snapshot(self) -> dict[str, int]:
        stats = await self.redis.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if name not in ("cmdstat_info",)
        }

    async def background(self, seconds: float) -> None:
        before, t0 = await self.snapshot(), time.perf_counter()
        await asyncio.sleep(seconds)
        after, elapsed = await self.snapshot(), time.perf_counter() - t0
        self.per_second = {k: (after.get(k, 0) - before.get(k, 0)) / elapsed for k in after}

    async def per_join(self, joins: Any, count: int) -> dict[str, float]:
        """Commands per join of ``count`` joins run by ``joins()``, background removed."""
        before, t0 = await self.snapshot(), time.perf_counter()
        await joins()
        after, elapsed = await self.snapshot(), time.perf_counter() - t0
        delta = {k: after.get(k, 0) - before.get(k, 0) - self.per_second.get(k, 0.0) * elapsed for k in after}
        return {k: v / count for k, v in delta.items() if abs(v / count) >= 0.05}


@contextlib.contextmanager
def node_processes(
    tmp: Path, redis_url: str, names: tuple[str, ...], log_level: str, extra_env: dict[str, str] | None = None
) -> Any:
    """Parley nodes as ``python -m control run`` subprocesses (dev mode, loopback, one
    worker each, their own ports, RTC ranges and data dirs): {name: port}. ``extra_env``:
    more of their environment (``CLUSTER_SOCKET_HANDOVER``)."""
    from tests.services import free_ports, port_open

    ports = dict(zip(names, free_ports(len(names)), strict=True))
    processes: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "RABBITMQ_", "MINIO_", "API_"))}
    env["PYTHONPATH"] = str(ROOT)
    try:
        for index, name in enumerate(names):
            (tmp / name).mkdir(parents=True, exist_ok=True)
            node_env = env | {
                "HOST": "127.0.0.1",
                "PORT": str(ports[name]),
                "DATA_DIR": str(tmp / name / "data"),
                "REDIS_URL": redis_url,
                "NODE_ID": name,
                "NODE_ADVERTISE_URL": f"http://127.0.0.1:{ports[name]}",
                "MEDIASOUP_NUM_WORKERS": "1",
                "MEDIASOUP_LISTEN_IP": "127.0.0.1",
                "MEDIASOUP_RTC_MIN_PORT": str(52000 + index * 1000),
                "MEDIASOUP_RTC_MAX_PORT": str(52999 + index * 1000),
                "PEER_RECONNECT_GRACE_SECONDS": "0",
                # Every client connects from 127.0.0.1: the per-address limit of new
                # WebSockets (10/s, 100 at once) would refuse the bench's joins (429).
                "CONNECTIONS_PER_SECOND_PER_IP": "100000",
                "CONNECTION_BURST_PER_IP": "1000000",
                "LOG_LEVEL": log_level,
                **(extra_env or {}),
            }
            log = open(tmp / name / "node.log", "wb")  # noqa: SIM115 - the process owns it
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "control", "run"], cwd=tmp / name, env=node_env, stdout=log, stderr=log
                )
            )
        deadline = time.monotonic() + 90
        for name, process in zip(names, processes, strict=True):
            while not port_open("127.0.0.1", ports[name]):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"node {name} did not start: {(tmp / name / 'node.log').read_text()[-2000:]}")
                time.sleep(0.1)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def redis_server(tmp: Path) -> Any:
    """Debian's ``redis-server`` on a free loopback port (no persistence): its URL."""
    from tests.services import free_ports, redis_ping

    port = free_ports(1)[0]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not redis_ping("127.0.0.1", port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def cluster_report(
    times: dict[str, list[dict[str, float]]],
    storms: dict[str, list[float]],
    ops: dict[str, dict[str, float]],
    peers: int,
    rounds: int,
    handover: bool = True,
    through_a: tuple[int, int] = (0, 0),
) -> str:
    def p50(mode: str, phase: str) -> float:
        return percentile([t[phase] * 1000 for t in times[mode]], 50)

    lines = [
        f"join through the room's node (direct) vs through another node (relayed): two `python -m control run` "
        f"nodes behind one redis-server on loopback, 1 worker each; single joins alternating one by one "
        f"(ABBA, {len(times['direct'])} each) into a room hosted by node b",
        f"socket handover (CLUSTER_SOCKET_HANDOVER): {'on' if handover else 'off'}; node a's log: "
        f"{through_a[0]} connection(s) handed over to b, {through_a[1]} relayed to b (warm-ups and storms included)",
        f"machine: {machine()}",
        "",
        "| step (p50 ms) | direct (via b) | relayed (via a) | relayed - direct |",
        "|---|---:|---:|---:|",
    ]
    for phase in (*PHASES, "total"):
        d, r = p50("direct", phase), p50("relayed", phase)
        lines.append(f"| {phase} | {d:.2f} | {r:.2f} | {r - d:+.2f} |")
    ratio = p50("relayed", "total") / p50("direct", "total")
    lines += [
        "",
        f"join p50 ratio relayed/direct: {ratio:.3f} ({'within' if ratio <= 1.1 else 'ABOVE'} the 1.1 target)",
    ]
    if storms["direct"]:
        sd, sr = percentile(storms["direct"], 50) * 1000, percentile(storms["relayed"], 50) * 1000
        lines.append(
            f"storms ({rounds} x {peers} peers at once in one new room on b, half through b, half through a): "
            f"join p50 {sd:.1f} ms direct, {sr:.1f} ms relayed, ratio {sr / sd:.3f}"
        )
    for mode in ("direct", "relayed"):
        figures = ", ".join(f"{name} {count:.2f}" for name, count in sorted(ops[mode].items())) or "none"
        lines.append(
            f"Redis commands per join ({mode}, heartbeats subtracted): {sum(ops[mode].values()):.2f} ({figures})"
        )
    return "\n".join(lines)


async def compare_cluster(pairs: int, peers: int, rounds: int, log_level: str, handover: bool = True) -> str:
    """Joins through the room's node vs through another node of a two-node cluster (on
    this host: with ``handover``, a passes the clients' sockets to b, control.cluster.handover)."""
    from redis.asyncio import Redis

    from control.cluster import Registry

    with (
        tempfile.TemporaryDirectory() as tmp,
        redis_server(Path(tmp)) as redis_url,
        node_processes(
            Path(tmp), redis_url, ("a", "b"), log_level, {"CLUSTER_SOCKET_HANDOVER": str(handover).lower()}
        ) as ports,
    ):
        redis = Redis.from_url(redis_url, decode_responses=True)
        try:
            registry = Registry(redis)
            for _ in range(200):
                nodes = {n.node_id: n for n in await registry.nodes()}
                if set(nodes) == {"a", "b"} and (not handover or nodes["b"].handover):
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the nodes did not register")
            await asyncio.sleep(1.5)  # a reads the registry (b's socket) at its next heartbeat

            def url(mode: str, room: str, peer: str) -> str:
                port = ports["b" if mode == "direct" else "a"]
                return f"ws://127.0.0.1:{port}/?roomId={room}&peerId={peer}"

            async def hosted_room() -> str:
                room = f"relay-{uuid.uuid4().hex[:8]}"
                assert await registry.place(room, "b") == "b"
                return room

            room = await hosted_room()
            resident = await ProtooClient.connect(url("direct", room, "resident"))
            times: dict[str, list[dict[str, float]]] = {"direct": [], "relayed": []}
            try:
                await resident.request("join", {"displayName": "r", "device": {"name": "bench"},
                                                "rtpCapabilities": {"codecs": [], "headerExtensions": []}})  # fmt: skip
                for i in range(10):  # warm-up, not counted
                    await phased_join(url("direct" if i % 2 else "relayed", room, f"w{i}"))
                for i in range(pairs):
                    for mode in ("relayed", "direct") if i % 2 else ("direct", "relayed"):
                        times[mode].append(await phased_join(url(mode, room, f"s{i}")))
                counter = RedisCounter(redis)
                await counter.background(3.0)
                count = max(pairs // 2, 20)
                ops: dict[str, dict[str, float]] = {}
                for mode in ("direct", "relayed"):

                    async def joins(mode: str = mode) -> None:
                        for i in range(count):
                            await phased_join(url(mode, room, f"o{mode[0]}{i}"))

                    ops[mode] = await counter.per_join(joins, count)
            finally:
                await resident.close()
            storms: dict[str, list[float]] = {"direct": [], "relayed": []}
            for r in range(rounds):
                groups: dict[int, dict[str, list[float]]] = {
                    i: {"join": [], "produced": [], "mesh": []} for i in range(peers)
                }
                room = await hosted_room()
                through = {i: "direct" if (i + r) % 2 else "relayed" for i in range(peers)}
                await storm(lambda room_, peer, t=through: url(t[int(peer[1:])], room_, peer), peers, groups, room)
                for i, figures in groups.items():
                    storms[through[i]] += figures["join"]
                await asyncio.sleep(1.0)
        finally:
            await redis.aclose()
        log_a = (Path(tmp) / "a" / "node.log").read_text(errors="replace")
        through_a = (log_a.count("handed over to node b"), log_a.count("relayed to node b"))
    return cluster_report(times, storms, ops, peers, rounds, handover, through_a)


async def cluster_floor(pairs: int, log_level: str) -> str:
    """Joins direct to ``b``, through a minimal C relay to ``b``, and relayed by ``a``."""
    from redis.asyncio import Redis

    from control.cluster import Registry
    from tests.services import free_ports

    modes = ("direct", "floor", "relayed")
    with tempfile.TemporaryDirectory() as tmp:
        relay_bin = Path(tmp) / "floor_relay"
        subprocess.run(["cc", "-O2", "-o", str(relay_bin), str(ROOT / "bench" / "floor_relay.c")], check=True)
        with (
            redis_server(Path(tmp)) as redis_url,
            node_processes(Path(tmp), redis_url, ("a", "b"), log_level) as ports,
        ):
            floor_port = free_ports(1)[0]
            floor = subprocess.Popen([str(relay_bin), str(floor_port), str(ports["b"])])
            redis = Redis.from_url(redis_url, decode_responses=True)
            try:
                registry = Registry(redis)
                for _ in range(200):
                    if {n.node_id for n in await registry.nodes()} == {"a", "b"}:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("the nodes did not register")
                room = f"floor-{uuid.uuid4().hex[:8]}"
                assert await registry.place(room, "b") == "b"
                port = {"direct": ports["b"], "floor": floor_port, "relayed": ports["a"]}

                def url(mode: str, peer: str) -> str:
                    return f"ws://127.0.0.1:{port[mode]}/?roomId={room}&peerId={peer}"

                resident = await ProtooClient.connect(url("direct", "resident"))
                times: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
                try:
                    for i in range(12):  # warm-up, not counted
                        await phased_join(url(modes[i % 3], f"w{i}"))
                    for i in range(pairs):
                        for mode in modes[i % 3 :] + modes[: i % 3]:
                            times[mode].append(await phased_join(url(mode, f"{mode[0]}{i}")))
                finally:
                    await resident.close()
            finally:
                floor.terminate()
                floor.wait(timeout=10)
                await redis.aclose()

    def p50(mode: str, phase: str) -> float:
        return percentile([t[phase] * 1000 for t in times[mode]], 50)

    lines = [
        f"join direct to node b, through a minimal C relay to b (bench/floor_relay.c), and relayed by node a: "
        f"{pairs} single joins of each, rotating one by one, into a room hosted by b",
        f"machine: {machine()}",
        "",
        "| step (p50 ms) | direct | C relay | relayed by a | C relay - direct | a - direct |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for phase in (*PHASES, "total"):
        d, f, r = p50("direct", phase), p50("floor", phase), p50("relayed", phase)
        lines.append(f"| {phase} | {d:.2f} | {f:.2f} | {r:.2f} | {f - d:+.2f} | {r - d:+.2f} |")
    direct = p50("direct", "total")
    lines += [
        "",
        f"join p50 ratio to direct: C relay {p50('floor', 'total') / direct:.3f}, "
        f"relayed by a {p50('relayed', 'total') / direct:.3f}",
    ]
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="workers of the in-process server")
    parser.add_argument("--url", help="ws://host:port of a running server (default: start one here)")
    parser.add_argument(
        "--compare-auth", action="store_true", help="tokens (API keys) vs open join (dev mode), alternating rounds"
    )
    parser.add_argument(
        "--compare-cluster",
        action="store_true",
        help="two cluster nodes (subprocesses, own redis-server): joins through the room's node vs another node",
    )
    parser.add_argument(
        "--cluster-floor",
        action="store_true",
        help="joins direct vs through a minimal C relay (bench/floor_relay.c) vs relayed by another node",
    )
    parser.add_argument("--pairs", type=int, default=200, help="--compare-cluster: single joins of each kind")
    parser.add_argument("--node-log-level", default="INFO", help="--compare-cluster: LOG_LEVEL of the nodes")
    parser.add_argument(
        "--no-handover",
        action="store_true",
        help="--compare-cluster: CLUSTER_SOCKET_HANDOVER=false on the nodes (a relays to b though on one host)",
    )
    args = parser.parse_args()
    if args.cluster_floor:
        print(await cluster_floor(args.pairs, args.node_log_level))
        return 0
    if args.compare_cluster:
        print(await compare_cluster(args.pairs, args.peers, args.rounds, args.node_log_level, not args.no_handover))
        return 0

    if args.url:
        base = args.url.rstrip("/")

        def url_for(room: str, peer: str) -> str:
            return f"{base}/?roomId={room}&peerId={peer}"

        results = [await storm(url_for, args.peers) for _ in range(args.rounds)]
        print(report(results, args.peers, None, f"server {base}"))
        return 0

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if args.compare_auth:
        print(await compare_auth(args.peers, args.rounds, args.workers))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        runner, port = await start_server(Path(tmp), args.workers)

        def url_for(room: str, peer: str) -> str:
            return f"ws://127.0.0.1:{port}/?roomId={room}&peerId={peer}"

        try:
            results = []
            for _ in range(args.rounds):
                results.append(await storm(url_for, args.peers))
                await asyncio.sleep(0.5)
        finally:
            await runner.cleanup()
    print(report(results, args.peers, args.workers, "in-process server on loopback"))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

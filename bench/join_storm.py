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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
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


async def storm(url_for: Any, peers: int) -> dict[str, list[float]]:
    room = f"storm-{uuid.uuid4().hex[:8]}"
    results: dict[str, list[float]] = {"join": [], "produced": [], "mesh": []}
    start = asyncio.Event()
    clients: list[ProtooClient] = []
    tasks = [
        asyncio.ensure_future(one_peer(url_for(room, f"p{i}"), i, peers, start, results, clients)) for i in range(peers)
    ]
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    start.set()
    try:
        await asyncio.gather(*tasks)
    finally:
        wall = time.perf_counter() - t0
        for client in clients:
            try:
                await client.close()
            except Exception:
                pass
    results["wall"] = [wall]
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


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="workers of the in-process server")
    parser.add_argument("--url", help="ws://host:port of a running server (default: start one here)")
    args = parser.parse_args()

    if args.url:
        base = args.url.rstrip("/")

        def url_for(room: str, peer: str) -> str:
            return f"{base}/?roomId={room}&peerId={peer}"

        results = [await storm(url_for, args.peers) for _ in range(args.rounds)]
        print(report(results, args.peers, None, f"server {base}"))
        return 0

    from aiohttp import web
    from loguru import logger

    from control.app import create_app
    from control.config import Settings

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,
            host="127.0.0.1",
            data_dir=Path(tmp),
            mongodb_uri=None,
            rabbitmq_url=None,
            minio_endpoint=None,
            mediasoup_num_workers=args.workers,
            mediasoup_listen_ip="127.0.0.1",
            peer_reconnect_grace_seconds=0,
        )
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

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

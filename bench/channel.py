#!/usr/bin/env python3
"""Channel benchmark: ``workers/`` (Python) against Node ``mediasoup`` 3.27.1.

Both sides drive the same ``mediasoup-worker`` binary through their own channel
code and run the same scenario, given to both as one JSON document built here:
per iteration, create a router, create a WebRTC transport, connect it (fixed
fake DTLS fingerprint, role client), produce a VP8 video producer (fixed RTP
parameters, one SSRC per iteration), consume it with the router's RTP
capabilities, pause then resume the consumer, get the transport's stats, close
the transport, close the router. Every awaited call is timed on its own
(``time.perf_counter_ns`` / ``process.hrtime.bigint``); the two closes are
synchronous calls in both APIs (the worker is told fire-and-forget), so they
time the controlling process's own work. Memory: the RSS growth of the
controlling process (not the worker) while 1,000 WebRTC transports are
created on one router, measured in a fresh process after a warm-up.

Every measurement runs in a child process (Node, or this script again with
``--child``; its event loop is uvloop, as ``parley run`` uses, unless
``--loop asyncio``), and the rounds alternate which runtime goes first, so that the
noise of a shared machine falls on both sides alike. Statistics are computed
here from the raw samples of both sides, pooled over the rounds; the spread of
the per-round medians is printed too.

    python bench/channel.py                    # defaults: 10 rounds x 200 iterations
    python bench/channel.py --rounds 3 --iterations 300 --markdown /tmp/run.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NODE_DIR = HERE / "node"
NODE_SCRIPT = NODE_DIR / "channel.mjs"
MEDIASOUP_NPM_VERSION = "3.27.1"

OPS = [
    ("create_router", "create router"),
    ("create_webrtc_transport", "create WebRTC transport"),
    ("connect", "connect"),
    ("produce", "produce"),
    ("consume", "consume"),
    ("pause", "consumer pause"),
    ("resume", "consumer resume"),
    ("get_stats", "transport get_stats"),
    ("close_transport", "close transport"),
    ("close_router", "close router"),
]

# The scenario both sides run (camelCase: mediasoup's wire shapes, accepted by both APIs).
SCENARIO_BASE: dict[str, Any] = {
    "ops": [op for op, _ in OPS],
    "listenInfos": [{"protocol": "udp", "ip": "127.0.0.1"}],
    "mediaCodecs": [
        {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
        {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
        {
            "kind": "video",
            "mimeType": "video/H264",
            "clockRate": 90000,
            "parameters": {"packetization-mode": 1, "profile-level-id": "42e01f", "level-asymmetry-allowed": 1},
        },
    ],
    # No peer ever answers: the worker accepts the remote parameters and waits for ICE.
    "dtlsParameters": {
        "role": "client",
        "fingerprints": [
            {
                "algorithm": "sha-256",
                "value": "AF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:"
                "FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE",
            }
        ],
    },
    # As mediasoup-client sends for a VP8 camera track (encodings are set per iteration).
    "rtpParameters": {
        "mid": "0",
        "codecs": [
            {
                "mimeType": "video/VP8",
                "payloadType": 96,
                "clockRate": 90000,
                "rtcpFeedback": [
                    {"type": "goog-remb", "parameter": ""},
                    {"type": "transport-cc", "parameter": ""},
                    {"type": "ccm", "parameter": "fir"},
                    {"type": "nack", "parameter": ""},
                    {"type": "nack", "parameter": "pli"},
                ],
            },
            {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": 96}},
        ],
        "headerExtensions": [
            {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4},
            {"uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": 2},
            {"uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "id": 3},
            {"uri": "urn:3gpp:video-orientation", "id": 13},
            {"uri": "urn:ietf:params:rtp-hdrext:toffset", "id": 14},
        ],
        "encodings": [],
        "rtcp": {"cname": "benchcname", "reducedSize": True},
    },
    "ssrcBase": 100_000,
    "rtxSsrcBase": 900_000,
}


# -- the Python side (child process) ---------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _clone(value: Any) -> Any:
    return json.loads(json.dumps(value))


async def _iteration(worker: Any, scenario: dict, i: int, samples: dict[str, list[int]] | None) -> None:
    wall_clock = time.perf_counter_ns
    cpu_clock = time.process_time_ns

    def now() -> tuple[int, int]:
        cpu = cpu_clock()  # read outside the wall-clock window: it is a system call
        return wall_clock(), cpu

    def record(op: str, start: tuple[int, int]) -> None:
        wall, cpu = wall_clock(), cpu_clock()
        if samples is not None:
            samples[op].append(wall - start[0])
            samples["cpu:" + op].append(cpu - start[1])

    t = now()
    router = await worker.create_router(scenario["mediaCodecs"])
    record("create_router", t)
    rtp_capabilities = router.rtp_capabilities  # fetched outside the timed calls (a copy)

    t = now()
    transport = await router.create_webrtc_transport(listen_infos=scenario["listenInfos"])
    record("create_webrtc_transport", t)

    t = now()
    await transport.connect(dtls_parameters=scenario["dtlsParameters"])
    record("connect", t)

    params = _clone(scenario["rtpParameters"])
    params["encodings"] = [{"ssrc": scenario["ssrcBase"] + i, "rtx": {"ssrc": scenario["rtxSsrcBase"] + i}}]
    t = now()
    producer = await transport.produce("video", params)
    record("produce", t)

    t = now()
    consumer = await transport.consume(producer.id, rtp_capabilities)
    record("consume", t)

    t = now()
    await consumer.pause()
    record("pause", t)

    t = now()
    await consumer.resume()
    record("resume", t)

    t = now()
    await transport.get_stats()
    record("get_stats", t)

    t = now()
    transport.close()
    record("close_transport", t)

    t = now()
    router.close()
    record("close_router", t)


async def _py_timing(scenario: dict) -> dict:
    from workers.worker import Worker, WorkerSettings

    worker = await Worker.create(WorkerSettings(log_level="none"))
    if scenario.get("timingHook"):
        worker.channel.timing_hook = _metrics_timing_hook()
    for i in range(scenario["warmup"]):
        await _iteration(worker, scenario, i, None)
    await worker.get_resource_usage()  # a round trip: the warm-up's fire-and-forget closes are answered
    gc.collect()
    samples: dict[str, list[int]] = {op: [] for op in scenario["ops"]}
    samples.update({"cpu:" + op: [] for op in scenario["ops"]})
    t0 = time.perf_counter_ns()
    for i in range(scenario["iterations"]):
        await _iteration(worker, scenario, scenario["warmup"] + i, samples)
    await worker.get_resource_usage()
    wall = time.perf_counter_ns() - t0
    worker.close()
    await worker.wait_closed()
    return {"samples": samples, "wallNs": wall}


def _metrics_timing_hook() -> Any:
    """The channel timing hook ``control.metrics`` installs (its ``parley_channel_request_seconds``)."""
    from control.metrics.channel import ChannelTimings

    return ChannelTimings().observe


async def _py_memory(scenario: dict) -> dict:
    from workers.worker import Worker, WorkerSettings

    worker = await Worker.create(WorkerSettings(log_level="none"))
    for i in range(scenario["memoryWarmup"]):
        await _iteration(worker, scenario, i, None)
    await worker.get_resource_usage()
    router = await worker.create_router(scenario["mediaCodecs"])
    gc.collect()
    before = _rss_bytes()
    transports = []
    for _ in range(scenario["memoryTransports"]):
        transports.append(await router.create_webrtc_transport(listen_infos=scenario["listenInfos"]))
    gc.collect()
    after = _rss_bytes()
    router.close()
    worker.close()
    await worker.wait_closed()
    return {"transports": len(transports), "rssBefore": before, "rssAfter": after}


def _child(mode: str, scenario_json: str, loop: str) -> None:
    sys.path.insert(0, str(ROOT))
    scenario = json.loads(scenario_json)
    main = _py_memory(scenario) if mode == "memory" else _py_timing(scenario)
    if loop == "uvloop":  # as `parley run` does
        import uvloop

        result = uvloop.run(main)
        loop = f"uvloop {uvloop.__version__}"
    else:
        result = asyncio.run(main)
    result["runtime"] = f"python {platform.python_version()} ({platform.python_implementation()}), {loop}"
    sys.stdout.write(json.dumps(result))


# -- the controller --------------------------------------------------------------------


def ensure_node_modules() -> None:
    """``npm ci --ignore-scripts`` in bench/node: exactly its committed package-lock.json.

    Skipped when node_modules was installed from the current lock (npm ci writes
    ``node_modules/.package-lock.json``; ``make bench`` uses the same rule) and holds
    mediasoup 3.27.1.
    """
    installed = NODE_DIR / "node_modules" / "mediasoup" / "package.json"
    hidden_lock = NODE_DIR / "node_modules" / ".package-lock.json"
    if (
        hidden_lock.is_file()
        and hidden_lock.stat().st_mtime >= (NODE_DIR / "package-lock.json").stat().st_mtime
        and installed.is_file()
        and json.loads(installed.read_text()).get("version") == MEDIASOUP_NPM_VERSION
    ):
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("bench: npm not found (Node >= 20 and npm are needed for the Node peer)")
    # --ignore-scripts: no postinstall worker download/build; MEDIASOUP_WORKER_BIN names ours.
    print(f"bench: installing mediasoup@{MEDIASOUP_NPM_VERSION} into {NODE_DIR / 'node_modules'}", file=sys.stderr)
    subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True
    )


def worker_binary() -> str:
    override = os.environ.get("MEDIASOUP_WORKER_BIN")
    if override:
        return override
    sys.path.insert(0, str(ROOT))
    from workers.native import worker_binary as built

    return str(built())


def run_child(side: str, mode: str, scenario: dict, env: dict[str, str], loop: str = "uvloop") -> dict:
    payload = json.dumps(scenario)
    if side == "node":
        cmd = ["node", "--expose-gc", str(NODE_SCRIPT), mode, payload]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--loop", loop, "--child", mode, payload]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"bench: {side} {mode} child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


def percentile(sorted_values: list[int], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def machine_info() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        nproc = str(len(os.sched_getaffinity(0)))
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "nproc": nproc,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node_version,
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def fmt_us(ns: float) -> str:
    return f"{ns / 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="alternating Python/Node rounds (default 10)")
    parser.add_argument("--iterations", type=int, default=200, help="timed iterations per round and side (200)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed iterations before each timed run")
    parser.add_argument("--memory-transports", type=int, default=1000, help="transports created for RSS")
    parser.add_argument("--memory-rounds", type=int, default=3, help="fresh-process memory runs per side")
    parser.add_argument("--markdown", type=Path, help="also write the report as Markdown to this file")
    parser.add_argument("--json", type=Path, help="also write raw summary numbers as JSON to this file")
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of the Python side (default uvloop, as `parley run` uses)",
    )
    parser.add_argument(
        "--timing-hook",
        action="store_true",
        help="Python side: with the metrics' channel timing hook set (a Prometheus histogram per method)",
    )
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SCENARIO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, scenario = args.child
        _child(mode, scenario, args.loop)
        return

    if shutil.which("node") is None:
        sys.exit("bench: node not found (Node >= 20 and npm are needed for the Node peer)")
    ensure_node_modules()
    try:
        binary = worker_binary()
    except FileNotFoundError as error:
        sys.exit(f"bench: {error}")
    if not os.access(binary, os.X_OK):
        sys.exit(f"bench: worker binary {binary!r} is not executable")
    env = {**os.environ, "MEDIASOUP_WORKER_BIN": binary, "PYTHONHASHSEED": "0"}
    env.pop("DEBUG", None)  # mediasoup's Node logging
    scenario = {
        **SCENARIO_BASE,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "memoryWarmup": 20,
        "memoryTransports": args.memory_transports,
        "timingHook": args.timing_hook,
    }
    machine = machine_info()
    started = _dt.datetime.now(_dt.UTC)
    print(f"bench/channel.py: worker {binary}, Python event loop {args.loop}", file=sys.stderr)

    keys = [op for op, _ in OPS] + ["cpu:" + op for op, _ in OPS]
    pooled: dict[str, dict[str, list[int]]] = {"py": {k: [] for k in keys}, "node": {k: [] for k in keys}}
    round_medians: dict[str, dict[str, list[float]]] = {
        "py": {op: [] for op, _ in OPS},
        "node": {op: [] for op, _ in OPS},
    }
    walls: dict[str, list[int]] = {"py": [], "node": []}
    runtimes: dict[str, str] = {}
    for r in range(args.rounds):
        order = ("py", "node") if r % 2 == 0 else ("node", "py")
        for side in order:
            result = run_child(side, "timing", scenario, env, args.loop)
            runtimes[side] = result["runtime"]
            walls[side].append(result["wallNs"])
            for key in keys:
                pooled[side][key].extend(result["samples"][key])
            for op, _ in OPS:
                round_medians[side][op].append(statistics.median(result["samples"][op]))
        print(f"  round {r + 1}/{args.rounds} done ({' then '.join(order)})", file=sys.stderr)

    memory: dict[str, list[dict]] = {"py": [], "node": []}
    for r in range(args.memory_rounds):
        for side in ("py", "node") if r % 2 == 0 else ("node", "py"):
            memory[side].append(run_child(side, "memory", scenario, env, args.loop))

    rows = []
    for op, label in OPS:
        py = sorted(pooled["py"][op])
        node = sorted(pooled["node"][op])
        py50, node50 = percentile(py, 0.5), percentile(node, 0.5)
        py99, node99 = percentile(py, 0.99), percentile(node, 0.99)
        round_ratios = [p / n for p, n in zip(round_medians["py"][op], round_medians["node"][op], strict=False)]
        rows.append(
            {
                "op": op,
                "label": label,
                "py_p50": py50,
                "node_p50": node50,
                "p50_ratio": py50 / node50,
                "py_p99": py99,
                "node_p99": node99,
                "p99_ratio": py99 / node99,
                "p50_ratio_min": min(round_ratios),
                "p50_ratio_max": max(round_ratios),
                "py_cpu_p50": statistics.median(pooled["py"]["cpu:" + op]),
                "node_cpu_p50": statistics.median(pooled["node"]["cpu:" + op]),
            }
        )

    def per_1000(entry: dict) -> float:
        return (entry["rssAfter"] - entry["rssBefore"]) * 1000 / entry["transports"]

    mem = {side: sorted(per_1000(e) for e in memory[side]) for side in ("py", "node")}
    mem_base = {side: statistics.median(e["rssBefore"] for e in memory[side]) for side in ("py", "node")}

    report = render(args, machine, started, rows, mem, mem_base, walls, runtimes, binary)
    print(report)
    if args.markdown:
        args.markdown.write_text(report + "\n")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": machine, "rows": rows, "memory_per_1000": mem, "rss_baseline": mem_base, "walls": walls},
                indent=1,
            )
        )


def render(args, machine, started, rows, mem, mem_base, walls, runtimes, binary) -> str:
    mib = 1024 * 1024
    given = os.environ.get("MEDIASOUP_WORKER_BIN")
    env_prefix = f"MEDIASOUP_WORKER_BIN={given} " if given else ""
    lines = [
        f"# Channel benchmark, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{env_prefix}python bench/channel.py --rounds {args.rounds} --iterations {args.iterations} "
        f"--warmup {args.warmup} --memory-transports {args.memory_transports} --memory-rounds {args.memory_rounds} "
        f"--loop {args.loop}{' --timing-hook' if args.timing_hook else ''}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores (nproc {machine['nproc']}), "
        f"Linux {machine['kernel']}, load average {machine['loadavg']} at start, "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end.",
        f"Python: {runtimes.get('py', '?')}; Node: {runtimes.get('node', '?')}; worker: `{binary}`.",
        "",
        f"Each side ran {args.rounds} rounds of {args.iterations} timed iterations (after {args.warmup} "
        "warm-up iterations) in its own child process; the rounds alternate which runtime goes first, "
        "so the noise of the shared machine falls on both. Percentiles pool every round; "
        "'p50 ratio range' is the lowest and highest of the per-round median ratios. 'CPU' is the CPU time "
        "the controlling process itself spent during the call (the worker's and the scheduler's share "
        "excluded; Node: getrusage, microsecond resolution). Times in microseconds.",
        "",
        "| operation | py p50 | node p50 | p50 ratio | p50 ratio range | py p99 | node p99 | p99 ratio "
        "| py CPU p50 | node CPU p50 | targets (p50, p99) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        p50_mark = "met" if row["p50_ratio"] <= 1.0 else ("< 1.5" if row["p50_ratio"] < 1.5 else "missed")
        p99_mark = "met" if row["p99_ratio"] <= 0.5 else "missed"
        lines.append(
            f"| {row['label']} | {fmt_us(row['py_p50'])} | {fmt_us(row['node_p50'])} | {row['p50_ratio']:.2f} | "
            f"{row['p50_ratio_min']:.2f}-{row['p50_ratio_max']:.2f} | {fmt_us(row['py_p99'])} | "
            f"{fmt_us(row['node_p99'])} | {row['p99_ratio']:.2f} | {fmt_us(row['py_cpu_p50'])} | "
            f"{fmt_us(row['node_cpu_p50'])} | {p50_mark}, {p99_mark} |"
        )
    wall_py = statistics.median(walls["py"]) / args.iterations
    wall_node = statistics.median(walls["node"]) / args.iterations
    lines += [
        f"| whole iteration (wall) | {fmt_us(wall_py)} | {fmt_us(wall_node)} | {wall_py / wall_node:.2f} "
        "| | | | | | | |",
        "",
        "Ratios are Python / Node (below 1: Python faster). Targets: p50 ratio <= 1.0 (at the very least < 1.5), "
        "p99 ratio <= 0.5.",
        "",
        f"Memory of the controlling process (RSS growth, worker excluded) per 1,000 WebRTC transports, "
        f"{args.memory_rounds} fresh processes per side:",
        "",
        "| side | median | min | max | RSS before |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for side, name in (("py", "Python"), ("node", "Node")):
        values = mem[side]
        lines.append(
            f"| {name} | {statistics.median(values) / mib:.2f} MiB | {values[0] / mib:.2f} MiB | "
            f"{values[-1] / mib:.2f} MiB | {mem_base[side] / mib:.1f} MiB |"
        )
    ratio = statistics.median(mem["py"]) / statistics.median(mem["node"]) if statistics.median(mem["node"]) else 0
    lines.append(f"\nMemory ratio Python / Node: {ratio:.2f}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

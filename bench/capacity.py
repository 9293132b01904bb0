#!/usr/bin/env python3
"""Capacity: how many subscribers one Parley worker core holds, measured with ``parley load-test``.

On a 2-core machine the load tool runs on one core and Parley (its Python process and
one mediasoup worker) on the other (``taskset``). For each scenario the number of
subscribers (or rooms) doubles step by step until a threshold is crossed: packet loss
of 1% or more, a join that fails, the worker at 90% of its core, or the load tool at
95% of its core (then the limit is the load generator, not Parley: the table says so).
During each step's steady state it reads the worker's and the Python process's CPU
time from ``/proc`` and the consumer count from Parley's own ``GET /metrics``.

Scenarios (issue 18):

- ``audio``: one large audio room, 10 publishers (Opus), N subscribers;
- ``meetings``: 4-person video meetings (640x360 VP8, everyone publishes and
  receives the three others), N rooms;
- ``broadcast``: one publisher to N viewers, simulcast 720p (three layers, 320x180,
  640x360 and 1280x720, as one producer; every viewer receives the top layer).

    .venv/bin/python bench/capacity.py                       # every scenario, then print the tables
    .venv/bin/python bench/capacity.py --scenario audio --duration 10 --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SUMMARY = re.compile(r"^load-test: .*bitrate ([\d.]+) Mbps received, loss ([\d.]+|n/a)%?(, (\d+) joins failed)?$", re.M)
SERVER_LOG = Path(tempfile.gettempdir()) / "parley-capacity-server.log"
#: The tool's video row: ``pub-.../video  subscribers  packets  kbps/sub  loss  key frames  size  layer``.
VIDEO_ROW = re.compile(r"^\S+/video\s+\d+\s+\d+\s+(\d+)\s+\S+\s+\S+\s+(\S+)\s+(\S+)$", re.M)
CLK_TCK = os.sysconf("SC_CLK_TCK")

LOSS_LIMIT = 0.01
WORKER_CPU_LIMIT = 0.90
LOAD_TOOL_CPU_LIMIT = 0.95
#: A step's received bitrate per subscriber (or room) below this share of the first step's:
#: the load tool fell behind (its sockets' buffers hold what it has not read yet, so the
#: loss it counts says nothing about the rest).
KEPT_UP = 0.8


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    args: tuple[str, ...]
    steps: tuple[int, ...]  # subscribers per room, or rooms
    vary: str  # "subscribers" or "rooms"


SCENARIOS = {
    "audio": Scenario(
        "audio",
        "(a) large audio room: 10 publishers (Opus), N subscribers",
        ("--publishers", "10", "--audio-only"),
        (10, 20, 40, 80, 160, 320),
        "subscribers",
    ),
    "meetings": Scenario(
        "meetings",
        "(b) 4-person video meetings (640x360), N rooms",
        ("--publishers", "4", "--subscribers", "0", "--publishers-subscribe", "--video-resolution", "360p"),
        (1, 2, 4, 8, 16, 32),
        "rooms",
    ),
    "broadcast": Scenario(
        "broadcast",
        "(c) one publisher to N viewers, simulcast 720p (3 layers; viewers receive 1280x720)",
        ("--publishers", "1", "--video-resolution", "720p", "--simulcast"),
        (10, 20, 40, 80, 160, 320),
        "subscribers",
    ),
}


@dataclass
class Step:
    scenario: str
    n: int
    consumers: int = 0
    loss: float | None = None
    failed_joins: int = 0
    worker_cpu: float = 0.0  # fraction of one core
    python_cpu: float = 0.0
    tool_cpu: float = 0.0
    seconds: float = 0.0
    error: str = ""
    video: str = ""  # what a viewer received: size, simulcast layer, kbps (the tool's first video row)
    unit: str = "subscriber"  # what n counts
    mbps: float = 0.0  # received by every subscriber together, in the window
    kept_up: float = 1.0  # received bitrate per n / the first step's

    @property
    def per_n(self) -> float:
        return self.mbps / self.n if self.n else 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and not self.failed_joins
            and self.loss is not None
            and self.loss < LOSS_LIMIT
            and self.kept_up >= KEPT_UP
        )

    @property
    def python_per_100(self) -> float:
        return self.python_cpu * 100 / self.consumers if self.consumers else 0.0

    def stop_reason(self) -> str:
        if self.error:
            return self.error
        if self.failed_joins:
            return f"{self.failed_joins} joins failed"
        if self.loss is None or self.loss >= LOSS_LIMIT:
            return "loss >= 1%"
        if self.kept_up < KEPT_UP:
            return f"load tool fell behind: {self.kept_up * 100:.0f}% of the bitrate per {self.unit} (generator-bound)"
        if self.worker_cpu >= WORKER_CPU_LIMIT:
            return "worker CPU >= 90%"
        if self.tool_cpu >= LOAD_TOOL_CPU_LIMIT:
            return "load tool CPU >= 95% (generator-bound)"
        return ""


@dataclass
class Results:
    steps: list[Step] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def consumers_of(base: str) -> int:
    text = get(f"{base}/metrics")
    return int(sum(float(m) for m in re.findall(r'^parley_consumers\{kind="\w+"\} ([\d.e+]+)$', text, re.M)))


class Server:
    """Parley on loopback, pinned to ``cpu`` (its Python process and its one worker)."""

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = tempfile.mkdtemp(prefix="parley-capacity-")
        self.process: asyncio.subprocess.Process | None = None
        self.worker_pid = 0

    async def start(self) -> None:
        env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "DATA_DIR": self.data,
            "MEDIASOUP_NUM_WORKERS": "1",
            "MEDIASOUP_LISTEN_IP": "127.0.0.1",
            "MEDIASOUP_RTC_MIN_PORT": "20000",
            "MEDIASOUP_RTC_MAX_PORT": "29999",
            "LOG_LEVEL": "WARNING",
            "PEER_RECONNECT_GRACE_SECONDS": "0",
            "METRICS_SAMPLE_INTERVAL_SECONDS": "5",
            "MAX_PEERS_PER_ROOM": "1000",  # the policy limit (200) is not what is measured
            # The load tool's peers all come from 127.0.0.1: the per-client limits (README
            # "Limits") would cap the load, not the server.
            "MAX_CONNECTIONS_PER_IP": "1000000",
            "CONNECTIONS_PER_SECOND_PER_IP": "100000",
            "CONNECTION_BURST_PER_IP": "1000000",
            "REST_REQUESTS_PER_SECOND_PER_IP": "100000",
            "REST_REQUEST_BURST_PER_IP": "1000000",
        }
        for name in ("API_KEY", "API_SECRET", "API_KEYS_FILE", "MONGODB_URI", "RABBITMQ_URL", "MINIO_ENDPOINT"):
            env.pop(name, None)
        self.process = await asyncio.create_subprocess_exec(
            "taskset", "-c", str(self.cpu), PYTHON, "-m", "control", "run",
            cwd=self.data, env={**env, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.DEVNULL, stderr=SERVER_LOG.open("a"),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                health = json.loads(get(f"{self.base}/api/health"))
                if health.get("status") == "ok":
                    self.worker_pid = int(health["workers"][0]["pid"])
                    return
            if time.monotonic() > deadline or self.process.returncode is not None:
                raise RuntimeError("Parley did not start")
            await asyncio.sleep(0.3)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 20)
        shutil.rmtree(self.data, ignore_errors=True)


async def run_step(server: Server, scenario: Scenario, n: int, duration: float, tool_cpu: int) -> Step:
    step = Step(scenario.name, n, unit=scenario.vary[:-1])
    per = ("--rooms", str(n)) if scenario.vary == "rooms" else ("--subscribers", str(n))
    command = [
        "taskset", "-c", str(tool_cpu), PYTHON, "-m", "control", "load-test",
        "--url", f"ws://127.0.0.1:{server.port}", "--room", f"cap-{scenario.name}-{n}",
        *scenario.args, *per, "--duration", str(duration), "--timeout", "20", "--join-concurrency", "5",
    ]  # fmt: skip
    started = time.monotonic()
    tool = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert tool.stdout is not None and server.process is not None
    marks: dict[str, tuple[float, float, float, float]] = {}
    output: list[str] = []

    def mark(name: str) -> None:
        pids = {"worker": server.worker_pid, "Parley": server.process.pid, "load tool": tool.pid}  # type: ignore[union-attr]
        try:
            marks[name] = (time.monotonic(), *(cpu_seconds(pid) for pid in pids.values()))  # type: ignore[assignment]
        except FileNotFoundError:
            gone = [what for what, pid in pids.items() if not Path(f"/proc/{pid}").exists()]
            step.error = step.error or f"{', '.join(gone)} exited during the step"

    try:
        async with asyncio.timeout(duration + 300):
            while line := (await tool.stdout.readline()).decode():
                output.append(line)
                if line.startswith("load-test: all joined"):
                    await asyncio.sleep(min(3.0, duration / 4))  # let the consumers settle
                    mark("start")
                    step.consumers = consumers_of(server.base)
                elif line.startswith("load-test: measured"):
                    mark("end")
            await tool.wait()
    except TimeoutError:
        tool.kill()
        step.error = "timed out"
    step.seconds = time.monotonic() - started
    text = "".join(output)
    match = SUMMARY.search(text)
    if tool.returncode != 0 or match is None:
        stderr = (await tool.stderr.read()).decode() if tool.stderr else ""
        step.error = step.error or f"load tool failed: {(stderr or text).strip().splitlines()[-1:]}"
        return step
    step.mbps = float(match.group(1))
    step.loss = None if match.group(2) == "n/a" else float(match.group(2)) / 100
    step.failed_joins = int(match.group(4) or 0)
    if video := VIDEO_ROW.search(text):
        kbps, size, layer = video.groups()
        step.video = f"{size}" + (f", layer {layer}" if layer != "-" else "") + f", {kbps} kbps per viewer"
    if "start" in marks and "end" in marks:
        (t0, w0, p0, l0), (t1, w1, p1, l1) = marks["start"], marks["end"]
        wall = t1 - t0
        step.worker_cpu, step.python_cpu, step.tool_cpu = (w1 - w0) / wall, (p1 - p0) / wall, (l1 - l0) / wall
    return step


def row(step: Step) -> str:
    loss = "n/a" if step.loss is None else f"{step.loss * 100:.2f}%"
    return (
        f"| {step.n} | {step.consumers} | {step.mbps:.1f} ({step.kept_up * 100:.0f}%) | {loss} | {step.worker_cpu * 100:.0f}% | {step.python_cpu * 100:.1f}% | "
        f"{step.python_per_100 * 100:.2f}% | {step.tool_cpu * 100:.0f}% | {step.stop_reason() or 'ok'} |"
    )


def markdown(results: Results, scenarios: list[Scenario], command: str, duration: float, load: str) -> str:
    started = _dt.datetime.now(_dt.UTC)
    lines = [
        "## `bench/capacity.py`: subscribers held by one worker core, measured with `parley load-test`",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC. Command:",
        "",
        "```sh",
        command,
        "```",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"load average {load} at start (shared with other sessions). The load tool is pinned to CPU 0, Parley "
        "(its Python process and one mediasoup worker) to CPU 1 (`taskset`). Each step measures "
        f"{duration:g} s of steady state after everyone joined; CPU is a fraction of one core, from `/proc`; "
        "consumers from Parley's `GET /metrics` (`parley_consumers`). A step passes with loss < 1%, every join, "
        f"and at least {KEPT_UP * 100:.0f}% of the first step's received bitrate per subscriber or room (else the "
        "tool fell behind: unread packets wait in its sockets' buffers and its loss figure covers only what it read).",
        "",
    ]
    for scenario in scenarios:
        steps = [s for s in results.steps if s.scenario == scenario.name]
        if not steps:
            continue
        passed = [s for s in steps if s.ok]
        best = max(passed, key=lambda s: s.consumers, default=None)
        lines += [
            f"### {scenario.title}",
            "",
            f"| {scenario.vary} | consumers | Mbps received (per {scenario.vary[:-1]}: % of step 1) | loss | worker CPU "
            "| Python CPU | Python per 100 consumers | load tool CPU | |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            *(row(s) for s in steps),
            "",
        ]
        if best is not None:
            per_core = best.consumers / best.worker_cpu if best.worker_cpu > 0 else 0
            lines.append(
                f"Held: **{best.consumers} consumers** ({scenario.vary} = {best.n}) with loss < 1%, the worker at "
                f"{best.worker_cpu * 100:.0f}% of its core: about {per_core:.0f} consumers per fully used worker "
                "core at this bitrate (linear projection from the worker's CPU per consumer)."
                + (f" Each viewer received {best.video}." if best.video and scenario.name == "broadcast" else "")
            )
            lines.append("")
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    head = "## `bench/capacity.py`"
    start = text.find(head)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = text.find("\n## ", start + len(head))
        text = text[:start] + section.rstrip("\n") + "\n" + (text[end:] if end >= 0 else "")
    path.write_text(text)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--duration", type=float, default=10.0, help="steady-state seconds per step (10)")
    parser.add_argument("--max-steps", type=int, default=6, help="steps per scenario at most (6)")
    parser.add_argument("--write", type=Path, help="write the tables into this RESULTS.md (its capacity section)")
    args = parser.parse_args()
    if shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2:
        sys.exit("bench/capacity.py: needs taskset (util-linux) and 2 CPUs")
    cpus = sorted(os.sched_getaffinity(0))
    tool_cpu, server_cpu = cpus[0], cpus[1]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    scenarios = list(SCENARIOS.values()) if args.scenario == "all" else [SCENARIOS[args.scenario]]
    results = Results()
    for scenario in scenarios:
        server = Server(server_cpu)
        await server.start()
        try:
            first: Step | None = None
            for n in scenario.steps[: args.max_steps]:
                step = await run_step(server, scenario, n, args.duration, tool_cpu)
                first = first or step
                if first.per_n > 0:
                    step.kept_up = step.per_n / first.per_n
                results.steps.append(step)
                print(f"{scenario.name}: {row(step)}", file=sys.stderr, flush=True)
                if step.stop_reason():
                    break
                await asyncio.sleep(2)  # the rooms close
        finally:
            await server.stop()
    command = " ".join(["python bench/capacity.py", *sys.argv[1:]])
    report = markdown(results, scenarios, command, args.duration, load)
    print(report)
    if args.write:
        write_section(args.write, report)


if __name__ == "__main__":
    asyncio.run(main())

#!/usr/bin/env python3
"""Soak: minutes of join/produce/consume/leave churn with real WebRTC peers; leaks.

The server is this project's app (real mediasoup workers, embedded backends under a
temporary directory) in a child process on 127.0.0.1, so that its RSS is the
server's alone and not that of the peers. The peers are real WebRTC participants
(:class:`tests.e2e.media_peer.MediaPeer`: pymediasoup + aiortc, a tone and small
video frames over ICE/DTLS/SRTP on loopback) in this process:

- ``--rooms`` rooms run at once; each lives for ``--room-seconds`` (then every peer
  leaves, the room closes and a new room id takes its place, so rooms are created
  and closed throughout);
- in each room ``--peers`` slots each join a peer (transports, ``join``, produce
  audio and video, consume every other peer's producers), keep it for a random
  5-25 s, close it (leave) and join a new one with a new peer id.

Every minute it prints the RSS of the server process and of each worker, the open
file descriptors of each, the rooms and the requests pending in each worker's
channel. After the last minute every peer leaves, the server is left to settle and
a last sample is taken at rest. The verdict is the growth of each RSS from the
sample at the end of the warm-up (``--warmup`` minutes, 5 by default) to the last
minute's sample, which must stay under ``--max-growth`` percent (5); at rest there
must be no room, no pending request, and no descriptor that was not open before the churn
(a further one on a file already open, a lazily connected SQLite reader, is tolerated).
Exit status 1 if any check fails.

    .venv/bin/python bench/soak.py                 # 30 minutes
    .venv/bin/python bench/soak.py --minutes 3     # a quick check (warm-up 1 minute)
    .venv/bin/python bench/soak.py --trace         # + tracemalloc top growth in the server

Everything runs on loopback; the run is bounded by ``--minutes`` (plus the settle).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: How long a peer stays in its room (seconds, uniform).
STAY_SECONDS = (5.0, 25.0)
#: The server's log (its stderr).
SERVER_LOG = Path(os.environ.get("PARLEY_SOAK_LOG", Path(tempfile.gettempdir()) / "parley-soak-server.log"))
#: How long the server gets to close everything after the last peer left.
SETTLE_SECONDS = 10.0


# -- the server (child process) ----------------------------------------------------------


def proc_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def fd_targets(pid: int) -> list[str]:
    """What each descriptor points to (for the at-rest comparison)."""
    targets = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return sorted(targets)


def server_sample(server: Any) -> dict[str, Any]:
    """What the parent prints: this process and each worker, rooms, pending requests."""
    workers = [
        {
            "pid": worker.pid,
            "rss_kib": proc_rss_kib(worker.pid),
            "fds": proc_fds(worker.pid),
            "pending": len(worker.channel._pending),
        }
        for worker in server.pool.workers
    ]
    return {
        "rss_kib": proc_rss_kib(os.getpid()),
        "fds": proc_fds(os.getpid()),
        "rooms": len(server.rooms.rooms),
        "peers": sum(len(room.peers) for room in server.rooms.rooms.values()),
        "workers": workers,
        "fd_targets": fd_targets(os.getpid()),
    }


def trace_top(baseline: tracemalloc.Snapshot | None, limit: int = 15) -> list[str]:
    if baseline is None:
        return ["tracemalloc is off (--trace)"]
    current = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    return [str(stat) for stat in current.compare_to(baseline, "lineno")[:limit]]


async def serve(workers: int, trace: bool) -> None:
    """Run the app and answer one JSON line per command line on stdin:
    ``sample``, ``mark`` (tracemalloc baseline), ``top`` (growth since the mark), ``quit``."""
    from tests.e2e.harness import running_server

    if trace:
        tracemalloc.start(10)
    baseline: tracemalloc.Snapshot | None = None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with tempfile.TemporaryDirectory(prefix="parley-soak-") as tmp:
        unlimited = {  # every peer comes from 127.0.0.1 (per-client limits: README "Limits")
            "max_connections_per_ip": 1_000_000,
            "connections_per_second_per_ip": 100_000,
            "connection_burst_per_ip": 1_000_000,
        }
        async with running_server(Path(tmp), mediasoup_num_workers=workers, **unlimited) as server:
            print(json.dumps({"port": server.port}), flush=True)
            while line := (await reader.readline()).decode().strip():
                if line == "quit":
                    break
                if line == "mark" and trace:
                    baseline = tracemalloc.take_snapshot()
                answer: Any = trace_top(baseline) if line == "top" else server_sample(server)
                print(json.dumps(answer), flush=True)


# -- the peers (this process) -------------------------------------------------------------


class ServerProcess:
    """The child running :func:`serve`, asked for samples over its stdin/stdout."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    async def start(cls, workers: int, trace: bool) -> ServerProcess:
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve", "--workers", str(workers)]
        if trace:
            argv.append("--trace")
        with SERVER_LOG.open("w") as log:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, cwd=ROOT
            )
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 60)
        if not first:
            raise RuntimeError("the server exited before listening")
        return cls(process, json.loads(first)["port"])

    async def ask(self, command: str) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return json.loads(await asyncio.wait_for(self.process.stdout.readline(), 60))

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.write(b"quit\n")
            await self.process.stdin.drain()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@dataclass
class Churn:
    """Counts of what the peers did, and the errors they met (first few kept)."""

    joins: int = 0
    leaves: int = 0
    rooms: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def failed(self, error: BaseException) -> None:
        self.failures += 1
        if len(self.errors) < 10:
            self.errors.append(f"{type(error).__name__}: {error}")


async def one_peer(url: str, churn: Churn, stop_at: float) -> None:
    """Join (produce audio + video, consume the others), stay a while, leave."""
    from tests.e2e.media_peer import MediaPeer

    peer = MediaPeer(url, url.rsplit("=", 1)[1])
    try:
        await asyncio.wait_for(peer.join(), 30)
        churn.joins += 1
        await asyncio.sleep(max(0.0, min(random.uniform(*STAY_SECONDS), stop_at - time.monotonic())))
    except Exception as error:
        churn.failed(error)
    finally:
        await peer.close()
        churn.leaves += 1


async def slot(port: int, room_id: str, number: int, room_end: float, churn: Churn) -> None:
    """Peer after peer in one slot of a room until the room's end."""
    generation = 0
    await asyncio.sleep(random.uniform(0, 3))
    while time.monotonic() < room_end:
        url = f"ws://127.0.0.1:{port}/?roomId={room_id}&peerId=p{number}g{generation}"
        await one_peer(url, churn, room_end)
        generation += 1


async def room_slots(port: int, index: int, peers: int, room_seconds: float, deadline: float, churn: Churn) -> None:
    """Room after room (a new id every ``room_seconds``), ``peers`` slots churning in each."""
    session = 0
    while time.monotonic() < deadline:
        churn.rooms += 1
        room_end = min(deadline, time.monotonic() + room_seconds)
        await asyncio.gather(*(slot(port, f"soak-{index}-{session}", n, room_end, churn) for n in range(peers)))
        session += 1


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def line(minute: str, sample: dict[str, Any], churn: Churn) -> str:
    workers = "  ".join(
        f"w{i} {mib(w['rss_kib'])} MiB fds {w['fds']} pending {w['pending']}" for i, w in enumerate(sample["workers"])
    )
    return (
        f"{minute:>5}  server {mib(sample['rss_kib'])} MiB fds {sample['fds']}  rooms {sample['rooms']}"
        f" peers {sample['peers']}  {workers}  joins {churn.joins} failures {churn.failures}"
    )


def growth(before: int, after: int) -> float:
    return 100.0 * (after - before) / before if before else 0.0


def verdict(
    warm: dict[str, Any], last: dict[str, Any], rest_start: dict[str, Any], rest_end: dict[str, Any], limit: float
) -> tuple[list[str], bool]:
    """The growth of each RSS from the end of warm-up to the last minute, and the checks at rest."""
    lines: list[str] = []
    ok = True
    series = [("server", warm, last)] + [
        (f"worker {i}", before, after)
        for i, (before, after) in enumerate(zip(warm["workers"], last["workers"], strict=False))
    ]
    for name, before, after in series:
        pct = growth(before["rss_kib"], after["rss_kib"])
        over = pct >= limit
        ok &= not over
        lines.append(
            f"{name:>9} RSS {mib(before['rss_kib'])} -> {mib(after['rss_kib'])} MiB: {pct:+.2f}%"
            + ("  OVER" if over else "")
        )
    fds_before = rest_start["fds"] + sum(w["fds"] for w in rest_start["workers"])
    fds_after = rest_end["fds"] + sum(w["fds"] for w in rest_end["workers"])
    added = sorted((Counter(rest_end["fd_targets"]) - Counter(rest_start["fd_targets"])).elements())
    # A further descriptor on a file that was already open at rest (a SQLite reader
    # thread of a bounded pool connecting lazily) is not a leak; anything else is.
    leaked = [target for target in added if target not in rest_start["fd_targets"]]
    workers_grew = any(
        after["fds"] > before["fds"] for before, after in zip(rest_start["workers"], rest_end["workers"], strict=False)
    )
    pending = sum(w["pending"] for w in rest_end["workers"])
    at_rest_ok = rest_end["rooms"] == 0 and pending == 0 and not leaked and not workers_grew
    ok &= at_rest_ok
    if added:
        lines.append(f"  server descriptors opened during the run and still open: {added}")
    lines.append(
        f"  at rest: rooms {rest_end['rooms']}, pending {pending}, fds (server + workers)"
        f" {fds_before} before -> {fds_after} after, leaked {len(leaked) + int(workers_grew)}"
        + ("" if at_rest_ok else "  FAIL")
    )
    return lines, ok


async def soak(args: argparse.Namespace) -> int:
    warmup = min(args.warmup, max(1, args.minutes - 1))
    print(
        f"soak: {args.minutes} min, {args.rooms} rooms x {args.peers} peers (audio + video), rooms renewed every"
        f" {args.room_seconds:.0f} s, {args.workers} workers, warm-up {warmup} min, limit {args.max_growth}%;"
        f" {machine()}",
        flush=True,
    )
    server = await ServerProcess.start(args.workers, args.trace)
    churn = Churn()
    try:
        # One short room first, so that what the server opens once (lazily) is open at rest.
        await room_slots(server.port, -1, 2, 8.0, time.monotonic() + 8.0, Churn())
        await asyncio.sleep(SETTLE_SECONDS)
        rest_start = await server.ask("sample")
        print(line("rest", rest_start, churn), flush=True)
        start = time.monotonic()
        deadline = start + 60 * args.minutes
        peers = asyncio.gather(
            *(room_slots(server.port, r, args.peers, args.room_seconds, deadline, churn) for r in range(args.rooms))
        )
        samples: list[dict[str, Any]] = []
        for minute in range(1, args.minutes + 1):
            await asyncio.sleep(max(0.0, start + 60 * minute - time.monotonic()))
            samples.append(await server.ask("sample"))
            print(line(f"{minute}m", samples[-1], churn), flush=True)
            if minute == warmup:
                await server.ask("mark")
        await peers
        await asyncio.sleep(SETTLE_SECONDS)
        rest_end = await server.ask("sample")
        print(line("rest", rest_end, churn), flush=True)
        top = await server.ask("top") if args.trace else []
    finally:
        await server.stop()
    print(
        f"churn: {churn.joins} joins, {churn.leaves} leaves, {churn.rooms} rooms, {churn.failures} failed joins",
        flush=True,
    )
    for error in churn.errors:
        print(f"  {error}")
    lines, ok = verdict(samples[warmup - 1], samples[-1], rest_start, rest_end, args.max_growth)
    print(f"growth after the first {warmup} min (limit {args.max_growth}%):")
    print("\n".join(lines))
    tracebacks = SERVER_LOG.read_text(errors="replace").count("Traceback")
    print(f"server log {SERVER_LOG}: {tracebacks} tracebacks")
    for stat in top:
        print(f"  tracemalloc: {stat}")
    print("soak: PASS" if ok else "soak: FAIL", flush=True)
    return 0 if ok else 1


def machine() -> str:
    load = os.getloadavg()[0]
    return f"{platform.machine()} {os.cpu_count()} cpus, load {load:.1f}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=30, help="how long the churn runs (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="minutes before the growth baseline (default 5)")
    parser.add_argument("--rooms", type=int, default=2, help="rooms at once (default 2)")
    parser.add_argument("--peers", type=int, default=3, help="peer slots per room (default 3)")
    parser.add_argument("--room-seconds", type=float, default=120.0, help="lifetime of a room id (default 120)")
    parser.add_argument("--workers", type=int, default=2, help="mediasoup workers (default 2)")
    parser.add_argument("--max-growth", type=float, default=5.0, help="RSS growth limit, percent (default 5)")
    parser.add_argument("--trace", action="store_true", help="tracemalloc in the server; top growth at the end")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minutes < 2:
        parser.error("--minutes must be at least 2 (a warm-up minute and one to compare)")
    if args.serve:
        asyncio.run(serve(args.workers, args.trace))
        return 0
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())

"""Chat store benchmark: inserts/s and history-page latency at 100,000 messages,
on both backends (embedded SQLite, MongoDB).

    .venv/bin/python bench/chat_store.py                       # both, 100,000 messages
    .venv/bin/python bench/chat_store.py --backends sqlite
    .venv/bin/python bench/chat_store.py --mongo-messages 20000  # mongoeco is slow to fill

MongoDB: ``MONGODB_URI`` if set, else the test harness's server (``tests/services.py``:
a real ``mongod`` on PATH, else mongoeco's wire server from ``make services-setup``).

Per backend, through the real code path (``ChatService`` -> store):

1. **sequential sends**: one sender, each ``chat.send`` awaited (validated, given an
   id, written and acknowledged) -- the latency-bound rate;
2. **concurrent sends**: ``--concurrency`` senders at once (SQLite group-commits
   them; MongoDB spreads them over the connection pool);
3. **bulk load** up to the target size with ``insert_messages`` (how the room is
   filled; also a figure);
4. **history pages** of 50 from the big room at its full size: the newest page, a
   page from the middle (cursor at half the room) and the oldest page; median and
   p95 over ``--pages`` repetitions.

The peer, measured in the same run on the same SQLite file, is the same page query
with the index disabled (``NOT INDEXED``): what a page would cost if it scanned the
room. The ratio column is this / peer (lower is better). ``EXPLAIN QUERY PLAN`` of
the page query is printed and checked (index search, no scan, no sort).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from control.chat import ChatService
from control.store import ChatMessage, Cursor, Sender, Store
from control.store.ids import ms_to_datetime, new_id_ms
from control.store.mongo import MongoStore
from control.store.sqlite import SQLiteStore, history_sql

BIG = "bench-big-room"
NOISE = "bench-other-room"
PAGE = 50
SENDER = {"peerId": "bench-peer", "displayName": "Bench Peer"}
TEXT = "The quick brown fox jumps over the lazy dog, again and again. " * 2  # 124 chars


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


@dataclass
class Result:
    backend: str
    where: str
    size: int = 0
    rates: dict[str, float] = field(default_factory=dict)  # name -> inserts/s
    pages: dict[str, list[float]] = field(default_factory=dict)  # name -> seconds
    peer_pages: dict[str, list[float]] = field(default_factory=dict)
    plan: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def bulk_messages(room_id: str, n: int, start: int) -> list[ChatMessage]:
    out = []
    sender = Sender(peer_id=SENDER["peerId"], display_name=SENDER["displayName"])
    for i in range(n):
        ms, mid = new_id_ms()
        out.append(
            ChatMessage(
                id=mid,
                room_id=room_id,
                type="text",
                sender=sender,
                text=f"{start + i} {TEXT}",
                created_at=ms_to_datetime(ms),
            )
        )
    return out


async def timed_pages(store: Store, cursors: dict[str, Cursor | None], reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in cursors}
    for _ in range(reps):
        for name, cursor in cursors.items():
            t = time.perf_counter()
            page = await store.chat.history(BIG, limit=PAGE, before=cursor)
            out[name].append(time.perf_counter() - t)
            assert page, name
    return out


async def run_backend(
    store: Store,
    args: argparse.Namespace,
    size: int,
    *,
    sequential: int,
    concurrent: int,
    bulk_batch: int,
    reps: int,
    noise: int,
) -> Result:
    res = Result(store.backend, store.describe(), size)
    chat = ChatService(store)
    log = lambda msg: print(f"  [{store.backend}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    await store.chat.delete_room_messages(BIG)
    await store.chat.delete_room_messages(NOISE)

    keys: list[Cursor] = []  # every message of the big room, to place cursors without paging

    # 1. sequential sends
    t = time.perf_counter()
    for i in range(sequential):
        keys.append((await chat.send(BIG, SENDER, {"type": "text", "text": f"{i} {TEXT}"})).cursor)
    res.rates["sequential send (1 sender)"] = sequential / (time.perf_counter() - t)
    log(f"sequential: {res.rates['sequential send (1 sender)']:.0f}/s")

    # 2. concurrent sends
    queue = iter(range(concurrent))

    async def sender() -> None:
        for i in queue:
            keys.append((await chat.send(BIG, SENDER, {"type": "text", "text": f"c{i} {TEXT}"})).cursor)

    t = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(args.concurrency)))
    name = f"concurrent send ({args.concurrency} senders)"
    res.rates[name] = concurrent / (time.perf_counter() - t)
    log(f"concurrent: {res.rates[name]:.0f}/s")

    # 3. bulk load to the target size (+ another room, so the index has to select)
    have = sequential + concurrent
    t = time.perf_counter()
    loaded = 0
    noise_every = max(1, (size - have) // noise) if noise else 0
    while have < size:
        n = min(bulk_batch, size - have)
        batch = bulk_messages(BIG, n, have)
        keys.extend(m.cursor for m in batch)
        if noise_every:
            batch += bulk_messages(NOISE, max(1, n // noise_every), have)
        await store.chat.insert_messages(batch)
        have += n
        loaded += len(batch)
        if (have // bulk_batch) % 10 == 0:
            log(f"bulk: {have:,}/{size:,} ({loaded / (time.perf_counter() - t):.0f}/s)")
    if loaded:
        res.rates[f"bulk insert_messages ({bulk_batch}/batch)"] = loaded / (time.perf_counter() - t)
    count = await store.chat.count_messages(BIG)
    assert count == size, (count, size)
    res.notes.append(f"{count:,} messages in the room, {await store.chat.count_messages(NOISE):,} in another")

    # 4. pages at full size
    await store.chat.history(BIG, limit=PAGE)
    # cursors: the newest page, one at half the room, one PAGE from the oldest
    keys.sort(reverse=True)
    assert len(keys) == size
    mid_cursor = keys[size // 2 - 1]  # the page holds messages size/2+1 .. size/2+50 from the newest
    old_cursor = keys[size - PAGE - 1]
    cursors = {"newest page": None, "middle page": mid_cursor, "oldest page": old_cursor}
    log(f"pages: {reps} x {len(cursors)}")
    await timed_pages(store, cursors, 1)  # warm up
    res.pages = await timed_pages(store, cursors, reps)
    if isinstance(store, SQLiteStore):
        res.plan = await store.explain_history(BIG, mid_cursor)
        res.peer_pages = peer_pages(store.path, cursors, min(reps, 30))  # scans are slow
    return res


def peer_pages(path: Path, cursors: dict[str, Cursor | None], reps: int) -> dict[str, list[float]]:
    """The same page queries with the index disabled (the room is scanned)."""
    conn = sqlite3.connect(path)
    out: dict[str, list[float]] = {name: [] for name in cursors}
    try:
        for _ in range(reps):
            for name, cursor in cursors.items():
                sql = history_sql(with_cursor=cursor is not None).replace(
                    "INDEXED BY chat_messages_room_time", "NOT INDEXED"
                )
                params = (BIG, PAGE) if cursor is None else (BIG, cursor.ms, cursor.id, PAGE)
                t = time.perf_counter()
                rows = conn.execute(sql, params).fetchall()
                out[name].append(time.perf_counter() - t)
                assert rows
    finally:
        conn.close()
    return out


def report(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        "## Chat store (`bench/chat_store.py`)",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, 'bench/chat_store.py', *sys.argv[1:]])}`  ",
        f"Machine: {machine()}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "Inserts (acknowledged writes: SQLite WAL + synchronous=FULL commit; MongoDB w=1):",
        "",
        "| backend | where | operation | inserts/s |",
        "|---|---|---|---:|",
    ]
    for r in results:
        for name, rate in r.rates.items():
            lines.append(f"| {r.backend} | {r.where} | {name} | {rate:,.0f} |")
    lines += [
        "",
        f"History page of {PAGE} from a room of N messages (milliseconds; peer = the same "
        "query with the index disabled, SQLite only):",
        "",
        "| backend | N | page | median ms | p95 ms | peer median ms | this / peer |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for name, values in r.pages.items():
            med, p95 = statistics.median(values) * 1000, pct(values, 0.95) * 1000
            peer = r.peer_pages.get(name)
            if peer:
                pm = statistics.median(peer) * 1000
                lines.append(
                    f"| {r.backend} | {r.size:,} | {name} | {med:.3f} | {p95:.3f} | {pm:.2f} | {med / pm:.4f} |"
                )
            else:
                lines.append(f"| {r.backend} | {r.size:,} | {name} | {med:.2f} | {p95:.2f} | - | - |")
    for r in results:
        if r.plan:
            lines += ["", f"SQLite `EXPLAIN QUERY PLAN` (page with a cursor): `{' / '.join(r.plan)}`"]
        for note in r.notes:
            lines.append(f"- {r.backend}: {note}")
    return "\n".join(lines) + "\n"


def check_plan(plan: list[str]) -> None:
    text = " ".join(plan)
    if "USING INDEX chat_messages_room_time" not in text or "SCAN" in text or "TEMP B-TREE" in text:
        raise SystemExit(f"the history query does not use the index: {plan}")


async def main_async(args: argparse.Namespace) -> int:
    results: list[Result] = []
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    print(f"machine: {machine()}", file=sys.stderr)
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
            store = SQLiteStore(Path(tmp) / "parley.sqlite3")
            await store.start()
            try:
                r = await run_backend(
                    store,
                    args,
                    args.messages,
                    sequential=args.sequential,
                    concurrent=args.concurrent,
                    bulk_batch=5000,
                    reps=args.pages,
                    noise=args.messages // 10,
                )
                check_plan(r.plan)
                r.where = f"SQLite {sqlite3.sqlite_version} file, WAL, synchronous=FULL"
                results.append(r)
                emit(r, args)
            finally:
                await store.close()
    if "mongodb" in backends:
        services = None
        uri = os.environ.get("MONGODB_URI")
        if not uri:
            from tests.services import TestServices

            services = TestServices()
            svc = services.mongo()
            uri = svc.uri
            origin = "test-harness server, tests/services.py"
        else:
            origin = "MONGODB_URI"
        db = f"parley_bench_{secrets.token_hex(3)}"
        mongo_store = MongoStore(uri, database=db, timeout=args.mongo_timeout)
        try:
            await mongo_store.start()
            info = await mongo_store.client.admin.command("buildInfo")
            server = f"{info.get('gitVersion')} {info.get('version')}"
            size = args.mongo_messages or args.messages
            r = await run_backend(
                mongo_store,
                args,
                size,
                sequential=min(args.sequential, args.mongo_sequential),
                concurrent=min(args.concurrent, args.mongo_concurrent),
                bulk_batch=1000,
                reps=args.mongo_pages,
                noise=0,
            )
            r.where = f"{server} ({origin})"
            results.append(r)
            emit(r, args)
            await mongo_store.client.drop_database(db)
        finally:
            await mongo_store.close()
            if services is not None:
                services.close()
    text = report(results, args)
    print(text)
    if args.output:
        with open(args.output, "a") as f:
            f.write("\n" + text)
    return 0


def emit(result: Result, args: argparse.Namespace) -> None:
    """Print one backend's figures as soon as they exist (a long run may be cut short)."""
    print(report([result], args), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="sqlite,mongodb")
    p.add_argument("--messages", type=int, default=100_000, help="room size (default 100,000)")
    p.add_argument("--mongo-messages", type=int, default=0, help="room size on MongoDB (default: --messages)")
    p.add_argument("--sequential", type=int, default=2000)
    p.add_argument("--concurrent", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--mongo-sequential", type=int, default=500)
    p.add_argument("--mongo-concurrent", type=int, default=2000)
    p.add_argument("--pages", type=int, default=300, help="repetitions of each page query (SQLite)")
    p.add_argument("--mongo-pages", type=int, default=20, help="repetitions on MongoDB")
    p.add_argument("--mongo-timeout", type=float, default=120.0, help="seconds (mongoeco scans are slow)")
    p.add_argument("--output", help="append the markdown report to this file (e.g. bench/RESULTS.md)")
    args = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the MongoDB test server is stopped and removed
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What the per-client limits (control/ratelimit) cost a REST request.

Two copies of the app run in this process on loopback, one as ``create_app`` makes
it and one with the two rate-limit middlewares taken out (limits raised so nothing
is refused); ``GET /api/rooms`` (a REST route: both buckets of the address and, in
keyed mode, of the principal) is timed on each, in alternating rounds (ABBA), and
the script prints the median request time of each and the ratio limited / unlimited.
Then the bucket table alone: a token taken from one key, and from a flood of distinct
keys with the table at its cap (every call evicts one), against a dict lookup.

    .venv/bin/python bench/ratelimit.py [--requests 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RAISED = {
    "rest_requests_per_second": 100_000,
    "rest_request_burst": 1_000_000,
    "rest_requests_per_second_per_ip": 100_000,
    "rest_request_burst_per_ip": 1_000_000,
}


async def start(tmp: Path, *, limited: bool) -> tuple[web.AppRunner, str]:
    from control.app import create_app
    from tests.e2e.harness import server_settings

    app = create_app(server_settings(tmp, mediasoup_num_workers=1, **RAISED))
    if not limited:
        for middleware in list(app.middlewares):
            if getattr(middleware, "__name__", "") in ("address_limits", "principal_limits"):
                app.middlewares.remove(middleware)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/api/rooms"


async def timed(http: aiohttp.ClientSession, url: str, requests: int) -> float:
    """Seconds per request (sequential, one keep-alive connection)."""
    t0 = time.perf_counter()
    for _ in range(requests):
        async with http.get(url) as resp:
            assert resp.status == 200, resp.status
            await resp.read()
    return (time.perf_counter() - t0) / requests


def table_costs(calls: int) -> dict[str, float]:
    from control.ratelimit.buckets import BucketTable

    keys = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(calls)]
    same = BucketTable(1e9, 10**9, 50_000)
    flood = BucketTable(100.0, 400, 50_000)
    plain: dict[str, Any] = {}
    out = {}
    t0 = time.perf_counter()
    for _ in range(calls):
        same.take("10.0.0.1")
    out["take, one key"] = (time.perf_counter() - t0) / calls
    t0 = time.perf_counter()
    for key in keys:
        flood.take(key)
    out["take, a flood of new keys at the cap"] = (time.perf_counter() - t0) / calls
    t0 = time.perf_counter()
    for key in keys:
        plain.get(key)
    out["dict.get (reference)"] = (time.perf_counter() - t0) / calls
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    from loguru import logger

    logger.remove()
    samples: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        limited, limited_url = await start(Path(a), limited=True)
        unlimited, unlimited_url = await start(Path(b), limited=False)
        try:
            async with aiohttp.ClientSession() as http:
                await timed(http, limited_url, 100)  # warm-up
                await timed(http, unlimited_url, 100)
                for round_ in range(args.rounds):
                    order = (True, False) if round_ % 2 == 0 else (False, True)
                    for which in order:
                        url = limited_url if which else unlimited_url
                        samples[which].append(await timed(http, url, args.requests))
        finally:
            await limited.cleanup()
            await unlimited.cleanup()
    with_limits, without = statistics.median(samples[True]), statistics.median(samples[False])
    print(f"GET /api/rooms, {args.rounds} rounds x {args.requests} requests (ABBA):")
    print(f"  with the rate-limit middlewares    {with_limits * 1e6:8.1f} us/request")
    print(f"  without them                       {without * 1e6:8.1f} us/request")
    print(f"  ratio with / without               {with_limits / without:8.3f}")
    for name, cost in table_costs(200_000).items():
        print(f"  {name:<38} {cost * 1e9:8.0f} ns")


if __name__ == "__main__":
    asyncio.run(main())

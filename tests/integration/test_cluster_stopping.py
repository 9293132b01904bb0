"""A task beating on a real Redis stops when the node closes, wherever it is cancelled.

On Python 3.11 a cancel landing in redis-py's ``wait_for`` around a command's send is
lost (control.cluster.stopping); the heartbeat went on and a node's shutdown hung."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from control.cluster.registry import NodeInfo, NodeLoad, Registry
from control.cluster.stopping import stop_tasks

pytestmark = pytest.mark.timeout(120)


async def test_a_heartbeat_loop_on_redis_stops_at_any_moment(redis_server) -> None:
    redis = Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
    registry = Registry(redis)
    try:
        for step in range(40):  # cancelled 0, 1, ... 39 loop turns into the beating
            state: dict[str, object] = {"closed": False, "beats": 0}

            async def beat_forever(state: dict[str, object] = state) -> None:
                while not state["closed"]:
                    await registry.heartbeat(NodeInfo("stopping-test", "http://127.0.0.1:1", NodeLoad()))
                    await registry.nodes()

            task = asyncio.ensure_future(beat_forever())
            for _ in range(step):
                await asyncio.sleep(0)
            state["closed"] = True
            assert await stop_tasks([task], "test", timeout=10), f"still beating, stopped {step} turns in"
            assert task.done()
    finally:
        await registry.leave("stopping-test")
        await redis.aclose()

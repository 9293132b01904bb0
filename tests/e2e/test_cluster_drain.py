"""A cluster node stopped with SIGTERM drains (control.cluster): it takes no new room,
its room keeps serving (a new peer still joins it) until its peers leave, then the
process exits on its own; a drain that outlasts CLUSTER_DRAIN_TIMEOUT_SECONDS stops
anyway. Real nodes: one in this process, one a ``python -m control run`` subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from control.cluster import Registry
from tests.e2e.cluster_nodes import cluster_node, node_process
from tests.e2e.protoo_client import ProtooClient
from tests.integration.test_cluster import JOIN
from tests.polling import eventually

pytestmark = pytest.mark.timeout(180)


async def exited(process: subprocess.Popen[bytes], timeout: float) -> int:
    await eventually(lambda: process.poll() is not None, timeout=timeout, what="the node process exited")
    return process.returncode


async def test_sigterm_drains_the_node_then_it_exits_when_its_room_ends(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    async with cluster_node(tmp_path, redis_server.url, "a", rtc_base=51000) as a:
        async with node_process(
            tmp_path, redis_server.url, "b", rtc_base=52000, env_overrides={"CLUSTER_DRAIN_TIMEOUT_SECONDS": "120"}
        ) as (process, port_b):
            await eventually(lambda: {n.node_id for n in a.cluster.nodes} == {"a", "b"}, what="B registered")
            assert await registry.place("old", "b") == "b"
            carol = await ProtooClient.connect(f"ws://127.0.0.1:{port_b}/?roomId=old&peerId=carol")
            clients = [carol]
            try:
                await carol.request("join", JOIN)
                os.kill(process.pid, signal.SIGTERM)

                async def b_draining() -> bool:
                    node = await registry.node("b")
                    return node is not None and node.draining

                await eventually(b_draining, what="B draining in the registry")
                # No new room for B: one joined through A stays on A.
                await eventually(lambda: any(n.draining for n in a.cluster.nodes), what="A sees B draining")
                dan = await ProtooClient.connect(a.ws_url("fresh", "dan"))
                clients.append(dan)
                await dan.request("join", JOIN)
                assert await registry.owner("fresh") == "a"
                # B's room keeps serving: Carol is answered; Erin joins it through A.
                assert (await carol.request("getRouterRtpCapabilities"))["codecs"]
                erin = await ProtooClient.connect(a.ws_url("old", "erin"))
                clients.append(erin)
                answer = await erin.request("join", JOIN)
                assert [p["id"] for p in answer["peers"]] == ["carol"]
                await carol.wait_for("newPeer", lambda d: d["id"] == "erin")
                assert process.poll() is None
                # The room ends (its peers leave): B leaves the registry and exits, status 0.
                await erin.close()
                await carol.close()
                assert await exited(process, 60) == 0
                assert "b" not in {n.node_id for n in await registry.nodes()}
                assert await registry.owner("old") is None
                log = (tmp_path / "b" / "node.log").read_text()
                assert "draining" in log and "drained" in log
            finally:
                for client in clients:
                    await client.close()


async def test_a_drain_that_outlasts_its_timeout_stops_the_node_anyway(
    tmp_path: Path, redis_server, registry: Registry
) -> None:
    async with node_process(
        tmp_path, redis_server.url, "b", rtc_base=53000, env_overrides={"CLUSTER_DRAIN_TIMEOUT_SECONDS": "2"}
    ) as (process, port_b):
        carol = await ProtooClient.connect(f"ws://127.0.0.1:{port_b}/?roomId=stay&peerId=carol")
        try:
            await carol.request("join", JOIN)
            os.kill(process.pid, signal.SIGTERM)
            assert await exited(process, 60) == 0
            await eventually(carol.closed.is_set, timeout=10, what="Carol's socket closed by the stopping node")
            assert "drain timeout" in (tmp_path / "b" / "node.log").read_text()
        finally:
            await carol.close()

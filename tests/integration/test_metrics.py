"""``GET /metrics`` against the real app: real workers, real WebRTC peers (pymediasoup +
aiortc), values that move as peers join, produce, consume and leave; access refused
without the right bearer once API keys are configured."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from control.metrics import METRICS
from tests.e2e.harness import Server, running_server
from tests.e2e.media_peer import MediaPeer
from tests.e2e.protoo_client import ProtooClientError
from tests.polling import eventually

pytestmark = pytest.mark.timeout(180)

API_KEY = "metrics-test-key"
API_SECRET = "s" * 40
METRICS_TOKEN = "scrape-token-0123456789"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: Server, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(f"{server.base_url}/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def metrics_until(server: Server, check: Callable[[Samples], bool], timeout: float = 20.0) -> Samples:
    """Scrape ``/metrics`` until ``check`` holds for its samples; return them."""

    async def matching() -> list[Samples]:
        samples = await scrape(server)
        return [samples] if check(samples) else []  # a list: the samples as they are, even none

    [samples] = await eventually(matching, timeout=timeout, what="metrics reaching the expected values", interval=0.2)
    return samples


async def test_metrics_follow_peers_producers_and_consumers(tmp_path: Path) -> None:
    async with running_server(tmp_path, metrics_sample_interval_seconds=3600) as server:
        samples = await scrape(server)
        assert value(samples, "parley_rooms") == 0 and value(samples, "parley_peers") == 0
        for worker in ("0", "1"):
            assert value(samples, "parley_worker_up", worker=worker) == 1
            assert value(samples, "parley_worker_rss_bytes", worker=worker) > 1_000_000
            assert ("parley_worker_cpu_seconds_total", (("worker", worker),)) in samples
        assert value(samples, "parley_recordings_active") == 0
        assert value(samples, "parley_upload_queue_pending") == 0

        alice = MediaPeer(server.ws_url("metrics", "alice"), "alice")
        bob = MediaPeer(server.ws_url("metrics", "bob"), "bob")
        try:
            await alice.join()
            await bob.join()
            await bob.wait_media("alice", video_frames=5, audio_samples=4800, timeout=45)
            await alice.wait_media("bob", video_frames=5, audio_samples=4800, timeout=45)
            samples = await metrics_until(
                server, lambda s: value(s, "parley_consumers", kind="video") == 2 and value(s, "parley_peers") == 2
            )
            assert value(samples, "parley_rooms") == 1
            assert value(samples, "parley_producers", kind="audio") == 2
            assert value(samples, "parley_producers", kind="video") == 2
            assert value(samples, "parley_consumers", kind="audio") == 2
            # Signaling requests, counted by method and outcome, and timed.
            assert value(samples, "parley_signaling_requests_total", method="join", outcome="ok") == 2
            assert value(samples, "parley_signaling_request_seconds_count", method="join") == 2
            assert value(samples, "parley_signaling_requests_total", method="produce", outcome="ok") == 4
            # Worker channel round trips, by FlatBuffers method, through the channel's hook.
            assert value(samples, "parley_channel_request_seconds_count", method="TRANSPORT_PRODUCE") >= 4
            assert value(samples, "parley_channel_request_seconds_count", method="TRANSPORT_CONSUME") >= 4

            # Errors: an unknown method (client-chosen string) is counted under "other".
            with pytest.raises(ProtooClientError):
                await alice.signaling.request("no-such-method-" + "x" * 20, {})
            await alice.signaling.request("chatMessage", {"text": "hello"})
            samples = await scrape(server)
            other = {k: v for k, v in samples.items() if k[0] == "parley_signaling_requests_total" and v}
            assert any(dict(labels)["method"] == "other" and dict(labels)["outcome"] != "ok" for _, labels in other)
            assert not any(dict(labels)["method"].startswith("no-such") for _, labels in other)
            assert value(samples, "parley_signaling_requests_total", method="chatMessage", outcome="ok") == 1
            assert value(samples, "parley_chat_messages_total") >= 1

            # Sampled stats: transport bytes grow, consumer scores are observed.
            metrics = server.app[METRICS]
            await metrics.sampler.sample()
            await asyncio.sleep(1.0)
            await metrics.sampler.sample()
            samples = await scrape(server)
            for direction in ("in", "out"):
                moved = sum(
                    value(samples, "parley_transport_bytes_total", direction=direction, worker=w) for w in ("0", "1")
                )
                assert moved > 10_000, (direction, moved)
            assert value(samples, "parley_consumer_score_count") >= 8  # 4 consumers x 2 samples
            assert value(samples, "parley_outbox_pending") >= 0
        finally:
            await bob.close()
        samples = await metrics_until(
            server, lambda s: value(s, "parley_peers") == 1 and value(s, "parley_consumers", kind="video") == 0
        )
        assert value(samples, "parley_producers", kind="video") == 1
        await alice.close()
        await metrics_until(
            server, lambda s: value(s, "parley_rooms") == 0 and value(s, "parley_producers", kind="audio") == 0
        )


async def status_of(server: Server, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{server.base_url}/metrics", headers=headers) as response:
        if response.status != 200:
            body = await response.json()
            assert set(body["error"]) >= {"code", "message"}
        return response.status


async def test_metrics_need_a_token_when_keys_are_configured(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, api_key=API_KEY, api_secret=API_SECRET, metrics_token=METRICS_TOKEN, mediasoup_num_workers=1
    ) as server:
        assert await status_of(server, {}) == 401
        assert await status_of(server, {"Authorization": "Bearer not-the-token"}) == 401
        assert await status_of(server, {"Authorization": "Basic " + METRICS_TOKEN}) == 401
        assert await status_of(server, {"Authorization": f"Bearer {METRICS_TOKEN}x"}) == 401
        participant = server.token("r1", "alice")
        assert await status_of(server, {"Authorization": f"Bearer {participant}"}) == 403
        assert await status_of(server, {"Authorization": f"Bearer {METRICS_TOKEN}"}) == 200
        lister = server.token("", "monitor", room_join=False, room_list=True)
        assert await status_of(server, {"Authorization": f"Bearer {lister}"}) == 200
        samples = await scrape(server, METRICS_TOKEN)
        assert value(samples, "parley_worker_up", worker="0") == 1


async def test_metrics_roomlist_token_without_metrics_token(tmp_path: Path) -> None:
    async with running_server(tmp_path, api_key=API_KEY, api_secret=API_SECRET, mediasoup_num_workers=1) as server:
        assert await status_of(server, {}) == 401
        lister = server.token("", "monitor", room_join=False, room_list=True)
        assert await status_of(server, {"Authorization": f"Bearer {lister}"}) == 200


async def test_metrics_can_be_disabled(tmp_path: Path) -> None:
    async with running_server(tmp_path, metrics_enabled=False, mediasoup_num_workers=1) as server:
        async with aiohttp.ClientSession() as http, http.get(f"{server.base_url}/metrics") as response:
            assert response.status == 404


async def test_dashboard_and_alerts_use_exported_names(tmp_path: Path) -> None:
    """deploy/grafana/parley.json and deploy/prometheus/prometheus.yml name only families the app exports."""
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    used = set(re.findall(r"parley_[a-z_]+", (deploy / "grafana" / "parley.json").read_text()))
    used |= set(re.findall(r"parley_[a-z_]+", (deploy / "prometheus" / "prometheus.yml").read_text()))
    used -= {"parley_overview"}  # the dashboard's uid
    async with running_server(tmp_path, mediasoup_num_workers=1) as server:
        async with aiohttp.ClientSession() as http, http.get(f"{server.base_url}/metrics") as response:
            text = await response.text()
    exported = {family.name for family in text_string_to_metric_families(text)}  # counters without _total
    families = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in used}
    assert families and families <= exported, families - exported


async def test_worker_up_follows_a_worker_death_and_respawn(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        pool = server.pool
        victim = next(w for w in pool.workers if w.app_data.get("index") == 1)
        os.kill(victim.pid, signal.SIGKILL)
        await metrics_until(server, lambda s: value(s, "parley_worker_up", worker="1") == 0)
        samples = await metrics_until(server, lambda s: value(s, "parley_worker_up", worker="1") == 1, timeout=30)
        assert value(samples, "parley_worker_up", worker="0") == 1
        # The respawned worker reports its channel round trips too.
        respawned = next(w for w in pool.workers if w.app_data.get("index") == 1)
        assert respawned.pid != victim.pid
        assert respawned.channel.timing_hook == server.app[METRICS].observe_channel

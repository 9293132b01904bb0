"""deploy/docker-compose.cluster.yml: one Redis and two Parley nodes that form one
cluster (``docker compose`` is not installed here: the file is parsed with PyYAML and
each node's environment checked against the settings it configures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from control.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.cluster.yml"


def services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())  # anchors and merge keys resolved
    assert isinstance(document, dict) and document.get("name") == "parley-cluster"
    return document["services"]


def nodes() -> dict[str, dict[str, str]]:
    """The Parley services: their environment (what sets REDIS_URL)."""
    return {
        name: {key: str(value) for key, value in service["environment"].items()}
        for name, service in services().items()
        if "REDIS_URL" in service.get("environment", {})
    }


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]


def test_two_nodes_share_one_redis_with_distinct_ports_ids_and_rtc_ranges() -> None:
    found = nodes()
    assert len(found) == 2, sorted(found)
    a, b = found.values()
    # One cluster: the same Redis, the one the compose file runs (published on loopback).
    assert a["REDIS_URL"] == b["REDIS_URL"]
    redis_port = urlsplit(a["REDIS_URL"]).port
    assert f"127.0.0.1:{redis_port}:6379" in services()["redis"]["ports"]
    assert a["CLUSTER_SECRET"] == b["CLUSTER_SECRET"]
    # Distinct nodes: names, ports, advertised URLs (each its own port), RTC port ranges.
    assert a["NODE_ID"] != b["NODE_ID"] and a["PORT"] != b["PORT"]
    for env in (a, b):
        assert urlsplit(env["NODE_ADVERTISE_URL"]).port == int(env["PORT"])
    ranges = sorted((int(env["MEDIASOUP_RTC_MIN_PORT"]), int(env["MEDIASOUP_RTC_MAX_PORT"])) for env in (a, b))
    assert all(low < high for low, high in ranges)
    assert ranges[0][1] < ranges[1][0], f"RTC port ranges overlap: {ranges}"


def test_each_node_is_a_valid_configuration_that_drains_before_docker_kills_it() -> None:
    for name, env in nodes().items():
        service = services()[name]
        assert service["network_mode"] == "host" and service["init"] is True
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        # Every variable is a setting, and the values are valid (secrets stand in for ${...}).
        values: dict[str, Any] = {k.lower(): v for k, v in env.items()}
        unknown = set(values) - set(Settings.model_fields)
        assert not unknown, f"{name}: not settings: {sorted(unknown)}"
        values["cluster_secret"] = "s" * 40
        settings = Settings(_env_file=None, api_key="APIx", api_secret="x" * 40, **values)
        assert settings.redis_url == env["REDIS_URL"] and settings.node_id == env["NODE_ID"]
        # docker stop waits longer than the drain (then SIGKILLs).
        assert seconds(service["stop_grace_period"]) > settings.cluster_drain_timeout_seconds
    volumes = [tuple(services()[name]["volumes"]) for name in nodes()]
    assert len(set(volumes)) == len(volumes), "the nodes share a data volume"

"""``GET /api/health``: is this node able to carry media?

200 ``{"status": "ok", "workers": [...]}`` while at least one mediasoup worker is
alive and answers a request; 503 ``{"status": "unavailable", ...}`` otherwise.
Each worker entry: ``pid``, ``alive``, ``load`` (its routers, transports,
producers and consumers) and, when it answered, its
``resource_usage`` (``ru_maxrss``, ``ru_utime``...) or else an ``error``.

In a cluster (``REDIS_URL``) a ``cluster`` entry: ``draining``, ``registry``
(``ok``/``unreachable``), ``nodeCount``; and, for a caller who may list rooms
(``roomList`` or a roomless ``roomAdmin``), this node's ``nodeId`` and ``nodes``: every
live node's id, URL, load, draining flag and heartbeat age. A draining node answers 503 ``{"status": "draining"}``
so that load balancers send new clients elsewhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import web
from loguru import logger

from control.auth import principal_of, require_room_list
from control.errors import ParleyError

if TYPE_CHECKING:
    from workers.router import Router
    from workers.worker import Worker
    from workers.worker_pool import WorkerPool

#: How long a worker may take to answer before it is reported as not alive.
WORKER_PROBE_TIMEOUT = 2.0

__all__ = ["CLUSTER_HEALTH", "WORKER_PROBE_TIMEOUT", "ClusterHealth", "health_routes", "worker_health"]


class ClusterHealth(Protocol):
    """This node's view of the cluster (``control.cluster``)."""

    async def cluster_health(self, detailed: bool) -> dict[str, Any]:
        """``draining``, ``registry``, ``nodeCount``; ``nodeId`` and ``nodes`` when ``detailed``."""
        ...


#: Set by ``control.cluster`` when the node is part of a cluster.
CLUSTER_HEALTH: Final[web.AppKey[ClusterHealth]] = web.AppKey("cluster_health")


async def _operator(request: web.Request) -> bool:
    """Does the caller hold what the room list needs? (the cluster's node list is for operators)"""
    try:
        require_room_list(await principal_of(request))
    except ParleyError:
        return False
    return True


def _as_dict(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(vars(value))


def _load(worker: Worker) -> dict[str, int]:
    """What the worker carries: routers (rooms), transports, consumers and producers."""
    routers: list[Router] = list(getattr(worker, "routers", ()))
    transports = [t for r in routers for t in r.transports.values()]
    return {
        "routers": len(routers),
        "transports": len(transports),
        "producers": sum(len(t.producers) for t in transports),
        "consumers": sum(len(t.consumers) for t in transports),
    }


async def _probe(worker: Worker) -> dict[str, Any]:
    info: dict[str, Any] = {"pid": worker.pid, "alive": False, "load": _load(worker)}
    if worker.closed:
        info["error"] = "closed"
        return info
    try:
        async with asyncio.timeout(WORKER_PROBE_TIMEOUT):
            usage = await worker.get_resource_usage()
    except TimeoutError:
        info["error"] = f"no answer within {WORKER_PROBE_TIMEOUT:g}s"
    except Exception as exc:  # noqa: BLE001 - a dead or closing worker: report it, never raise
        info["error"] = f"{type(exc).__name__}: {exc}"
    else:
        info["alive"] = not worker.closed
        info["resource_usage"] = _as_dict(usage)
    return info


async def worker_health(pool: WorkerPool | None) -> tuple[bool, list[dict[str, Any]]]:
    """Probe every worker concurrently; ``(any_alive, per-worker info)``."""
    if pool is None:
        return False, []
    workers = await asyncio.gather(*(_probe(w) for w in list(pool.workers)))
    return any(w["alive"] for w in workers), list(workers)


def health_routes(pool: web.AppKey[WorkerPool]) -> web.RouteTableDef:
    """``GET /api/health`` over the worker pool under ``pool`` (503 while it is not running)."""
    routes = web.RouteTableDef()

    @routes.get("/api/health")
    async def health(request: web.Request) -> web.Response:
        ok, workers = await worker_health(request.app.get(pool))
        body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "workers": workers}
        if (cluster := request.app.get(CLUSTER_HEALTH)) is not None:
            body["cluster"] = await cluster.cluster_health(await _operator(request))
            if ok and body["cluster"]["draining"]:
                body["status"] = "draining"  # 503: a load balancer sends new clients elsewhere
        if ok and body["status"] == "ok":
            return web.json_response(body)
        if not ok:
            logger.warning("health check: no live mediasoup worker ({} known)", len(workers))
        return web.json_response(body, status=503)

    return routes

"""Scale-out: several Parley nodes behind one Redis (``REDIS_URL``).

Unset ``REDIS_URL``: :func:`setup` starts nothing and the node is alone, exactly as
before. Set: the node joins the cluster under ``NODE_ID`` (default ``host:port``),
reachable by the other nodes at ``NODE_ADVERTISE_URL`` (default
``http(s)://host:port``):

* registry (:mod:`control.cluster.registry`): a heartbeat key per node with its load
  (rooms, peers, consumers, worker CPU), gone within 4 s of the node dying;
* placement: a room's first join places it on the least-loaded live node (one Lua
  script: racing nodes agree); the placement ends when the room closes or its node dies;
* any node accepts any client (:mod:`control.cluster.relay`): a client of a room
  hosted elsewhere is relayed to the owner's signaling endpoint: the relaying node
  writes the client's upgrade there itself, on a raw connection opened ahead of need
  (:mod:`control.cluster.links`), answers the client with the owner's 101 and passes
  the bytes through unparsed (:mod:`control.cluster.splice`); it remembers the
  room's node (no Redis call per join; the owner confirms, :meth:`ClusterNode.route`);
  when the owner runs on the same host, the client's socket itself is passed to it
  instead (:mod:`control.cluster.handover`: the relaying node is then out of the path;
  the node listens with :func:`site`, which hands it the runner's server; a client
  of a room on such a node whose node this one remembers is passed there before any
  HTTP handling here, :mod:`control.cluster.front`);
* split brain: a node whose room is placed on another live node closes its copy
  (4002, "reconnect"): the placement is the truth.

A node stopping leaves the registry first (its placements handed back), then its
rooms close their sockets: the peers reconnect through any node to a live one.

A node stopping with SIGTERM drains first (:func:`drain_on_stop`, also
``POST /api/cluster/drain``): it says ``draining`` in the registry, placement gives it
no new room, its rooms keep serving until they end (at most
``CLUSTER_DRAIN_TIMEOUT_SECONDS``), then it stops as above. ``GET /api/rooms`` and
``GET /api/health`` of any node show the whole cluster (:meth:`ClusterNode.cluster_rooms`,
:meth:`ClusterNode.cluster_health`).

A room whose consumers exceed ``ROOM_CONSUMERS_PER_NODE`` on its node extends onto
a second one, producers and data producers piped both ways (:mod:`control.cluster.cascade`).

The node is signaling's room router (``control.signaling.server.ROOM_ROUTER``):
:func:`setup` stores it under the key app.py hands it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp import web
from loguru import logger
from redis.asyncio import Redis

from control.auth import is_loopback_host
from control.cluster.cascade import CASCADE_PATH
from control.cluster.front import FrontDoor, FrontSite
from control.cluster.handover import HANDOVER_HEADER, HandoverServer, host_identity
from control.cluster.links import NodeLinks
from control.cluster.node import ClusterNode
from control.cluster.registry import NodeInfo, NodeLoad, Registry
from control.cluster.relay import RELAY_HEADER, Relay, relay_token
from control.cluster.routes import drain_routes
from control.config import Settings
from control.errors import NotFound

if TYPE_CHECKING:
    from control.rooms.manager import RoomManager
    from control.signaling.server import RoomRouter
    from workers.worker_pool import WorkerPool

__all__ = [
    "CLUSTER",
    "HANDOVER_HEADER",
    "RELAY_HEADER",
    "ClusterNode",
    "NodeInfo",
    "NodeLoad",
    "Registry",
    "advertise_url",
    "drain_on_stop",
    "node_id",
    "serve_handovers",
    "setup",
    "site",
]

#: This node's cluster membership (only when ``REDIS_URL`` is set).
CLUSTER: Final[web.AppKey[ClusterNode]] = web.AppKey("cluster", ClusterNode)


def node_id(settings: Settings) -> str:
    """``NODE_ID``, else ``host:port`` (the machine's name when bound to every address)."""
    if settings.node_id:
        return settings.node_id
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else socket.gethostname()
    return f"{host}:{settings.port}"


def advertise_url(settings: Settings) -> str:
    """``NODE_ADVERTISE_URL``, else ``http(s)://host:port`` of this node."""
    if settings.node_advertise_url:
        return settings.node_advertise_url.rstrip("/")
    scheme = "https" if settings.tls_cert_file else "http"
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.port}"


async def _relay_secret(settings: Settings, registry: Registry) -> str:
    if settings.cluster_secret is not None:
        return settings.cluster_secret.get_secret_value()
    if settings.api_secret is not None:
        return settings.api_secret.get_secret_value()
    return await registry.shared_secret()


def cluster_ctx(
    *,
    settings: web.AppKey[Settings],
    rooms: web.AppKey[RoomManager],
    pool: web.AppKey[WorkerPool],
    router: web.AppKey[RoomRouter],
    views: tuple[web.AppKey[Any], ...] = (),
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup_ctx: join the cluster (``CLUSTER``, and ``router``) when ``REDIS_URL`` is set."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[settings]
        if not config.redis_url:
            yield  # one node, no Redis
            return
        redis = Redis.from_url(config.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
        handover: HandoverServer | None = None
        links = NodeLinks()  # the relay's raw connections to the other nodes (control.cluster.links)
        # The cascade's links: connecting to a node that does not answer fails fast; an
        # open link has no deadline.
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=5))
        try:
            registry = Registry(redis)
            relay = Relay(session, relay_token(await _relay_secret(config, registry)), links)
            if config.cluster_socket_handover:  # clients of this host's other nodes (control.cluster.handover)
                handover = HandoverServer(config.data_dir / "cluster", relay.token, node_id(config))
                handover.start()
            node = ClusterNode(
                node_id(config),
                advertise_url(config),
                registry,
                relay,
                app[rooms],
                app[pool],
                host=host_identity(config.cluster_host_id),
                handover=handover,
            )
            if is_loopback_host(config.host) and not config.node_advertise_url:
                logger.info("cluster: HOST is loopback: only nodes on this machine can reach {}", node.url)
            await node.start()
            app[CLUSTER] = node
            app[router] = node
            for key in views:  # the cluster-wide /api/rooms and /api/health
                app[key] = node
            try:
                yield
            finally:
                await node.close()
        finally:
            if handover is not None:
                await handover.close()
            await links.close()
            await session.close()
            await redis.aclose()

    return ctx


def serve_handovers(app: web.Application, server: Callable[[], asyncio.Protocol]) -> None:
    """Adopt the clients other nodes of this host hand over into ``server`` (the
    ``AppRunner``'s, once set up: ``runner.server``); before this call (or without it)
    the node takes no handover: it is relayed to (:mod:`control.cluster.handover`)."""
    node = app.get(CLUSTER)
    if node is not None and node.handover is not None:
        node.handover.server = server


def site(runner: web.AppRunner, host: str | None, port: int, *, ssl_context: ssl.SSLContext | None) -> web.TCPSite:
    """The node's TCP site (``runner`` set up): it adopts the clients other nodes of this
    host hand over (:func:`serve_handovers`) and, with socket handover on and no TLS,
    listens through the front door (:mod:`control.cluster.front`: a client of a room on
    another node of this host goes there before any HTTP handling here); else
    aiohttp's own ``TCPSite``."""
    server = runner.server
    assert server is not None  # set up
    serve_handovers(runner.app, server)
    node = runner.app.get(CLUSTER)
    if node is None or node.handover is None or ssl_context is not None:
        return web.TCPSite(runner, host, port, ssl_context=ssl_context)
    node.front = FrontDoor(node, server)
    return FrontSite(runner, host, port, factory=node.front)


async def _cascade_link(request: web.Request) -> web.StreamResponse:
    """A satellite's link to a room of this node (control.cluster.cascade)."""
    node = request.app.get(CLUSTER)
    if node is None:
        raise NotFound("this node is not in a cluster")
    return await node.cascade.accept(request)


def setup(
    app: web.Application,
    *,
    settings: web.AppKey[Settings],
    rooms: web.AppKey[RoomManager],
    pool: web.AppKey[WorkerPool],
    router: web.AppKey[RoomRouter],
    views: tuple[web.AppKey[Any], ...] = (),
) -> None:
    """Join the cluster of ``REDIS_URL`` (nothing at all when it is unset); the node is
    stored under ``router`` (signaling asks it where a room lives), ``CLUSTER`` and each
    of ``views`` (the room list and the health check ask it for the cluster's)."""
    app.cleanup_ctx.append(cluster_ctx(settings=settings, rooms=rooms, pool=pool, router=router, views=views))
    app.add_routes(drain_routes(CLUSTER))  # POST/DELETE /api/cluster/drain (roomless roomAdmin)
    app.router.add_get(CASCADE_PATH, _cascade_link)  # node to node: the relay token is checked there

    async def leave(app: web.Application) -> None:
        node = app.get(CLUSTER)
        if node is not None:
            await node.close()  # out of the registry, placements handed back, relayed clients closed (1001)

    # First of the shutdown hooks: the node leaves before its rooms close their peers'
    # sockets, so the peers that reconnect through another node find their rooms unplaced.
    app.on_shutdown.insert(0, leave)


async def drain_on_stop(app: web.Application, timeout: float) -> bool:  # noqa: ASYNC109 - a drain deadline
    """Before a stop (SIGTERM): drain this node (no new rooms; its rooms keep serving
    and new peers of them are still let in) and wait until its rooms have ended and no
    client is relayed through it, at most ``timeout`` seconds
    (``CLUSTER_DRAIN_TIMEOUT_SECONDS``). Called while the server still listens, before it
    stops. True: drained (or nothing to drain: not in a cluster, a 0 timeout)."""
    node = app.get(CLUSTER)
    if node is None or node.closed or timeout <= 0:
        return True
    return await node.drain_and_wait(timeout)

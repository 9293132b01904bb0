"""The node's drain over REST (an operator's switch; SIGTERM drains too, then stops).

``POST /api/cluster/drain``
    200 ``{"nodeId", "draining": true, "rooms", "relayedClients"}``: no new room is
    placed on this node from now on; its rooms keep serving. The node keeps running:
    stop it (SIGTERM) once ``rooms`` is 0, or let SIGTERM wait for that.
``DELETE /api/cluster/drain``
    200 ``{..., "draining": false}``: new rooms may come here again.

Access: a roomless ``roomAdmin`` (a server-API token), checked before anything else;
in dev mode the open principal holds it. 404 ``not_in_cluster`` without ``REDIS_URL``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from control.auth import principal_of, require_node_admin
from control.errors import NotFound

if TYPE_CHECKING:
    from control.cluster.node import ClusterNode

__all__ = ["drain_routes"]


def _state(node: ClusterNode) -> dict[str, Any]:
    return {
        "nodeId": node.node_id,
        "draining": node.draining,
        "rooms": len(node.rooms.rooms),
        "relayedClients": len(node.relay.clients),
    }


def drain_routes(cluster: web.AppKey[ClusterNode]) -> web.RouteTableDef:
    """``POST``/``DELETE /api/cluster/drain`` on the node under ``cluster``."""
    routes = web.RouteTableDef()

    def node_of(request: web.Request) -> ClusterNode:
        node = request.app.get(cluster)
        if node is None or node.closed:
            raise NotFound("this node is not in a cluster (REDIS_URL)", code="not_in_cluster")
        return node

    @routes.post("/api/cluster/drain")
    async def drain(request: web.Request) -> web.Response:
        require_node_admin(await principal_of(request))
        node = node_of(request)
        await node.drain()
        return web.json_response(_state(node), headers={"Cache-Control": "no-store"})

    @routes.delete("/api/cluster/drain")
    async def resume(request: web.Request) -> web.Response:
        require_node_admin(await principal_of(request))
        node = node_of(request)
        await node.resume()
        return web.json_response(_state(node), headers={"Cache-Control": "no-store"})

    return routes

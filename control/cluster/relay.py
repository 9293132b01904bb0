"""Signaling relay: a client's protoo WebSocket carried to the node that hosts its room.

Node A accepted the client's upgrade request (any node accepts any client; A's access
check ran on it); the room lives on node B. A writes the client's upgrade itself to
B's own signaling endpoint, on a raw connection opened ahead of need
(:mod:`control.cluster.links`): ``/ws`` with the client's query, its WebSocket
headers (its key, version, subprotocols, extensions), ``Authorization`` and
``Cookie`` (B authenticates the client exactly as if it had connected there), plus
:data:`RELAY_HEADER`, the cluster's relay token: B then serves the room itself
instead of routing again (and does not count the client against its per-address
limits: A did, as the client's). B's 101 goes to the client verbatim (its
``Sec-WebSocket-Accept`` answers the client's own key): the WebSocket is end to end
between the client and B, and its bytes cross A unparsed
(:mod:`control.cluster.splice`; B reads and checks every frame). Media goes straight
to B's announced addresses, which B's answers carry. When B runs on this host, the
client's socket itself is passed to B instead (:mod:`control.cluster.handover`, the
``handover`` argument of :meth:`Relay.relay`): B answers the client and this node is
out of the path; the relay is the fallback whenever that cannot be.

A refusal by B before the upgrade (401, 403, 400...) is A's refusal, with B's
status; 421 (:class:`RoomMoved`) makes A place the room again. When B closes the
WebSocket, its close frame reaches the client as B sent it; when B vanishes (killed,
unreachable) A closes the client with 4002, "reconnect": the client reconnects
through any node and the room is placed again on a live one. A connection B's
address refuses (:class:`NodeRefused`: nothing listens, B died) lets A evict B
from the registry once B has missed a heartbeat, instead of waiting for its key
to expire (see ``ClusterNode.route``). B not answering the upgrade within
:data:`RESPONSE_TIMEOUT_SECONDS` is unreachable (503).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Final

import aiohttp
from aiohttp import WSCloseCode, hdrs, web
from loguru import logger
from yarl import URL

from control.cluster.handover import HANDOVER_HEADER, HandedOver, HandoverLinks, client_head, hand_over
from control.cluster.links import Link, LinkLost, NodeLinks
from control.cluster.splice import Splice, SplicedResponse, close_frame
from control.cluster.stopping import STOP_TIMEOUT, stop_tasks
from control.errors import BadRequest, Forbidden, ParleyError, Unauthorized, Unavailable
from control.signaling.protoo import CLOSE_RECONNECT

__all__ = ["PEER_NODE_HEADER", "PLACEMENT_HEADER", "RELAY_HEADER", "NodeRefused", "Relay", "RoomMoved", "relay_token"]

#: The header a relaying node sends: proof that the connection comes from a node of the cluster.
RELAY_HEADER: Final = "X-Parley-Relay"
#: Sent with a relay whose room's node the relaying node remembered instead of asking
#: Redis: the receiving node confirms it hosts (or now owns) the room, else 421.
PLACEMENT_HEADER: Final = "X-Parley-Placement"
#: With the relay token: the client goes to a satellite of the room whose origin this names.
ORIGIN_HEADER: Final = "X-Parley-Origin"
#: With the relay token: the client's peer is this node's (a mirror where it connected,
#: cascade): served here, never sent on again.
PEER_NODE_HEADER: Final = "X-Parley-Peer-Node"
#: WebSocket pings of the node-to-node links (the cascade's, as signaling's own).
HEARTBEAT: Final = 20.0
#: The room's node must answer the relayed upgrade within this (its admission can
#: include a Redis call, or linking a satellite to its origin: cascade).
RESPONSE_TIMEOUT_SECONDS: Final = 20.0
#: The client's headers written to the room's node: its WebSocket handshake, and how
#: it authenticated.
_FORWARDED: Final = (
    hdrs.SEC_WEBSOCKET_KEY,
    hdrs.SEC_WEBSOCKET_VERSION,
    hdrs.SEC_WEBSOCKET_PROTOCOL,
    hdrs.SEC_WEBSOCKET_EXTENSIONS,
    hdrs.AUTHORIZATION,
    hdrs.COOKIE,
)


class NodeRefused(Unavailable):
    """The room's node refused the TCP connection: nothing listens there (it died)."""

    #: Which node (set by whoever knows it: the caller may evict it).
    node_id: str | None = None


class RoomMoved(Unavailable):
    """421: the node a remembered placement named does not host the room (it closed
    there, or lives elsewhere now): the relaying node places it again."""

    status = 421
    default_code = "room_moved"


def relay_token(secret: str) -> str:
    """The relay token of a cluster secret (nodes compare it in constant time)."""
    return hmac.new(secret.encode(), b"parley-cluster-relay-v1", hashlib.sha256).hexdigest()


def _refusal(status: int, node_url: str) -> ParleyError:
    """The owner's refusal before the upgrade, as this node's error."""
    if status == RoomMoved.status:
        return RoomMoved(f"room's node {node_url} does not host the room")
    by_status: dict[int, type[ParleyError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden}
    kind = by_status.get(status, Unavailable)
    return kind(
        f"refused by the room's node ({status})" if kind is not Unavailable else f"room's node {node_url}: {status}"
    )


def _status(head: bytes) -> int:
    """The status code of a response head (0 if it is not HTTP/1.x)."""
    line = head.split(b"\r\n", 1)[0]
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        return 0
    return int(code)


def _host(url: URL) -> str:
    """The ``Host`` header for ``url``."""
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return host if url.is_default_port() else f"{host}:{url.port}"


class Relay:
    """The relayed connections of this node (closed when it shuts down)."""

    def __init__(self, session: aiohttp.ClientSession, token: str, links: NodeLinks) -> None:
        #: The cascade's node-to-node WebSockets (:mod:`control.cluster.cascade`).
        self.session = session
        self.token = token
        #: The raw connections relayed upgrades go out on.
        self.links = links
        self.clients: set[SplicedResponse] = set()
        #: Clients passed to a node of this host so far (socket handover: not relayed).
        self.handed_over = 0
        #: Of those, the ones passed on before any HTTP handling here (control.cluster.front).
        self.handed_over_early = 0
        #: The open Unix connections handovers go out on (control.cluster.handover).
        self.handover_links = HandoverLinks(token)
        #: How long the room's node may take to answer a relayed upgrade.
        self.response_timeout = RESPONSE_TIMEOUT_SECONDS
        self._forwarded = frozenset(name.lower().encode() for name in _FORWARDED)

    def is_relayed(self, request: web.Request) -> bool:
        """Does ``request`` come from a node of this cluster? (a wrong token is refused)"""
        presented = request.headers.get(RELAY_HEADER)
        if presented is None:
            return False
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            logger.warning("cluster: relay from {} with a wrong token refused", request.remote)
            raise Forbidden("wrong cluster relay token", code="relay_token_invalid")
        return True

    async def relay(
        self,
        request: web.Request,
        node_id: str,
        node_url: str,
        *,
        remembered: bool = False,
        origin: str | None = None,
        peers_node: bool = False,
        handover: str | None = None,
    ) -> web.StreamResponse:
        """Serve ``request`` (a protoo upgrade) through the node at ``node_url``
        (``remembered``: a placement not read from Redis now, for that node to confirm;
        ``origin``: that node hosts a satellite of the room whose origin this is: cascade;
        ``peers_node``: that node holds the client's peer, :data:`PEER_NODE_HEADER`;
        ``handover``: that node's Unix socket, on this host: the client's socket is
        passed to it if it can be, :mod:`control.cluster.handover`)."""
        if handover is not None:
            headers = self._relay_headers(remembered, origin, peers_node)
            head = client_head(request, [*headers, (HANDOVER_HEADER, "1")])
            if await hand_over(request, self.handover_links, handover, node_id, head):
                self.handed_over += 1
                logger.bind(room=request.query.get("roomId"), peer=request.query.get("peerId")).info(
                    "cluster: connection from {} handed over to node {}", request.remote, node_id
                )
                return HandedOver()
        target = URL(node_url)
        head = self._request_head(request, target, remembered, origin, peers_node)
        link, head = await self._upgrade(head, target, node_url)
        try:
            status = _status(head)
            if status != 101:
                if status:
                    raise _refusal(status, node_url)
                logger.warning("cluster: room's node {} answered the relayed upgrade with no HTTP status", node_url)
                raise Unavailable("the room's node is unreachable, try again")
            splice = Splice(request.protocol, link, close_frame(CLOSE_RECONNECT, f"node {node_id} is gone, reconnect"))
            client = SplicedResponse(head, splice.client)
            await client.prepare(request)  # B's 101 first, then what B sent after it
            link.attach(splice.upstream)
        except BaseException:
            link.close()
            raise
        # Logged when it ends: a line written now would hold up the client's first
        # request, which follows the 101 at once (measured: ~0.1 ms of a 6 ms join).
        began = time.monotonic()
        self.clients.add(client)
        try:
            await splice.done
        finally:
            self.clients.discard(client)
            splice.close()
            link.close()
            logger.bind(room=request.query.get("roomId"), peer=request.query.get("peerId")).info(
                "cluster: connection from {} relayed to node {} for {:.1f} s",
                request.remote,
                node_id,
                time.monotonic() - began,
            )
        return client

    def _request_head(
        self, request: web.Request, target: URL, remembered: bool, origin: str | None, peers_node: bool = False
    ) -> bytes:
        """The client's upgrade as the room's node gets it (see the module doc)."""
        path = f"{target.raw_path.rstrip('/')}/ws?{request.rel_url.raw_query_string}"
        head = bytearray(
            f"GET {path} HTTP/1.1\r\nHost: {_host(target)}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".encode()
        )
        for name, value in request.raw_headers:
            if name.lower() in self._forwarded:
                head += name + b": " + value + b"\r\n"
        for header, text in self._relay_headers(remembered, origin, peers_node):
            head += f"{header}: {text}\r\n".encode()
        head += b"\r\n"
        return bytes(head)

    def handover_headers(self) -> bytes:
        """The header lines a client handed over for a remembered room gets (the front
        door's: :mod:`control.cluster.front`)."""
        headers = [*self._relay_headers(True, None, False), (HANDOVER_HEADER, "1")]
        return b"".join(f"{header}: {text}\r\n".encode() for header, text in headers)

    def _relay_headers(self, remembered: bool, origin: str | None, peers_node: bool) -> list[tuple[str, str]]:
        """The headers a relaying node adds to the client's upgrade."""
        headers = [(RELAY_HEADER, self.token)]
        if remembered:
            headers.append((PLACEMENT_HEADER, "remembered"))
        if origin is not None:
            headers.append((ORIGIN_HEADER, origin))
        if peers_node:
            headers.append((PEER_NODE_HEADER, "1"))
        return headers

    async def _upgrade(self, head: bytes, target: URL, node_url: str) -> tuple[Link, bytes]:
        """A link to the room's node on which ``head`` was answered, and the answer's head."""
        fresh = False
        while True:
            try:
                link, pooled = await self.links.take(target, fresh=fresh)
            except ConnectionRefusedError:
                logger.warning("cluster: room's node {} unreachable: connection refused", node_url)
                raise NodeRefused("the room's node is gone, try again") from None
            except (OSError, TimeoutError) as error:
                logger.warning("cluster: room's node {} unreachable: {!r}", node_url, error)
                raise Unavailable("the room's node is unreachable, try again") from None
            try:
                async with asyncio.timeout(self.response_timeout):
                    return link, await link.response(head)
            except LinkLost as lost:
                link.close()
                if pooled and not lost.received:
                    fresh = True  # a pooled connection the node had just closed: once more, on a new one
                    continue
                logger.warning("cluster: room's node {} closed the relayed upgrade: {}", node_url, lost)
                raise Unavailable("the room's node is unreachable, try again") from None
            except (OSError, TimeoutError) as error:
                link.close()
                logger.warning("cluster: room's node {} did not answer the relayed upgrade: {!r}", node_url, error)
                raise Unavailable("the room's node is unreachable, try again") from None
            except BaseException:
                link.close()
                raise

    async def close(self) -> None:
        """Close every relayed client (this node is stopping: 1001, as local peers get),
        all at once and in bounded time: a client that does not answer is dropped."""
        closing = [
            asyncio.ensure_future(client.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down"))
            for client in list(self.clients)
        ]
        if closing:
            _, pending = await asyncio.wait(closing, timeout=STOP_TIMEOUT)
            if pending:
                await stop_tasks(pending, "cluster: closing relayed clients")
        await self.handover_links.close()

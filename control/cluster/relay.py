"""Signaling relay: a client's protoo WebSocket carried to the node that hosts its room.

Node A accepted the client (any node accepts any client); the room lives on node B.
A opens a node-to-node WebSocket to B's own signaling endpoint (``/ws`` with the
client's query, ``Authorization`` and ``Cookie``, so B authenticates the client
exactly as if it had connected there) plus :data:`RELAY_HEADER`, the cluster's
relay token: B then serves the room itself instead of routing again. Once both
upgrades succeed with the same subprotocol and no extension, the bytes pass through
unparsed (:mod:`control.cluster.splice`: the client's masked frames are valid towards
B, B's unmasked ones towards the client; B reads and checks every frame); otherwise
frames are copied both ways. Either way the protoo protocol the client sees is B's;
media goes straight to B's announced addresses, which B's answers carry.

A refusal by B before the upgrade (401, 403, 400...) is A's refusal, with B's
status. When B closes the link, A closes the client with B's code; when B vanishes
(killed, unreachable) A closes it with 4002, "reconnect": the client reconnects
through any node and the room is placed again on a live one. A connection B's
address refuses (:class:`NodeRefused`: nothing listens, B died) lets A evict B
from the registry once B has missed a heartbeat, instead of waiting for its key
to expire (see ``ClusterNode.route``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Final

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from loguru import logger

from control.cluster.splice import HOLD_BYTES, Hold, Splice, SplicedResponse, UpstreamResponse, close_frame
from control.cluster.stopping import STOP_TIMEOUT, stop_tasks
from control.errors import BadRequest, Forbidden, ParleyError, Unauthorized, Unavailable
from control.signaling.protoo import CLOSE_RECONNECT

__all__ = ["PEER_NODE_HEADER", "PLACEMENT_HEADER", "RELAY_HEADER", "NodeRefused", "Relay", "RoomMoved", "relay_token"]

#: The header a relaying node sends: proof that the connection comes from a node of the cluster.
RELAY_HEADER: Final = "X-Parley-Relay"
#: Sent with a relay whose room's node the relaying node remembered instead of asking
#: Redis: the receiving node confirms it hosts (or now owns) the room, else 421.
PLACEMENT_HEADER: Final = "X-Parley-Placement"
SUBPROTOCOL: Final = "protoo"
#: With the relay token: the client goes to a satellite of the room whose origin this names.
ORIGIN_HEADER: Final = "X-Parley-Origin"
#: With the relay token: the client's peer is this node's (a mirror where it connected,
#: cascade): served here, never sent on again.
PEER_NODE_HEADER: Final = "X-Parley-Peer-Node"
#: WebSocket pings on both legs (as signaling's own).
HEARTBEAT: Final = 20.0
#: Close codes that cannot be sent on the wire (they describe a link that died).
_UNSENDABLE: Final = frozenset({1005, 1006, 1015})
#: Headers forwarded to the owner: how the client authenticated.
_FORWARDED: Final = (hdrs.AUTHORIZATION, hdrs.COOKIE)


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


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> tuple[int | None, str]:
    """Copy frames until ``source`` closes; its close code and reason (None if it died)."""
    while True:
        message = await source.receive()
        try:
            if message.type is WSMsgType.TEXT:
                await sink.send_str(message.data)
                continue
            if message.type is WSMsgType.BINARY:
                await sink.send_bytes(message.data)
                continue
        except (ConnectionError, RuntimeError):
            return None, ""  # the other leg is gone: its own pump reports it
        if message.type is WSMsgType.CLOSE:
            return int(message.data), str(message.extra or "")
        if message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None, ""


def _spliceable(request: web.Request, upstream: aiohttp.ClientWebSocketResponse) -> bool:
    """Can the two legs' bytes pass through unparsed? Both legs must speak the same
    subprotocol with no extension (none is asked of the room's node, none granted to the
    client: ``compress=False``)."""
    return upstream.protocol == SUBPROTOCOL and SUBPROTOCOL in _offered(request) and not upstream.compress


def _offered(request: web.Request) -> set[str]:
    """The subprotocols the client asks for."""
    return {p.strip() for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")}


class Relay:
    """The relayed connections of this node (closed when it shuts down)."""

    def __init__(self, session: aiohttp.ClientSession, token: str, max_frame_bytes: int) -> None:
        self.session = session
        self.token = token
        self.max_msg_size = max_frame_bytes * 4
        self.clients: set[web.WebSocketResponse] = set()

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
    ) -> web.WebSocketResponse:
        """Serve ``request`` (a protoo upgrade) through the node at ``node_url``
        (``remembered``: a placement not read from Redis now, for that node to confirm;
        ``origin``: that node hosts a satellite of the room whose origin this is: cascade;
        ``peers_node``: that node holds the client's peer, :data:`PEER_NODE_HEADER`)."""
        log = logger.bind(room=request.query.get("roomId"), peer=request.query.get("peerId"))
        # A spliced link has no pings of this node's own (B's pongs would go to the
        # client, unread by this node): the room's node pings the client through it.
        heartbeat = None if SUBPROTOCOL in _offered(request) else HEARTBEAT
        upstream = await self._connect(request, node_url, remembered, origin, heartbeat, peers_node)
        hold = upstream.hold if isinstance(upstream, UpstreamResponse) else None
        if hold is not None and _spliceable(request, upstream):
            return await self._splice(request, upstream, hold, node_id)
        if hold is not None:
            hold.attach(hold.reader)  # frames parsed as aiohttp does, from the first byte
        client = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,), max_msg_size=self.max_msg_size, heartbeat=HEARTBEAT, compress=False
        )
        try:
            await client.prepare(request)
        except BaseException:
            await upstream.close()
            raise
        log.info("cluster: connection from {} relayed to node {}", request.remote, node_id)
        self.clients.add(client)
        try:
            await self._run(client, upstream, node_id)
        finally:
            self.clients.discard(client)
        return client

    async def _splice(
        self, request: web.Request, upstream: aiohttp.ClientWebSocketResponse, hold: Hold, node_id: str
    ) -> web.WebSocketResponse:
        """Answer the client's upgrade, then pass the bytes through (:mod:`.splice`)."""
        client = SplicedResponse(protocols=(SUBPROTOCOL,), max_msg_size=self.max_msg_size)
        try:
            await client.prepare(request)
        except BaseException:
            await upstream.close()
            raise
        connection = upstream._response.connection
        reconnect = close_frame(CLOSE_RECONNECT, f"node {node_id} is gone, reconnect")
        if connection is None or connection.protocol is None:  # released: the room's node went away
            await client.close(code=CLOSE_RECONNECT, message=reconnect[4:])
            await upstream.close()
            return client
        splice = Splice(request.protocol, connection.protocol, reconnect)
        hold.attach(splice.upstream)
        client.attach(splice.client)
        logger.bind(room=request.query.get("roomId"), peer=request.query.get("peerId")).info(
            "cluster: connection from {} relayed to node {} (spliced)", request.remote, node_id
        )
        self.clients.add(client)
        try:
            await splice.done
        finally:
            self.clients.discard(client)
            splice.close()
            await upstream.close()  # its socket is closed: this releases the connection
        return client

    async def _connect(
        self,
        request: web.Request,
        node_url: str,
        remembered: bool = False,
        origin: str | None = None,
        heartbeat: float | None = HEARTBEAT,
        peers_node: bool = False,
    ) -> aiohttp.ClientWebSocketResponse:
        headers = {RELAY_HEADER: self.token}
        if remembered:
            headers[PLACEMENT_HEADER] = "remembered"
        if origin is not None:
            headers[ORIGIN_HEADER] = origin
        if peers_node:
            headers[PEER_NODE_HEADER] = "1"
        headers.update({name: request.headers[name] for name in _FORWARDED if name in request.headers})
        url = f"{node_url.rstrip('/')}/ws?{request.query_string}"
        hold = HOLD_BYTES.set(True)  # the bytes wait raw until relay() splices or parses them
        try:
            return await self.session.ws_connect(
                url,
                protocols=(SUBPROTOCOL,),
                headers=headers,
                heartbeat=heartbeat,
                max_msg_size=self.max_msg_size,
                compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as error:
            raise _refusal(error.status, node_url) from None
        except aiohttp.ClientConnectorError as error:
            logger.warning("cluster: room's node {} unreachable: {}", node_url, error.os_error)
            if isinstance(error.os_error, ConnectionRefusedError):
                raise NodeRefused("the room's node is gone, try again") from None
            raise Unavailable("the room's node is unreachable, try again") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            logger.warning("cluster: room's node {} unreachable: {!r}", node_url, error)
            raise Unavailable("the room's node is unreachable, try again") from None
        finally:
            HOLD_BYTES.reset(hold)

    async def _run(
        self, client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, node_id: str
    ) -> None:
        """Copy frames both ways; when one side closes, close the other with its code."""
        down = asyncio.ensure_future(_pump(upstream, client))
        up = asyncio.ensure_future(_pump(client, upstream))
        try:
            done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            if down in done:  # the owner closed (or vanished)
                code, reason = down.result()
                if code is None or code in _UNSENDABLE:
                    code, reason = CLOSE_RECONNECT, f"node {node_id} is gone, reconnect"
                await client.close(code=code, message=reason.encode()[:120])
            else:
                code, reason = up.result()
                if code is None or code in _UNSENDABLE:
                    code = WSCloseCode.OK
                await upstream.close(code=code, message=reason.encode()[:120])
        finally:
            for task in (down, up):
                task.cancel()
            await asyncio.gather(down, up, return_exceptions=True)
            if not upstream.closed:
                await upstream.close()

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

"""The signaling WebSocket: ``GET /?roomId=...&peerId=...`` (also ``/ws``), subprotocol ``protoo``.

mediasoup-demo's clients connect to ``wss://host:port/?roomId=R&peerId=P``;
both query parameters are required (400 without them), as is the ``protoo``
subprotocol. ``roomId`` must follow the room id rule and ``peerId`` the peer id
rule of :mod:`control.ids` (400 with the rule otherwise, before the upgrade: no
room is created).

Access (issue 14), also before the upgrade and before any room exists: the
caller's principal (``?token=JWT``, ``Authorization: Bearer``, the sign-in
cookie, or the open/dev principal: :func:`control.auth.principal_of`) must
exist (401 ``token_missing``/``token_invalid``/``token_expired``... from the auth
middleware) and may join this room as this peerId (403 ``wrong_room``,
``missing_grant``, ``wrong_identity``: :func:`control.auth.require_ws_join`); when
the peerId is live in the room, the caller must be allowed to take its session
over (403, :func:`control.rooms.room.check_takeover`). Refusals are the one JSON
error shape. The principal is verified here only: a token that expires during
the call does not end it; a reconnect needs a valid one.

In a cluster (``REDIS_URL``, :mod:`control.cluster`), the :data:`ROOM_ROUTER` first
says where the room lives: a room hosted by another node is relayed there (after
the router checked the caller's credentials; that node checks the rest).

Limits, also before the upgrade: a new room on a node with ``MAX_ROOMS`` rooms,
or a new peer in a room with ``MAX_PEERS_PER_ROOM`` peers, is refused with 429
(``rooms_limit``, ``peers_limit``: :mod:`control.rooms.limits`).

The room is created on first connection, once the upgrade has succeeded (a
connection that fails during the handshake makes nothing), and the peer is
attached to it at once; a refusal then (a limit reached in between, a media
worker that fails) closes the socket with 1013 or 1008, the reason starting with
the error's code. A socket that does not ``join`` within
``SIGNALING_JOIN_TIMEOUT_SECONDS`` is closed and its peer leaves (and its room,
if it was alone). The socket then carries protoo
requests to :meth:`control.rooms.room.Room.handle_request` until it closes, and
the peer is detached (grace period, see ``control.rooms``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import WSCloseCode, hdrs, web
from loguru import logger

from control.auth import Principal, principal_of, require_ws_join
from control.errors import ParleyError, TooManyRequests
from control.ids import PEER_ID_RULE, ROOM_ID_RULE, is_valid_peer_id, is_valid_room_id
from control.keys import ROOMS, SETTINGS
from control.rooms import limits
from control.rooms.room import check_takeover
from control.signaling.observe import REQUEST_OBSERVER, observed
from control.signaling.protoo import ProtooConnection, RateLimit
from workers.errors import MediasoupError

if TYPE_CHECKING:
    from loguru import Logger

    from control.rooms.manager import RoomManager

__all__ = ["ROOM_ROUTER", "RoomRouter", "protoo_websocket", "routes"]

SUBPROTOCOL = "protoo"
#: WebSocket ping interval: a silent dead client is noticed (and enters its grace period).
HEARTBEAT = 20.0
#: Hard limit = this many times SIGNALING_MAX_FRAME_BYTES (aiohttp closes with 1009).
HARD_LIMIT_FACTOR = 4

routes = web.RouteTableDef()


class RoomRouter(Protocol):
    """Where a room lives (``control.cluster``): ``None`` to serve it here (then the
    checks below run), else the response that served the connection elsewhere (a
    relay, once the caller's principal may join the room as this peerId)."""

    async def route(self, request: web.Request, room_id: str) -> web.StreamResponse | None: ...


#: Set by ``control.cluster.setup`` when the node is part of a cluster (``REDIS_URL``).
ROOM_ROUTER: Final[web.AppKey[RoomRouter]] = web.AppKey("room_router")


def _bad_request(text: str) -> web.Response:
    return web.Response(status=400, text=text)


async def _admitted(request: web.Request, manager: RoomManager, room_id: str, peer_id: str, log: Logger) -> Principal:
    """The caller's principal if it may connect to ``room_id`` as ``peer_id`` and there is
    room for it (ParleyError otherwise: 401/403, 429 ``rooms_limit``/``peers_limit``)."""
    try:
        principal = await principal_of(request)
        require_ws_join(principal, room_id, peer_id)
        room = manager.get_room(room_id)
        live = room.peers.get(peer_id) if room is not None else None
        if live is not None:
            check_takeover(live, principal)
        elif room is not None:
            limits.check_peers(room.peers, manager.settings)
        else:
            limits.check_rooms(manager, manager.rooms, manager.settings)
    except ParleyError as error:
        log.warning("signaling: connection from {} refused: {} ({})", request.remote, error.code, error.message)
        raise
    return principal


async def _refuse(ws: web.WebSocketResponse, error: Exception, log: Logger) -> None:
    """Close an accepted socket whose peer could not be attached: 1013 (try again later)
    for a limit or a media worker that failed, 1008 for a refusal; the reason starts
    with the error's stable code."""
    if isinstance(error, ParleyError):
        log.warning("signaling: connection refused: {} ({})", error.message, error.code)
        retry = isinstance(error, TooManyRequests) or error.status >= 500
        code = WSCloseCode.TRY_AGAIN_LATER if retry else WSCloseCode.POLICY_VIOLATION
        reason = f"{error.code}: {error.message}"
    else:
        log.error("signaling: room not created: {}", error)
        code, reason = WSCloseCode.TRY_AGAIN_LATER, "unavailable: room could not be created"
    await ws.close(code=code, message=reason.encode()[:120])


async def protoo_websocket(request: web.Request) -> web.StreamResponse:
    room_id = request.query.get("roomId", "")
    peer_id = request.query.get("peerId", "")
    if not room_id or not peer_id:
        logger.warning("signaling: connection from {} without roomId and/or peerId", request.remote)
        return _bad_request("Connection request without roomId and/or peerId")
    if not is_valid_room_id(room_id):
        logger.warning("signaling: connection from {} with an invalid roomId", request.remote)
        return _bad_request(f"Invalid roomId: it must be {ROOM_ID_RULE}")
    if not is_valid_peer_id(peer_id):
        logger.warning("signaling: connection from {} with an invalid peerId", request.remote)
        return _bad_request(f"Invalid peerId: it must be {PEER_ID_RULE}")
    if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
        return _bad_request("WebSocket (subprotocol protoo) expected")
    offered = [p.strip() for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")]
    if SUBPROTOCOL not in offered:
        logger.warning("signaling: connection from {} without the protoo subprotocol", request.remote)
        return _bad_request("Invalid/missing Sec-WebSocket-Protocol (protoo expected)")
    manager = request.app.get(ROOMS)
    if manager is None or manager.closed:
        raise web.HTTPServiceUnavailable(text="rooms are not running")
    log = logger.bind(room=room_id, peer=peer_id)
    router = request.app.get(ROOM_ROUTER)
    if router is not None and (elsewhere := await router.route(request, room_id)) is not None:
        return elsewhere  # the room lives on another node of the cluster (its limits apply there)
    principal = await _admitted(request, manager, room_id, peer_id, log)
    settings = request.app[SETTINGS]
    max_frame = settings.signaling_max_frame_bytes
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        max_msg_size=max_frame * HARD_LIMIT_FACTOR,
        heartbeat=HEARTBEAT,
        compress=False,
    )
    # The upgrade first: a connection that fails before the 101 has made nothing.
    try:
        await ws.prepare(request)
    except ConnectionError:
        log.info("signaling: connection from {} closed during the upgrade", request.remote)
        # Not ``ws``: aiohttp would close it, and it never opened. This answer goes nowhere.
        return web.Response(status=400, text="connection closed during the upgrade")
    connection = ProtooConnection(
        ws,
        max_frame_bytes=max_frame,
        request_timeout=settings.signaling_request_timeout_seconds,
        rate=RateLimit(settings.signaling_requests_per_second, settings.signaling_request_burst),
        max_depth=settings.signaling_max_json_depth,
        log=log,
    )
    log.info("signaling: connection from {} ({})", request.remote, principal.method)
    try:
        # Nothing is awaited between the room's creation and the attach: a room is
        # never left without the peer it was made for (Room.create also closes an
        # unused room after SIGNALING_JOIN_TIMEOUT_SECONDS, whatever happened).
        room = await manager.get_or_create_room(room_id)
        peer = room.attach(peer_id, connection, principal)
    except (MediasoupError, ParleyError) as error:
        await _refuse(ws, error, log)
        return ws

    async def handle(method: str, data: dict[str, Any]) -> object:
        return await peer.room.handle_request(peer, method, data)

    observer = request.app.get(REQUEST_OBSERVER)  # metrics, when installed
    try:
        await connection.run(observed(handle, observer) if observer is not None else handle)
    finally:
        peer.room.detach(peer, connection)
    return ws


# GET / is shared with the meeting page: control.web hands upgrades (and ?roomId=/peerId=) here.
routes.get("/ws")(protoo_websocket)

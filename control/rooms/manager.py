"""The rooms of this process, and the WebRtcServer of every worker.

:class:`RoomManager` creates a room on its first connection (concurrent first
connections to one ``roomId`` share one creation), forgets it when it closes,
and runs one WebRtcServer per worker (one UDP and one TCP port from the RTC
port range, on ``MEDIASOUP_LISTEN_IP``, announcing
``MEDIASOUP_ANNOUNCED_ADDRESS``), recreated when the pool respawns a worker.
A WebRtcServer that could not be created (its ports taken, the listen address
not up yet) is retried with backoff until it is, never cached as a failure for
good; meanwhile new rooms go to workers whose server is up, and a request that
needs the failed one gets the last error.

It is the rooms' :class:`~control.rooms.host.RoomHost`. Its ``observer``
emits ``roomcreated(room)``, ``roomclosed(room)`` and ``roomnotified(room, method,
data, exclude)`` (:meth:`RoomManager.notify_room`); each room's own
``observer`` emits what happens in it (``peerjoined``, ``peerupdated``,
``peerleft``, ``producercreated``, ``dataproducercreated``, ``close``:
:mod:`control.rooms.host`).
:meth:`RoomManager.watch_rooms` subscribes to those of every room at once. A
peer's ``metadata`` (email, aiSettings, integrations) is there for the
listeners; it is never sent to other peers. Other services may add protoo
methods of their own (:meth:`RoomManager.register_method`) and notify a room's
peers (:meth:`RoomManager.notify_room`). Joins, leaves and room ends are
reported to the chat service (meetings and system messages) when it runs
(:func:`bridge_chat`).

:func:`rooms_ctx` builds the ``cleanup_ctx`` entry: it starts the manager
(after the worker pool) under ``ROOMS`` and, on shutdown, closes every room
(peers' WebSockets get 1001). :func:`close_connections` is an ``on_shutdown``
hook that does the same early, so aiohttp does not wait for open WebSockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web
from loguru import logger

from control.chat.validation import display_name_or, email_or_none
from control.config import Settings
from control.ids import validate_room_id
from control.keys import ROOMS, SETTINGS
from control.netaddr import with_announced_address
from control.retry import backoff_delays
from control.rooms.host import PEER_JOINED, PEER_LEFT, ExtraMethod, MethodHandler, RoomEvent
from control.rooms.peer import Peer
from control.rooms.room import Room
from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import InvalidStateError
from workers.router import Router
from workers.webrtc_server import WebRtcServer
from workers.worker import Worker
from workers.worker_pool import WorkerPool, worker_load

if TYPE_CHECKING:
    from control.chat.meetings import MeetingService
    from control.chat.service import ChatService

__all__ = ["RoomManager", "bridge_chat", "close_connections", "rooms_ctx"]

#: What :meth:`RoomManager.watch_rooms` calls: ``listener(room, *event_args)``.
RoomListener = Callable[..., None]

#: Backoff between attempts to create a worker's WebRtcServer (seconds).
SERVER_RETRY_INITIAL = 0.5
SERVER_RETRY_MAX = 30.0


class RoomManager:
    """The rooms of this process; the :class:`~control.rooms.host.RoomHost` of each."""

    def __init__(self, settings: Settings, pool: WorkerPool) -> None:
        self.settings = settings
        self.pool = pool
        self.rooms: dict[str, Room] = {}
        self.observer = EnhancedEventEmitter()
        self.closed = False
        self._creating: dict[str, asyncio.Future[Room]] = {}
        self._servers: dict[int, asyncio.Future[WebRtcServer]] = {}
        #: Per worker pid: the backoff of its WebRtcServer retries, and the pending retry.
        self._server_delays: dict[int, Iterator[float]] = {}
        self._server_retries: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        #: Extra protoo methods: name -> (handler, allowed before join).
        self.methods: dict[str, ExtraMethod] = {}

    # -- RoomHost -----------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self.closed

    @property
    def workers(self) -> Sequence[Worker]:
        return self.pool.workers

    def extra_method(self, name: str) -> ExtraMethod | None:
        return self.methods.get(name)

    # -- WebRtcServers ----------------------------------------------------------------

    def listen_infos(self) -> list[dict[str, Any]]:
        """UDP and TCP listen infos of a worker's WebRtcServer.

        The UDP socket gets ``MEDIASOUP_UDP_RECV_BUFFER_BYTES`` of receive buffer: every
        peer of the worker sends to that one socket, and the kernel's default (about
        200 KiB) fills in a fraction of a second whenever the worker is not scheduled (a
        busy core): the datagrams after that are dropped (``Udp RcvbufErrors``), audio
        loss for every subscriber (video is repaired by NACK)."""
        s = self.settings
        infos = []
        for protocol in ("udp", "tcp"):
            info: dict[str, Any] = {
                "protocol": protocol,
                "ip": s.mediasoup_listen_ip,
                "portRange": {"min": s.mediasoup_rtc_min_port, "max": s.mediasoup_rtc_max_port},
            }
            if s.mediasoup_announced_address:
                info["announcedAddress"] = s.mediasoup_announced_address
            if protocol == "udp" and s.mediasoup_udp_recv_buffer_bytes:
                info["recvBufferSize"] = s.mediasoup_udp_recv_buffer_bytes
            infos.append(info)
        return infos

    def plain_listen_info(self) -> dict[str, Any]:
        """Listen info of PlainTransports (broadcasters): UDP, RTC port range."""
        s = self.settings
        info: dict[str, Any] = {
            "protocol": "udp",
            "ip": s.mediasoup_listen_ip,
            "portRange": {"min": s.mediasoup_rtc_min_port, "max": s.mediasoup_rtc_max_port},
        }
        if s.mediasoup_announced_address:
            info["announcedAddress"] = s.mediasoup_announced_address
        if s.mediasoup_udp_recv_buffer_bytes:
            info["recvBufferSize"] = s.mediasoup_udp_recv_buffer_bytes
        return info

    def _start_server(self, worker: Worker) -> asyncio.Future[WebRtcServer]:
        future = asyncio.ensure_future(self._create_server(worker))
        self._servers[worker.pid] = future
        future.add_done_callback(lambda f: self._server_done(worker, f))
        return future

    def _server_done(self, worker: Worker, future: asyncio.Future[WebRtcServer]) -> None:
        """A failed attempt is retried after a backoff delay (not cached for good)."""
        if future.cancelled():
            return
        if future.exception() is None:
            self._server_delays.pop(worker.pid, None)
            return
        if self.closed or worker.closed or self._servers.get(worker.pid) is not future:
            return
        delays = self._server_delays.setdefault(worker.pid, backoff_delays(SERVER_RETRY_INITIAL, SERVER_RETRY_MAX))
        delay = next(delays)
        logger.bind(worker_pid=worker.pid).warning("WebRtcServer: next attempt in {:.1f}s", delay)
        loop = asyncio.get_running_loop()
        self._server_retries[worker.pid] = loop.call_later(delay, self._retry_server, worker, future)

    def _retry_server(self, worker: Worker, failed: asyncio.Future[WebRtcServer]) -> None:
        self._server_retries.pop(worker.pid, None)
        if not self.closed and not worker.closed and self._servers.get(worker.pid) is failed:
            self._start_server(worker)

    def server_ready(self, worker: Worker) -> bool:
        """Whether ``worker``'s WebRtcServer is up (or still being created, which
        normally succeeds): placement prefers those over workers whose last attempt
        failed."""
        future = self._servers.get(worker.pid)
        if future is None or not future.done():
            return future is not None
        return not future.cancelled() and future.exception() is None

    def _forget_server(self, pid: int) -> None:
        self._servers.pop(pid, None)
        self._server_delays.pop(pid, None)
        retry = self._server_retries.pop(pid, None)
        if retry is not None:
            retry.cancel()

    async def _create_server(self, worker: Worker) -> WebRtcServer:
        try:
            server = await worker.create_webrtc_server(self.listen_infos(), app_data={"workerPid": worker.pid})
        except Exception as error:
            logger.bind(worker_pid=worker.pid).error("WebRtcServer not created: {}", error)
            raise
        dump = await server.dump()
        ports = [f"{s['ip']}:{s['port']}/udp" for s in dump["udpSockets"]]
        ports += [f"{s['ip']}:{s['port']}/tcp" for s in dump["tcpServers"]]
        logger.bind(worker_pid=worker.pid).info(
            "WebRtcServer on {}{}",
            ", ".join(ports),
            f" announced as {self.settings.mediasoup_announced_address}"
            if self.settings.mediasoup_announced_address
            else "",
        )
        return server

    async def webrtc_server(self, worker: Worker) -> WebRtcServer:
        future = self._servers.get(worker.pid)
        if future is None:
            if worker.closed:
                raise InvalidStateError(f"worker {worker.pid} is closed")
            future = self._start_server(worker)
        return await asyncio.shield(future)

    def worker_load(self, worker: Worker) -> int:
        return worker_load(worker)

    async def pick_worker(self) -> Worker:
        """The least loaded live worker that answers (the pool pings it first) and
        whose WebRtcServer is up if any is (InvalidStateError when there is none)."""
        return await self.pool.pick_worker(prefer=self.server_ready)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self.settings = with_announced_address(self.settings)  # derived when unset (control/netaddr.py)
        if self.settings.mediasoup_listen_ip in ("0.0.0.0", "::") and not self.settings.mediasoup_announced_address:
            logger.warning(
                "MEDIASOUP_LISTEN_IP={} without MEDIASOUP_ANNOUNCED_ADDRESS: clients get ICE candidates they "
                "cannot reach; set MEDIASOUP_ANNOUNCED_ADDRESS to this host's reachable IP or name",
                self.settings.mediasoup_listen_ip,
            )
        # A failure is logged and retried in the background (see _server_done): the
        # other workers serve meanwhile.
        await asyncio.gather(*(self._start_server(w) for w in self.pool.workers), return_exceptions=True)
        self.pool.on("workerrespawned", self._on_worker_respawned)
        self.pool.on("workerdied", self._on_worker_died)

    def _on_worker_respawned(self, worker: Worker) -> None:
        if not self.closed:
            self._start_server(worker)

    def _on_worker_died(self, worker: Worker, routers: list[Router], error: Exception) -> None:
        self._forget_server(worker.pid)
        rooms = {r.app_data.get("roomId") for r in routers}
        logger.bind(worker_pid=worker.pid).error(
            "worker died ({}); {} room(s) affected: {}", error, len(rooms), ", ".join(sorted(map(str, rooms))) or "-"
        )

    async def close(self) -> None:
        self.closed = True
        for pid in list(self._server_retries):
            self._forget_server(pid)
        self.pool.remove_listener("workerrespawned", self._on_worker_respawned)
        self.pool.remove_listener("workerdied", self._on_worker_died)
        self.close_rooms()
        await asyncio.sleep(0)  # let the close_soon tasks run

    def close_rooms(self, code: int = WSCloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        for room in list(self.rooms.values()):
            room.close(code, reason)

    # -- rooms ------------------------------------------------------------------------

    def get_room(self, room_id: str) -> Room | None:
        room = self.rooms.get(room_id)
        return room if room is not None and not room.closed else None

    async def get_or_create_room(self, room_id: str) -> Room:
        """The open room ``room_id``, created on first use (once, however many ask).

        ``room_id`` must follow the room id rule (:class:`control.ids.InvalidId`
        otherwise; callers check it first to answer 400), so every room that exists
        can store its chat and its recordings."""
        validate_room_id(room_id)
        while True:
            if self.closed:
                raise InvalidStateError("server shutting down")
            room = self.get_room(room_id)
            if room is not None:
                return room
            creating = self._creating.get(room_id)
            if creating is None:
                creating = asyncio.ensure_future(Room.create(self, room_id))
                self._creating[room_id] = creating
                creating.add_done_callback(lambda f: self._created(room_id, f))
            created = await asyncio.shield(creating)
            if not created.closed:
                return created

    def _created(self, room_id: str, future: asyncio.Future[Room]) -> None:
        if self._creating.get(room_id) is future:
            del self._creating[room_id]
        if future.cancelled() or future.exception() is not None:
            return
        room = future.result()
        if self.closed:
            room.close()
            return
        self.rooms[room_id] = room
        self.observer.safe_emit("roomcreated", room)

    def room_closed(self, room: Room) -> None:
        if self.rooms.get(room.id) is room:
            del self.rooms[room.id]
        self.observer.safe_emit("roomclosed", room)

    def watch_rooms(self, listeners: Mapping[RoomEvent, RoomListener]) -> Callable[[], None]:
        """Subscribe ``listeners[event](room, *args)`` to the ``observer`` of every room,
        those open now and those created later; returns what unsubscribes them all."""
        subscribed: dict[Room, list[tuple[str, Callable[..., None]]]] = {}

        def follow(room: Room) -> None:
            pairs: list[tuple[str, Callable[..., None]]] = []
            for event, listener in listeners.items():

                def forward(*args: Any, _listener: RoomListener = listener) -> None:
                    _listener(room, *args)

                room.observer.on(event, forward)
                pairs.append((event, forward))
            subscribed[room] = pairs

        def forget(room: Room) -> None:
            subscribed.pop(room, None)

        def stop() -> None:
            self.observer.remove_listener("roomcreated", follow)
            self.observer.remove_listener("roomclosed", forget)
            for room, pairs in subscribed.items():
                for event, forward in pairs:
                    room.observer.remove_listener(event, forward)
            subscribed.clear()

        for room in self.rooms.values():
            follow(room)
        self.observer.on("roomcreated", follow)
        self.observer.on("roomclosed", forget)
        return stop

    # -- extensions ---------------------------------------------------------------------

    def register_method(self, name: str, handler: MethodHandler, *, before_join: bool = False) -> None:
        """Answer protoo requests ``name`` from peers with ``await handler(room, peer, data)``
        (the answer's data; raise a :class:`~control.errors.ParleyError` to refuse).
        For the room's other services (chat...); the demo's methods cannot be replaced.
        The grant it needs is in :data:`control.rooms.handlers.REQUIRED_GRANTS`, the one
        table of every method's grant (``roomJoin`` when it is not listed)."""
        from control.signaling.messages import REQUESTS

        if name in REQUESTS:
            raise ValueError(f"{name!r} is a built-in signaling method")
        self.methods[name] = (handler, before_join)

    def notify_room(self, room_id: str, method: str, data: dict[str, Any], exclude: str | None = None) -> int:
        """Notify every joined peer of the room (but ``exclude``); how many were."""
        room = self.get_room(room_id)
        if room is None:
            return 0
        peers = [p for p in room.joined_peers() if p.id != exclude]
        for peer in peers:
            peer.notify(method, data)
        # The room's other nodes (control.cluster.cascade) tell theirs.
        self.observer.safe_emit("roomnotified", room, method, data, exclude)
        return len(peers)


def bridge_chat(manager: RoomManager, chat: ChatService | None = None, meetings: MeetingService | None = None) -> None:
    """Report joins, leaves and room ends to the chat service (meeting records and
    "<name> joined/left" system messages), or to the meetings service alone.

    Calls for one room run one after the other, in the order things happened; a
    failure is logged and the call goes on without the record. A name or e-mail the
    meeting record would refuse is cleaned, not a reason to drop the join.
    """
    queues: dict[str, asyncio.Future[None]] = {}

    def run_in_order(room_id: str, what: str, make: Callable[[], Awaitable[Any]]) -> None:
        previous = queues.get(room_id)

        async def call() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await make()
            except Exception as error:  # noqa: BLE001
                logger.bind(room=room_id).warning("chat/meetings: {} not recorded: {}", what, error)

        task = asyncio.ensure_future(call())
        queues[room_id] = task
        task.add_done_callback(lambda t: queues.get(room_id) is t and queues.pop(room_id))
        manager._tasks.add(task)
        task.add_done_callback(manager._tasks.discard)

    def joined(room: Room, peer: Peer) -> None:
        if peer.node is not None:
            return  # another node's participant (control.cluster.cascade): its node records it
        name, email = display_name_or(peer.display_name, peer.id), email_or_none(peer.metadata.email)
        if chat is not None:
            run_in_order(room.id, "join", lambda: chat.participant_joined(room.id, peer.id, name, email))
        elif meetings is not None:
            run_in_order(room.id, "join", lambda: meetings.join(room.id, peer.id, name, email))

    def left(room: Room, peer: Peer) -> None:
        if peer.node is not None:
            return  # another node's participant: its node records it
        if chat is not None:
            run_in_order(room.id, "leave", lambda: chat.participant_left(room.id, peer.id))
        elif meetings is not None:
            run_in_order(room.id, "leave", lambda: meetings.leave(room.id, peer.id))

    def closed(room: Room) -> None:
        if room.origin is not None:
            return  # a satellite (control.cluster.cascade): the meeting goes on at the room's origin
        if chat is not None:
            run_in_order(room.id, "end", lambda: chat.room_closed(room.id))
        elif meetings is not None:
            run_in_order(room.id, "end", lambda: meetings.end(room.id))

    manager.watch_rooms({PEER_JOINED: joined, PEER_LEFT: left})
    manager.observer.on("roomclosed", closed)


def rooms_ctx(
    pool: web.AppKey[WorkerPool],
    chat: web.AppKey[ChatService] | None = None,
    meetings: web.AppKey[MeetingService] | None = None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The ``cleanup_ctx`` entry of the rooms: start the room manager on the worker
    pool under ``pool``, report to the chat (or meetings) service under ``chat``
    (``meetings``) when it runs; close every room on exit."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        manager = RoomManager(app[SETTINGS], app[pool])
        await manager.start()
        app[ROOMS] = manager
        chat_service = app.get(chat) if chat is not None else None
        meeting_service = app.get(meetings) if meetings is not None else None
        if chat_service is not None or meeting_service is not None:
            bridge_chat(manager, chat_service, meeting_service)
        try:
            yield
        finally:
            await manager.close()
            if manager._tasks:
                await asyncio.wait(list(manager._tasks), timeout=5)
            logger.info("rooms closed")

    return ctx


async def close_connections(app: web.Application) -> None:
    """``on_shutdown``: close every room now, so open WebSockets end (1001)."""
    manager = app.get(ROOMS)
    if manager is not None:
        manager.closed = True
        manager.close_rooms()

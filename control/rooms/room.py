"""A room: who is in it and how long it lives, with mediasoup-demo's ``Room.js`` semantics.

A room owns a primary router (on the least loaded worker, with an
AudioLevelObserver and an ActiveSpeakerObserver) where every producer lives;
further routers on other workers carry consumers once one worker is full
(:mod:`control.rooms.spreading`). Its peers talk protoo: their requests are
answered by :mod:`control.rooms.handlers`; consumers are made by
:mod:`control.rooms.consumers`; a worker death is survived by
:mod:`control.rooms.recovery`; operators' views are :mod:`control.rooms.views`.

Membership, as in mediasoup-demo:

- a peer reconnecting with the same ``peerId`` takes over the session (the old
  socket is closed with 4000); a ``join`` on it is a re-join. Only the same
  identity may (:func:`check_takeover`): a token (or sign-in) whose ``sub`` is the
  ``peerId``; a connection without credentials (open and dev modes) takes over only
  a peer that had none either. A refused attempt changes nothing in the session;
- a ``hidden`` peer (``video.hidden``) is not announced: no ``newPeer`` or
  ``peerClosed``, absent from ``join`` answers (:meth:`Room.visible_participants`)
  and from the room's ``peerjoined``/``peerupdated``/``peerleft`` events (so no
  meeting record, chat system message or recording tile either);
- a WebSocket that drops (no close frame: network loss, ping timeout) keeps
  the peer for ``PEER_RECONNECT_GRACE_SECONDS``; then it leaves. A client that
  closes its socket itself leaves at once;
- a participant (peer or broadcaster) leaves through :meth:`Room.leave` only;
  the room closes with its last peer, through :meth:`Room.close` only.

The room talks to its host through :class:`~control.rooms.host.RoomHost` and
reports on its own ``observer`` (:data:`~control.rooms.host.RoomEvent`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from loguru import logger

from control.auth import AuthMethod, Principal
from control.errors import Conflict, Forbidden
from control.rooms import handlers, limits, views
from control.rooms.codecs import AUDIO_LEVEL_OPTIONS, MEDIA_CODECS
from control.rooms.consumers import sync_consumers
from control.rooms.host import CLOSE, DOMINANT_SPEAKER, PEER_JOINED, PEER_LEFT, RoomHost
from control.rooms.peer import Peer
from control.rooms.recovery import Recovery
from control.rooms.spreading import Spreading, consumer_count
from control.signaling.protoo import CLOSE_REPLACED, ProtooConnection
from workers.active_speaker_observer import ActiveSpeakerObserver
from workers.audio_level_observer import AudioLevelObserver
from workers.data_producer import DataProducer
from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import MediasoupError
from workers.native import MEDIASOUP_VERSION
from workers.producer import Producer
from workers.router import Router
from workers.worker import Worker

__all__ = ["Room", "check_takeover"]

#: Principals without credentials (``AUTH_OPEN_JOIN`` and dev mode): they may claim any peerId.
_ANONYMOUS = frozenset({AuthMethod.OPEN, AuthMethod.DEV})


def check_takeover(peer: Peer, principal: Principal) -> None:
    """May a new connection of ``principal`` take over the live session of ``peer``?

    Raise :class:`~control.errors.Forbidden` (nothing is changed) unless it is the same
    identity: an authenticated principal whose identity is the peerId, or a principal
    without credentials replacing one without credentials (the open modes, where
    anyone may be anyone). A reconnect may not change whether the peer is hidden
    (the others were, or were not, told about it).
    """
    if principal.method in _ANONYMOUS:
        if peer.principal.method not in _ANONYMOUS:
            raise Forbidden(
                f'peerId "{peer.id}" belongs to an authenticated participant: reconnect with an access token for it',
                code="wrong_identity",
            )
    elif principal.identity != peer.id:
        raise Forbidden("access token is for another participant (sub is not peerId)", code="wrong_identity")
    if peer.joined and principal.hidden != peer.hidden:
        raise Forbidden("a reconnect cannot change whether the participant is hidden", code="hidden_changed")


class Room:
    def __init__(self, host: RoomHost, room_id: str) -> None:
        self.id = room_id
        self.host = host
        self.log = logger.bind(room=room_id)
        #: ``peerjoined(peer)``, ``peerupdated(peer)``, ``peerleft(peer)``,
        #: ``producercreated(peer, producer)``, ``dataproducercreated(peer, dataProducer)``,
        #: ``dominantspeaker(peerId)``, ``close()``
        #: (see control.rooms.host).
        self.observer = EnhancedEventEmitter()
        self.routers: list[Router] = []
        self.audio_level_observer: AudioLevelObserver | None = None
        self.active_speaker_observer: ActiveSpeakerObserver | None = None
        self.dominant_speaker: str | None = None
        self.peers: dict[str, Peer] = {}
        self.broadcasters: dict[str, Peer] = {}
        #: Cascading (control.cluster.cascade): the room's origin node when this is a
        #: satellite of a room hosted elsewhere; the nodes holding satellites of it.
        self.origin: str | None = None
        self.satellites: set[str] = set()
        self.closed = False
        self.created_at = time.time()
        self.spreading = Spreading(self)
        self.recovery = Recovery(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unused_timer: asyncio.TimerHandle | None = None

    # -- creation -------------------------------------------------------------------

    @classmethod
    async def create(cls, host: RoomHost, room_id: str) -> Room:
        """A new room with its primary router (429 ``rooms_limit`` at ``MAX_ROOMS``).

        A room nobody is in once ``SIGNALING_JOIN_TIMEOUT_SECONDS`` have passed
        closes: whatever made it (a connection that failed before attaching) cannot
        leave it open for good."""
        limits.check_rooms(host, host.rooms, host.settings)
        room = cls(host, room_id)
        with limits.creating_room(host):
            await room.build()
        room._unused_timer = asyncio.get_running_loop().call_later(
            host.settings.signaling_join_timeout_seconds, room._close_if_unused
        )
        room.log.info("room created on worker {}", room.primary.worker.pid)
        return room

    def _close_if_unused(self) -> None:
        self._unused_timer = None
        local_broadcasters = [b for b in self.broadcasters.values() if b.node is None]
        if not self.closed and not self.peers and not local_broadcasters and not self.satellites:
            self.log.warning("nobody entered the room, closing it")
            self.close()

    @property
    def primary(self) -> Router:
        return self.routers[0]

    async def new_router(self, worker: Worker) -> Router:
        """A router of the room on ``worker`` (which must be able to carry WebRTC)."""
        await self.host.webrtc_server(worker)
        router = await worker.create_router(MEDIA_CODECS, app_data={"roomId": self.id})
        router.on("workerclose", lambda: self.recovery.router_died(router))
        return router

    async def build(self) -> None:
        """A primary router on the least loaded worker, with its RTP observers."""
        router = await self.new_router(await self.host.pick_worker())
        try:
            audio_level = await router.create_audio_level_observer(**AUDIO_LEVEL_OPTIONS)
            active_speaker = await router.create_active_speaker_observer()
        except BaseException:
            router.close()
            raise
        self.routers = [router]
        self.audio_level_observer = audio_level
        self.active_speaker_observer = active_speaker
        audio_level.on("volumes", self._on_volumes)
        audio_level.on("silence", self._on_silence)
        active_speaker.on("dominantspeaker", self._on_dominant_speaker)

    # -- participants ---------------------------------------------------------------

    def participants(self) -> list[Peer]:
        """Every peer and broadcaster of the room."""
        return [*self.peers.values(), *self.broadcasters.values()]

    def joined_peers(self, exclude: Peer | None = None) -> list[Peer]:
        return [p for p in self.peers.values() if p.joined and p is not exclude and not p.closed]

    def visible_participants(self, exclude: Peer | None = None) -> list[Peer]:
        """Whom the others are told about: joined peers that are not hidden, then broadcasters."""
        return [*(p for p in self.joined_peers(exclude) if not p.hidden), *self.broadcasters.values()]

    def get_participant(self, peer_id: str) -> Peer | None:
        """A peer or broadcaster of the room (for the room's other services)."""
        return self.peers.get(peer_id) or self.broadcasters.get(peer_id)

    def attach(self, peer_id: str, connection: ProtooConnection, principal: Principal | None = None) -> Peer:
        """A WebSocket of ``principal`` (verified at the upgrade: it may join this room as
        ``peer_id``) arrived: a new peer, or it takes over the existing one if
        :func:`check_takeover` allows (its old socket, if still open, is closed with 4000).
        Without ``principal`` (in-process callers) the peer is a full participant."""
        assert not self.closed
        peer = self.peers.get(peer_id)
        if peer is None:
            if peer_id in self.broadcasters:
                raise Conflict(f'peerId "{peer_id}" is a broadcaster of this room')
            limits.check_peers(self.peers, self.host.settings)
            peer = Peer(self, peer_id, principal=principal)
            self.peers[peer_id] = peer
            peer.log.info("peer connected")
        else:
            if principal is not None:
                check_takeover(peer, principal)
                peer.principal = principal
            peer.cancel_grace()
            old = peer.connection
            if old is not None and not old.closed:
                peer.log.warning("peer reconnected with the same peerId: the new connection replaces the old one")
                old.close_soon(CLOSE_REPLACED, "replaced by a new connection with the same peerId")
            else:
                peer.log.info("peer reconnected within its grace period")
        peer.connection = connection
        peer.generation += 1
        connection.notify("mediasoup-version", {"version": MEDIASOUP_VERSION})
        peer.flush_backlog()
        if peer.joined:
            self.spawn(sync_consumers(self, peer))
        else:
            self._start_join_timer(peer)
        return peer

    def _start_join_timer(self, peer: Peer) -> None:
        """A socket that does not ``join`` within ``SIGNALING_JOIN_TIMEOUT_SECONDS``
        is closed and its peer leaves (with the room, if it was alone)."""
        peer.cancel_join_timer()
        timeout = self.host.settings.signaling_join_timeout_seconds
        peer.join_timer = asyncio.get_running_loop().call_later(timeout, self._join_timed_out, peer, timeout)

    def _join_timed_out(self, peer: Peer, timeout: float) -> None:
        peer.join_timer = None
        if peer.joined or peer.closed or self.closed:
            return
        peer.log.warning("peer did not join within {:g}s, closing its connection", timeout)
        if peer.connection is not None:
            peer.connection.close_soon(CLOSE_REPLACED, f"no join within {timeout:g}s")
        self.leave(peer)

    def detach(self, peer: Peer, connection: ProtooConnection) -> None:
        """The WebSocket ``connection`` of ``peer`` ended."""
        if peer.connection is not connection or peer.closed or self.closed:
            return
        peer.connection = None
        grace = self.host.settings.peer_reconnect_grace_seconds
        if connection.client_closed:
            # A close frame from the client is a deliberate leave (tab closed,
            # protoo peer.close()): no grace, as in mediasoup-demo.
            peer.log.info("peer closed its connection (code {})", connection.close_code)
            self.leave(peer)
        elif grace > 0 and not self.host.closing:
            peer.log.info("peer disconnected (code {}); kept {:g}s for a reconnect", connection.close_code, grace)
            peer.grace_timer = asyncio.get_running_loop().call_later(grace, self._grace_expired, peer)
        else:
            peer.log.info("peer disconnected (code {})", connection.close_code)
            self.leave(peer)

    def _grace_expired(self, peer: Peer) -> None:
        peer.grace_timer = None
        if not peer.connected and not peer.closed and not self.closed:
            peer.log.info("peer did not reconnect within its grace period")
            self.leave(peer)

    def add_broadcaster(self, broadcaster: Peer) -> None:
        """A broadcaster (always joined) enters: the peers see a new peer
        (429 ``broadcasters_limit`` at ``MAX_BROADCASTERS_PER_ROOM``)."""
        if broadcaster.id in self.broadcasters or broadcaster.id in self.peers:
            raise Conflict(f'broadcaster with id "{broadcaster.id}" already exists')
        limits.check_broadcasters(self.broadcasters, self.host.settings)
        self.broadcasters[broadcaster.id] = broadcaster
        for peer in self.joined_peers():
            peer.notify("newPeer", broadcaster.info())
        broadcaster.log.info("broadcaster created")
        self.observer.safe_emit(PEER_JOINED, broadcaster)

    def leave(self, participant: Peer, *, tell_others: bool = True) -> None:
        """The one way a peer or a broadcaster leaves: the others get ``peerClosed``
        (unless ``tell_others`` is false: a worker death, they reconnect anyway), its
        transports and connection close, ``peerleft``; the last peer closes the room."""
        if participant.closed:
            return
        participant.closed = True
        participant.cancel_grace()
        participant.cancel_join_timer()
        members = self.broadcasters if participant.broadcaster else self.peers
        if members.get(participant.id) is participant:
            del members[participant.id]
        announced = participant.joined and not participant.hidden
        if announced and tell_others:
            for other in self.joined_peers(exclude=participant):
                other.notify("peerClosed", {"peerId": participant.id})
        for transport in list(participant.transports.values()):
            transport.close()
        if participant.connection is not None and not participant.connection.closed:
            participant.connection.close_soon(CLOSE_REPLACED, "peer closed")
        participant.log.info("{} left", "broadcaster" if participant.broadcaster else "peer")
        if announced and participant.node is None:  # a mirror of another node's peer: that node reports it
            self.observer.safe_emit(PEER_LEFT, participant)
        if not participant.broadcaster and not self.peers and not self.satellites:
            self.log.info("last peer left, closing the room")
            self.close()

    # -- lifecycle ------------------------------------------------------------------

    def close(self, code: int = CLOSE_REPLACED, reason: str = "room closed") -> None:
        """Close the room: every connection, transport and router (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self._unused_timer is not None:
            self._unused_timer.cancel()
            self._unused_timer = None
        for peer in list(self.peers.values()):
            peer.cancel_grace()
            peer.cancel_join_timer()
            peer.closed = True
            if peer.connection is not None:
                peer.connection.close_soon(code, reason)
        for broadcaster in self.broadcasters.values():
            broadcaster.closed = True
        for router in self.routers:
            router.close()
        for task in list(self._tasks):
            task.cancel()
        self.spreading.forget_pipes()
        self.recovery.room_closed()
        self.log.info("room closed")
        self.observer.safe_emit(CLOSE)
        self.host.room_closed(self)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` for the room (cancelled when it closes; a failure is logged)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.opt(exception=task.exception()).error("room task failed: {}", task.exception())

    # -- media ----------------------------------------------------------------------

    async def handle_request(self, peer: Peer, method: str, data: dict[str, Any]) -> Any:
        """Answer one protoo request of ``peer`` (raises ParleyErrors)."""
        return await handlers.handle_request(self, peer, method, data)

    async def make_available(self, entity: Producer | DataProducer, router: Router, *, data: bool = False) -> None:
        """Have a producer (or data producer) on ``router``, piped there when it lives elsewhere."""
        await self.spreading.make_available(entity, router, data=data)

    def consumer_count(self, router: Router) -> int:
        """Consumers of peers and broadcasters on ``router`` (pipe consumers excluded)."""
        return consumer_count(router)

    async def observe_audio(self, producer: Producer) -> None:
        """Feed an audio producer of the primary router to the RTP observers."""
        for observer in (self.audio_level_observer, self.active_speaker_observer):
            if observer is None:
                continue
            try:
                await observer.add_producer(producer.id)
            except MediasoupError as error:
                self.log.debug("RTP observer did not take producer {}: {}", producer.id, error)

    def _on_volumes(self, volumes: list[dict[str, Any]]) -> None:
        entry = volumes[0]
        peer_id = entry["producer"].app_data.get("peerId")
        for peer in self.joined_peers():
            peer.notify("activeSpeaker", {"peerId": peer_id, "volume": entry["volume"]})

    def _on_silence(self) -> None:
        for peer in self.joined_peers():
            peer.notify("activeSpeaker", {"peerId": None})

    def _on_dominant_speaker(self, event: dict[str, Any]) -> None:
        self.dominant_speaker = event["producer"].app_data.get("peerId")
        self.log.debug("dominant speaker {}", self.dominant_speaker)
        if self.dominant_speaker:
            self.observer.safe_emit(DOMINANT_SPEAKER, self.dominant_speaker)

    # -- views ----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return views.summary(self)

    def describe(self) -> dict[str, Any]:
        return views.describe(self)

    def __repr__(self) -> str:
        return f"<Room id={self.id!r} peers={len(self.peers)} closed={self.closed}>"

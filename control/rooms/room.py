"""A room: its peers, its routers, and mediasoup-demo's ``Room.js`` semantics.

One room owns a primary router (on the least loaded worker, with an
AudioLevelObserver and an ActiveSpeakerObserver) where every producer lives,
and, once its consumers on one worker pass ``ROOM_CONSUMERS_PER_WORKER``,
further routers on other workers for new consuming transports; producers reach
them through ``pipe_to_router`` on first use.

Peers talk protoo (:mod:`control.signaling`); every request of theirs lands in
:meth:`Room.handle_request`. As in mediasoup-demo:

- transports may be created before ``join``; everything that produces or
  consumes needs a join (403 otherwise);
- joining creates consumers of every producer (and data producer) of the other
  joined peers and broadcasters; a new producer is consumed by every other
  joined peer;
- a consumer is created paused, announced with a ``newConsumer`` request, and
  resumed (then, for video, a key frame requested) once the client accepted;
- a peer reconnecting with the same ``peerId`` takes over the session (the old
  socket is closed with 4000); a ``join`` on it is a re-join that drops what the
  earlier connections created, without ``peerClosed``/``newPeer`` churn;
- a WebSocket that drops (no close frame: network loss, ping timeout) keeps
  the peer for ``PEER_RECONNECT_GRACE_SECONDS``; then its media is closed and
  the others get ``peerClosed``. A client that closes its socket itself
  leaves at once. The room closes with its last peer.

A worker that dies takes routers of the room with it: the room is rebuilt on a
live worker and every peer's socket is closed with 4002 ("reconnect"); the
peers stay in their grace period, so reconnecting and re-joining restores the
call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from loguru import logger

from control.rooms.codecs import (
    AUDIO_LEVEL_OPTIONS,
    INITIAL_AVAILABLE_OUTGOING_BITRATE,
    MAX_INCOMING_BITRATE,
    MAX_SCTP_MESSAGE_SIZE,
    MEDIA_CODECS,
)
from control.rooms.peer import ParticipantMetadata, Peer
from control.signaling import messages as m
from control.signaling.protoo import CLOSE_RECONNECT, CLOSE_REPLACED, ProtooConnection, ProtooError
from workers.errors import (
    ChannelTimeoutError,
    InvalidStateError,
    MediasoupError,
    MediasoupTypeError,
    NotFoundError,
    UnsupportedError,
)
from workers.native import MEDIASOUP_VERSION
from workers.wire import clone

if TYPE_CHECKING:
    from control.rooms.manager import RoomManager

#: How long a rebuild after a worker death waits for a live worker.
REBUILD_TIMEOUT = 30.0
#: How long a request waits for a room being rebuilt.
READY_TIMEOUT = 35.0


@contextlib.contextmanager
def worker_errors(what: str) -> Iterator[None]:
    """Turn the worker layer's exceptions into protoo error responses."""
    try:
        yield
    except ProtooError:
        raise
    except (MediasoupTypeError, UnsupportedError) as error:
        raise ProtooError(400, f"{what}: {error}") from None
    except NotFoundError as error:
        raise ProtooError(404, f"{what}: {error}") from None
    except ChannelTimeoutError as error:
        raise ProtooError(504, f"{what}: media worker did not answer ({error})") from None
    except InvalidStateError as error:
        raise ProtooError(503, f"{what}: media worker unavailable ({error})") from None
    except MediasoupError as error:  # the worker refused the request
        raise ProtooError(400, f"{what}: {error}") from None


class Room:
    def __init__(self, manager: "RoomManager", room_id: str) -> None:
        self.id = room_id
        self.manager = manager
        self.settings = manager.settings
        self.log = logger.bind(room=room_id)
        self.routers: list[Any] = []
        self.audio_level_observer: Any = None
        self.active_speaker_observer: Any = None
        self.dominant_speaker: str | None = None
        self.peers: dict[str, Peer] = {}
        self.broadcasters: dict[str, Peer] = {}
        self.closed = False
        self.created_at = time.time()
        self._ready = asyncio.Event()
        self._rebuild_task: asyncio.Task | None = None
        self._router_lock = asyncio.Lock()
        self._pipes: dict[tuple[str, str], asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- creation -------------------------------------------------------------------

    @classmethod
    async def create(cls, manager: "RoomManager", room_id: str) -> "Room":
        room = cls(manager, room_id)
        await room._build()
        room._ready.set()
        room.log.info("room created on worker {}", room.primary.worker.pid)
        return room

    @property
    def primary(self) -> Any:
        return self.routers[0]

    async def _new_router(self, worker: Any) -> Any:
        await self.manager.webrtc_server(worker)  # the worker must be able to carry WebRTC
        router = await worker.create_router(MEDIA_CODECS, app_data={"roomId": self.id})
        router.on("workerclose", lambda: self._on_router_died(router))
        return router

    async def _build(self) -> None:
        """A primary router on the least loaded worker, with its RTP observers."""
        router = await self._new_router(await self.manager.pick_worker())
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

    # -- peers and connections ------------------------------------------------------

    def joined_peers(self, exclude: Peer | None = None) -> list[Peer]:
        return [p for p in self.peers.values() if p.joined and p is not exclude and not p.closed]

    def get_participant(self, peer_id: str) -> Peer | None:
        """A peer or broadcaster of the room (for the room's other services)."""
        return self.peers.get(peer_id) or self.broadcasters.get(peer_id)

    def attach(self, peer_id: str, connection: ProtooConnection) -> Peer:
        """A WebSocket for ``peer_id`` arrived: a new peer, or it takes over the
        existing one (its old socket, if still open, is closed with 4000)."""
        assert not self.closed
        peer = self.peers.get(peer_id)
        if peer is None:
            if peer_id in self.broadcasters:
                raise ProtooError(409, f'peerId "{peer_id}" is a broadcaster of this room')
            peer = Peer(self, peer_id)
            self.peers[peer_id] = peer
            peer.log.info("peer connected")
        else:
            if peer.grace_timer is not None:
                peer.grace_timer.cancel()
                peer.grace_timer = None
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
            self._spawn(self._sync_consumers(peer))
        return peer

    def detach(self, peer: Peer, connection: ProtooConnection) -> None:
        """The WebSocket ``connection`` of ``peer`` ended."""
        if peer.connection is not connection or peer.closed or self.closed:
            return
        peer.connection = None
        grace = self.settings.peer_reconnect_grace_seconds
        if connection.client_closed:
            # A close frame from the client is a deliberate leave (tab closed,
            # protoo peer.close()): no grace, as in mediasoup-demo.
            peer.log.info("peer closed its connection (code {})", connection.close_code)
            self.close_peer(peer)
        elif grace > 0 and not self.manager.closed:
            peer.log.info("peer disconnected (code {}); kept {:g}s for a reconnect", connection.close_code, grace)
            peer.grace_timer = asyncio.get_running_loop().call_later(grace, self._grace_expired, peer)
        else:
            peer.log.info("peer disconnected (code {})", connection.close_code)
            self.close_peer(peer)

    def _grace_expired(self, peer: Peer) -> None:
        peer.grace_timer = None
        if not peer.connected and not peer.closed and not self.closed:
            peer.log.info("peer did not reconnect within its grace period")
            self.close_peer(peer)

    def close_peer(self, peer: Peer) -> None:
        """The peer leaves: others get ``peerClosed``, its transports close."""
        if peer.closed:
            return
        peer.closed = True
        if peer.grace_timer is not None:
            peer.grace_timer.cancel()
            peer.grace_timer = None
        self.peers.pop(peer.id, None)
        if peer.joined:
            for other in self.joined_peers(exclude=peer):
                other.notify("peerClosed", {"peerId": peer.id})
        for transport in list(peer.transports.values()):
            transport.close()
        if peer.connection is not None and not peer.connection.closed:
            peer.connection.close_soon(CLOSE_REPLACED, "peer closed")
        peer.log.info("peer left")
        if peer.joined:
            self.manager.observer.safe_emit("peerleft", self, peer)
        if not self.peers:
            self.log.info("last peer left, closing the room")
            self.close()

    def close(self, code: int = CLOSE_REPLACED, reason: str = "room closed") -> None:
        """Close the room: every connection, transport and router."""
        if self.closed:
            return
        self.closed = True
        for peer in list(self.peers.values()):
            if peer.grace_timer is not None:
                peer.grace_timer.cancel()
            peer.closed = True
            if peer.connection is not None:
                peer.connection.close_soon(code, reason)
        for broadcaster in self.broadcasters.values():
            broadcaster.closed = True
        for router in self.routers:
            router.close()
        for task in list(self._tasks):
            task.cancel()
        # A rebuild in progress is not cancelled mid-request (it would orphan a
        # router in the worker): it sees the room closed and closes what it made.
        self._pipes.clear()
        self._ready.set()
        self.log.info("room closed")
        self.manager.room_closed(self)

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.opt(exception=task.exception()).error("room task failed: {}", task.exception())

    # -- requests -------------------------------------------------------------------

    async def handle_request(self, peer: Peer, method: str, data: dict[str, Any]) -> Any:
        """Answer one protoo request of ``peer`` (raises ProtooError)."""
        extra = self.manager.methods.get(method) if method not in m.REQUESTS else None
        if extra is not None:
            handler, before_join = extra
            if not before_join and not peer.joined:
                raise ProtooError(403, "Peer not yet joined")
            return await handler(self, peer, data)
        request = m.parse(method, data)
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT)
            except asyncio.TimeoutError:
                raise ProtooError(503, "room is being rebuilt, try again") from None
        if self.closed or peer.closed:
            raise ProtooError(410, "peer closed")
        if method not in m.BEFORE_JOIN and not peer.joined:
            raise ProtooError(403, "Peer not yet joined")
        handler = getattr(self, f"_on_{method}")
        return await handler(peer, request)

    def _transport(self, peer: Peer, transport_id: str) -> Any:
        transport = peer.transports.get(transport_id)
        if transport is None:
            raise ProtooError(404, f'transport with id "{transport_id}" not found')
        return transport

    def _webrtc_transport(self, peer: Peer, transport_id: str) -> Any:
        transport = self._transport(peer, transport_id)
        if transport.type != "webrtc":
            raise ProtooError(400, f'transport with id "{transport_id}" is not a WebRtcTransport')
        return transport

    @staticmethod
    def _find(table: dict[str, Any], what: str, item_id: str) -> Any:
        item = table.get(item_id)
        if item is None:
            raise ProtooError(404, f'{what} with id "{item_id}" not found')
        return item

    async def _on_getRouterRtpCapabilities(self, peer: Peer, request: m.Empty) -> Any:
        return self.primary.rtp_capabilities

    async def _on_join(self, peer: Peer, request: m.Join) -> Any:
        if peer.joined and peer.joined_generation == peer.generation:
            raise ProtooError(409, "Peer already joined")
        rejoin = peer.joined
        old_name = peer.display_name
        if rejoin:
            # A reconnected client starting over: drop what its earlier connections made.
            for transport in list(peer.transports.values()):
                if transport.app_data.get("generation", 0) < peer.generation:
                    transport.close()
        peer.display_name = request.displayName
        peer.device = request.device or {}
        peer.rtp_capabilities = request.rtpCapabilities
        peer.sctp_capabilities = request.sctpCapabilities
        peer.metadata = ParticipantMetadata(
            email=request.email, ai_settings=request.aiSettings, integrations=request.integrations
        )
        peer.joined = True
        peer.joined_generation = peer.generation
        if peer.joined_at is None:
            peer.joined_at = time.time()
        others = [*self.joined_peers(exclude=peer), *self.broadcasters.values()]
        peer.log.info("peer {} ({} others in the room)", "re-joined" if rejoin else "joined", len(others))
        if not rejoin:
            for other in self.joined_peers(exclude=peer):
                other.notify("newPeer", peer.info())
            self.manager.observer.safe_emit("peerjoined", self, peer)
        elif old_name != peer.display_name:
            for other in self.joined_peers(exclude=peer):
                other.notify(
                    "peerDisplayNameChanged",
                    {"peerId": peer.id, "displayName": peer.display_name, "oldDisplayName": old_name},
                )
        # Consumers are created after the answer is queued (the spawned task runs later).
        self._spawn(self._sync_consumers(peer))
        return {"peers": [other.info() for other in others]}

    async def _on_createWebRtcTransport(self, peer: Peer, request: m.CreateWebRtcTransport) -> Any:
        return await self.create_webrtc_transport(
            peer, producing=request.producing, consuming=request.consuming,
            sctp_capabilities=request.sctpCapabilities, force_tcp=request.forceTcp,
        )

    async def create_webrtc_transport(
        self, peer: Peer, *, producing: bool, consuming: bool, sctp_capabilities: Any, force_tcp: bool = False
    ) -> dict[str, Any]:
        with worker_errors("createWebRtcTransport"):
            router = await self._router_for(producing=producing, consuming=consuming)
            server = await self.manager.webrtc_server(router.worker)
            transport = await router.create_webrtc_transport(
                webrtc_server=server,
                enable_udp=not force_tcp,
                enable_tcp=True,
                prefer_udp=not force_tcp,
                initial_available_outgoing_bitrate=INITIAL_AVAILABLE_OUTGOING_BITRATE,
                enable_sctp=bool(sctp_capabilities),
                max_send_message_size=MAX_SCTP_MESSAGE_SIZE,
                max_receive_message_size=MAX_SCTP_MESSAGE_SIZE,
                app_data={"producing": producing, "consuming": consuming, "peerId": peer.id,
                          "generation": peer.generation},
            )
        if peer.closed or self.closed:
            transport.close()
            raise ProtooError(410, "peer closed")
        peer.transports[transport.id] = transport
        transport.observer.on("close", lambda: peer.transports.pop(transport.id, None))
        transport.on("dtlsstatechange", lambda state: self._on_dtls_state(peer, transport, state))
        transport.on("trace", lambda trace: self._on_transport_trace(peer, trace))
        try:
            await transport.enable_trace_event(["bwe"])
            if producing:
                await transport.set_max_incoming_bitrate(MAX_INCOMING_BITRATE)
        except MediasoupError as error:
            peer.log.warning("transport options not applied: {}", error)
        return {
            "id": transport.id,
            "iceParameters": clone(transport.ice_parameters),
            "iceCandidates": clone(transport.ice_candidates),
            "dtlsParameters": clone(transport.dtls_parameters),
            "sctpParameters": clone(transport.sctp_parameters),
        }

    @staticmethod
    def _on_dtls_state(peer: Peer, transport: Any, state: str) -> None:
        if state == "failed":
            peer.log.warning("WebRtcTransport {} DTLS failed", transport.id)
        elif state == "closed":
            peer.log.debug("WebRtcTransport {} DTLS closed", transport.id)

    @staticmethod
    def _on_transport_trace(peer: Peer, trace: dict[str, Any]) -> None:
        if trace.get("type") == "bwe" and trace.get("direction") == "out":
            info = trace.get("info") or {}
            peer.notify("downlinkBwe", {
                "desiredBitrate": info.get("desiredBitrate"),
                "effectiveDesiredBitrate": info.get("effectiveDesiredBitrate"),
                "availableBitrate": info.get("availableBitrate"),
            })

    async def _on_connectWebRtcTransport(self, peer: Peer, request: m.ConnectWebRtcTransport) -> Any:
        transport = self._webrtc_transport(peer, request.transportId)
        with worker_errors("connectWebRtcTransport"):
            await transport.connect(dtls_parameters=request.dtlsParameters.model_dump())
        return None

    async def _on_restartIce(self, peer: Peer, request: m.TransportId) -> Any:
        transport = self._webrtc_transport(peer, request.transportId)
        with worker_errors("restartIce"):
            return await transport.restart_ice()

    async def _on_produce(self, peer: Peer, request: m.Produce) -> Any:
        transport = self._transport(peer, request.transportId)
        producer = await self.produce(peer, transport, request.kind, request.rtpParameters,
                                      request.appData, request.paused)
        return {"id": producer.id}

    async def produce(self, peer: Peer, transport: Any, kind: str, rtp_parameters: Any,
                      app_data: dict[str, Any] | None = None, paused: bool = False) -> Any:
        """Create a producer of ``peer`` and have every other joined peer consume it."""
        # As the demo: peerId in appData tells the audio level observer whose it is.
        app_data = {**(app_data or {}), "peerId": peer.id}
        with worker_errors("produce"):
            producer = await transport.produce(kind, rtp_parameters, app_data=app_data, paused=paused)
        if peer.closed or self.closed:
            producer.close()
            raise ProtooError(410, "peer closed")
        peer.producers[producer.id] = producer
        producer.observer.on("close", lambda: peer.producers.pop(producer.id, None))
        producer.on("score", lambda score: peer.notify("producerScore", {"producerId": producer.id, "score": score}))
        peer.log.info("{} producer {} created", kind, producer.id)
        self.manager.observer.safe_emit("producercreated", self, peer, producer)
        for other in self.joined_peers(exclude=peer):
            self._spawn(self._create_consumer(other, peer, producer))
        if kind == "audio" and producer.transport.router is self.primary:
            self._spawn(self._observe(producer))
        return producer

    async def _observe(self, producer: Any) -> None:
        for observer in (self.audio_level_observer, self.active_speaker_observer):
            try:
                await observer.add_producer(producer.id)
            except MediasoupError as error:
                self.log.debug("RTP observer did not take producer {}: {}", producer.id, error)

    async def _on_closeProducer(self, peer: Peer, request: m.ProducerId) -> Any:
        producer = self._find(peer.producers, "producer", request.producerId)
        producer.close()
        peer.producers.pop(producer.id, None)
        return None

    async def _on_pauseProducer(self, peer: Peer, request: m.ProducerId) -> Any:
        producer = self._find(peer.producers, "producer", request.producerId)
        with worker_errors("pauseProducer"):
            await producer.pause()
        return None

    async def _on_resumeProducer(self, peer: Peer, request: m.ProducerId) -> Any:
        producer = self._find(peer.producers, "producer", request.producerId)
        with worker_errors("resumeProducer"):
            await producer.resume()
        return None

    async def _on_pauseConsumer(self, peer: Peer, request: m.ConsumerId) -> Any:
        consumer = self._find(peer.consumers, "consumer", request.consumerId)
        with worker_errors("pauseConsumer"):
            await consumer.pause()
        return None

    async def _on_resumeConsumer(self, peer: Peer, request: m.ConsumerId) -> Any:
        consumer = self._find(peer.consumers, "consumer", request.consumerId)
        with worker_errors("resumeConsumer"):
            await consumer.resume()
        return None

    async def _on_setConsumerPreferredLayers(self, peer: Peer, request: m.SetConsumerPreferredLayers) -> Any:
        consumer = self._find(peer.consumers, "consumer", request.consumerId)
        with worker_errors("setConsumerPreferredLayers"):
            await consumer.set_preferred_layers(request.spatialLayer, request.temporalLayer)
        return None

    async def _on_setConsumerPriority(self, peer: Peer, request: m.SetConsumerPriority) -> Any:
        consumer = self._find(peer.consumers, "consumer", request.consumerId)
        with worker_errors("setConsumerPriority"):
            await consumer.set_priority(request.priority)
        return None

    async def _on_requestConsumerKeyFrame(self, peer: Peer, request: m.ConsumerId) -> Any:
        consumer = self._find(peer.consumers, "consumer", request.consumerId)
        with worker_errors("requestConsumerKeyFrame"):
            await consumer.request_key_frame()
        return None

    async def _on_produceData(self, peer: Peer, request: m.ProduceData) -> Any:
        transport = self._transport(peer, request.transportId)
        data_producer = await self.produce_data(
            peer, transport, request.sctpStreamParameters, request.label, request.protocol, request.appData
        )
        return {"id": data_producer.id}

    async def produce_data(self, peer: Peer, transport: Any, sctp_stream_parameters: Any, label: str,
                           protocol: str, app_data: dict[str, Any] | None) -> Any:
        app_data = {**(app_data or {}), "peerId": peer.id}
        with worker_errors("produceData"):
            data_producer = await transport.produce_data(
                sctp_stream_parameters, label=label, protocol=protocol, app_data=app_data
            )
        if peer.closed or self.closed:
            data_producer.close()
            raise ProtooError(410, "peer closed")
        peer.data_producers[data_producer.id] = data_producer
        data_producer.observer.on("close", lambda: peer.data_producers.pop(data_producer.id, None))
        if label != "bot":
            for other in self.joined_peers(exclude=peer):
                self._spawn(self._create_data_consumer(other, peer, data_producer))
        return data_producer

    async def _on_changeDisplayName(self, peer: Peer, request: m.ChangeDisplayName) -> Any:
        old, peer.display_name = peer.display_name, request.displayName
        for other in self.joined_peers(exclude=peer):
            other.notify("peerDisplayNameChanged",
                         {"peerId": peer.id, "displayName": peer.display_name, "oldDisplayName": old})
        self.manager.observer.safe_emit("peerupdated", self, peer)
        return None

    async def _on_getTransportStats(self, peer: Peer, request: m.TransportId) -> Any:
        transport = self._transport(peer, request.transportId)
        with worker_errors("getTransportStats"):
            return await transport.get_stats()

    async def _on_getProducerStats(self, peer: Peer, request: m.ProducerId) -> Any:
        producer = self._find(peer.producers, "producer", request.producerId)
        with worker_errors("getProducerStats"):
            return await producer.get_stats()

    async def _on_getConsumerStats(self, peer: Peer, request: m.ConsumerId) -> Any:
        consumer = self._find(peer.consumers, "consumer", request.consumerId)
        with worker_errors("getConsumerStats"):
            return await consumer.get_stats()

    async def _on_getDataProducerStats(self, peer: Peer, request: m.DataProducerId) -> Any:
        data_producer = self._find(peer.data_producers, "dataProducer", request.dataProducerId)
        with worker_errors("getDataProducerStats"):
            return await data_producer.get_stats()

    async def _on_getDataConsumerStats(self, peer: Peer, request: m.DataConsumerId) -> Any:
        data_consumer = self._find(peer.data_consumers, "dataConsumer", request.dataConsumerId)
        with worker_errors("getDataConsumerStats"):
            return await data_consumer.get_stats()

    # -- consumers ------------------------------------------------------------------

    async def _sync_consumers(self, peer: Peer) -> None:
        """Consume every producer of the others that ``peer`` does not consume yet
        (after a join, and after a reconnect that resumes the session)."""
        consumed = peer.consumed_producer_ids()
        for other in [*self.joined_peers(exclude=peer), *self.broadcasters.values()]:
            for producer in list(other.producers.values()):
                if producer.id not in consumed:
                    self._spawn(self._create_consumer(peer, other, producer))
            for data_producer in list(other.data_producers.values()):
                if data_producer.id not in consumed and data_producer.label != "bot":
                    self._spawn(self._create_data_consumer(peer, other, data_producer))

    async def _make_available(self, entity: Any, router: Any, *, data: bool = False) -> None:
        """Pipe a producer (or data producer) into ``router`` unless it is there already."""
        source = entity.transport.router
        table = router.data_producers if data else router.producers
        if source is router or entity.id in table:
            return
        key = (entity.id, router.id)
        future = self._pipes.get(key)
        if future is None:
            options = {"data_producer_id": entity.id} if data else {"producer_id": entity.id}
            future = asyncio.ensure_future(source.pipe_to_router(router=router, **options))
            self._pipes[key] = future

            def done(f: asyncio.Future) -> None:
                if f.cancelled() or f.exception() is not None:
                    if self._pipes.get(key) is f:
                        del self._pipes[key]
                    return
                piped = f.result()["pipeDataProducer" if data else "pipeProducer"]
                piped.observer.on("close", lambda: self._pipes.get(key) is f and self._pipes.pop(key))

            future.add_done_callback(done)
            self.log.info("piping {} {} to router on worker {}", "data producer" if data else "producer",
                          entity.id, router.worker.pid)
        await asyncio.shield(future)

    async def _create_consumer(self, consumer_peer: Peer, producer_peer: Peer, producer: Any) -> None:
        """mediasoup-demo's ``_createConsumer``: paused, announced, resumed."""
        if consumer_peer.closed or not consumer_peer.joined or consumer_peer.broadcaster:
            return
        if not consumer_peer.connected:
            return  # created by the resync when it reconnects
        caps = consumer_peer.rtp_capabilities
        if not caps or producer.closed or producer.id in consumer_peer.consumed_producer_ids():
            return
        transport = consumer_peer.consuming_transport()
        if transport is None:
            consumer_peer.log.debug("no transport for consuming yet: producer {} not consumed", producer.id)
            return
        consumer_peer.consuming.add(producer.id)
        try:
            await self._make_available(producer, transport.router)
            # consume() refuses what the peer cannot receive (router.can_consume()
            # would check the capabilities a second time per consumer).
            consumer = await transport.consume(producer.id, caps, paused=True,
                                               app_data={"peerId": consumer_peer.id})
        except UnsupportedError as error:
            consumer_peer.log.debug("cannot consume producer {}: {}", producer.id, error)
            return
        except Exception as error:  # noqa: BLE001 - one consumer failing must not affect others
            consumer_peer.log.warning("consumer of producer {} not created: {}", producer.id, error)
            self._retry_on_new_transport(consumer_peer, transport, self._create_consumer(
                consumer_peer, producer_peer, producer))
            return
        finally:
            consumer_peer.consuming.discard(producer.id)
        if consumer_peer.closed or transport.closed or self.closed:
            consumer.close()
            self._retry_on_new_transport(consumer_peer, transport, self._create_consumer(
                consumer_peer, producer_peer, producer))
            return
        consumer_id = consumer.id
        consumer_peer.consumers[consumer_id] = consumer
        consumer.observer.on("close", lambda: consumer_peer.consumers.pop(consumer_id, None))
        consumer.on("producerclose",
                    lambda: consumer_peer.notify("consumerClosed", {"consumerId": consumer_id}))
        consumer.on("producerpause",
                    lambda: consumer_peer.notify("consumerPaused", {"consumerId": consumer_id}))
        consumer.on("producerresume",
                    lambda: consumer_peer.notify("consumerResumed", {"consumerId": consumer_id}))
        consumer.on("score",
                    lambda score: consumer_peer.notify("consumerScore", {"consumerId": consumer_id, "score": score}))
        consumer.on("layerschange", lambda layers: consumer_peer.notify("consumerLayersChanged", {
            "consumerId": consumer_id,
            "spatialLayer": layers.get("spatialLayer") if layers else None,
            "temporalLayer": layers.get("temporalLayer") if layers else None,
        }))
        connection = consumer_peer.connection
        try:
            await consumer_peer.request("newConsumer", {
                "peerId": producer_peer.id,
                "producerId": producer.id,
                "id": consumer_id,
                "kind": consumer.kind,
                "rtpParameters": clone(consumer.rtp_parameters),
                "type": consumer.type,
                "appData": clone(producer.app_data),
                "producerPaused": consumer.producer_paused,
            })
            if consumer.closed:
                return
            # Now that the client is ready for it, let the media flow.
            await consumer.resume()
            if consumer.kind == "video":
                await consumer.request_key_frame()
            consumer_peer.notify("consumerScore", {"consumerId": consumer_id, "score": consumer.score})
        except (ProtooError, ConnectionError, asyncio.TimeoutError) as error:
            consumer_peer.log.warning("newConsumer {} not accepted ({}: {}); closing it",
                                      consumer_id, type(error).__name__, error)
            if not consumer.closed:
                consumer.close()
                consumer_peer.notify("consumerClosed", {"consumerId": consumer_id})
            if isinstance(error, ConnectionError) and consumer_peer.connected \
                    and consumer_peer.connection is not connection:
                # The peer reconnected meanwhile: offer it on the new connection.
                self._spawn(self._create_consumer(consumer_peer, producer_peer, producer))
        except MediasoupError as error:
            consumer_peer.log.warning("consumer {} not resumed: {}", consumer_id, error)

    def _retry_on_new_transport(self, peer: Peer, transport: Any, coro: Any) -> None:
        """A consumer was being created on a transport that closed meanwhile (a
        re-join): create it again on the peer's new consuming transport, if any."""
        current = peer.consuming_transport()
        if transport.closed and not peer.closed and not self.closed and current is not None \
                and current is not transport:
            self._spawn(coro)
        else:
            coro.close()

    async def _create_data_consumer(self, consumer_peer: Peer, producer_peer: Peer | None, data_producer: Any) -> None:
        """mediasoup-demo's ``_createDataConsumer``."""
        if consumer_peer.closed or not consumer_peer.joined or consumer_peer.broadcaster:
            return
        if not consumer_peer.connected or not consumer_peer.sctp_capabilities:
            return
        if data_producer.closed or data_producer.id in consumer_peer.consumed_producer_ids():
            return
        transport = consumer_peer.consuming_transport()
        if transport is None or not transport.sctp_parameters:
            consumer_peer.log.debug("no SCTP transport for consuming: data producer {} not consumed", data_producer.id)
            return
        consumer_peer.consuming.add(data_producer.id)
        try:
            await self._make_available(data_producer, transport.router, data=True)
            data_consumer = await transport.consume_data(data_producer.id, app_data={"peerId": consumer_peer.id})
        except Exception as error:  # noqa: BLE001
            consumer_peer.log.warning("data consumer of {} not created: {}", data_producer.id, error)
            self._retry_on_new_transport(consumer_peer, transport, self._create_data_consumer(
                consumer_peer, producer_peer, data_producer))
            return
        finally:
            consumer_peer.consuming.discard(data_producer.id)
        if consumer_peer.closed or transport.closed or self.closed:
            data_consumer.close()
            self._retry_on_new_transport(consumer_peer, transport, self._create_data_consumer(
                consumer_peer, producer_peer, data_producer))
            return
        dc_id = data_consumer.id
        consumer_peer.data_consumers[dc_id] = data_consumer
        data_consumer.observer.on("close", lambda: consumer_peer.data_consumers.pop(dc_id, None))
        data_consumer.on("dataproducerclose",
                         lambda: consumer_peer.notify("dataConsumerClosed", {"dataConsumerId": dc_id}))
        connection = consumer_peer.connection
        try:
            await consumer_peer.request("newDataConsumer", {
                "peerId": producer_peer.id if producer_peer is not None else None,
                "dataProducerId": data_producer.id,
                "id": dc_id,
                "sctpStreamParameters": data_consumer.sctp_stream_parameters,
                "label": data_consumer.label,
                "protocol": data_consumer.protocol,
                "appData": clone(data_producer.app_data),
            })
        except (ProtooError, ConnectionError, asyncio.TimeoutError) as error:
            consumer_peer.log.warning("newDataConsumer {} not accepted ({}); closing it", dc_id, error)
            if not data_consumer.closed:
                data_consumer.close()
                consumer_peer.notify("dataConsumerClosed", {"dataConsumerId": dc_id})
            if isinstance(error, ConnectionError) and consumer_peer.connected \
                    and consumer_peer.connection is not connection:
                self._spawn(self._create_data_consumer(consumer_peer, producer_peer, data_producer))

    # -- spreading over workers -------------------------------------------------------

    def consumer_count(self, router: Any) -> int:
        """Consumers of peers and broadcasters on ``router`` (pipe consumers excluded)."""
        return sum(len(t.consumers) for t in router.transports.values() if t.type != "pipe")

    def _estimated_consumers(self, router: Any) -> int:
        """Consumers on ``router`` counting each consuming transport as at least
        one consumer per producer of the room (what it will soon consume)."""
        owners = [*self.peers.values(), *self.broadcasters.values()]
        producers = sum(len(p.producers) for p in owners)
        own = {p.id: len(p.producers) for p in owners}
        total = 0
        for transport in router.transports.values():
            if transport.type == "pipe":
                continue
            n = len(transport.consumers)
            if transport.app_data.get("consuming"):
                n = max(n, producers - own.get(transport.app_data.get("peerId"), 0))
            total += n
        return total

    async def _router_for(self, *, producing: bool, consuming: bool) -> Any:
        """Producing transports use the primary router; consuming-only ones the
        first router under ``ROOM_CONSUMERS_PER_WORKER``, a new one on another
        worker when all are full (when there is one)."""
        if producing or not consuming or len(self.manager.pool.workers) < 2:
            return self.primary
        limit = self.settings.room_consumers_per_worker
        async with self._router_lock:
            for router in self.routers:
                if not router.closed and self._estimated_consumers(router) < limit:
                    return router
            used = {router.worker for router in self.routers}
            candidates = [w for w in self.manager.pool.workers if w not in used]
            if not candidates:
                return min(self.routers, key=self._estimated_consumers)
            worker = min(candidates, key=lambda w: (self.manager.worker_load(w), len(w.routers)))
            router = await self._new_router(worker)
            if self.closed:
                router.close()
                raise ProtooError(410, "room closed")
            self.routers.append(router)
            self.log.info("room spreads to worker {} ({} routers, limit {} consumers per worker)",
                          worker.pid, len(self.routers), limit)
            return router

    # -- RTP observers --------------------------------------------------------------

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

    # -- worker death -----------------------------------------------------------------

    def _on_router_died(self, router: Any) -> None:
        if self.closed or self._rebuild_task is not None:
            return
        self.log.error("media worker {} died under the room; rebuilding it on a live worker", router.worker.pid)
        self._ready.clear()
        self._rebuild_task = asyncio.ensure_future(self._rebuild())

    async def _rebuild(self) -> None:
        try:
            for router in self.routers:
                router.close()
            self._pipes.clear()
            for peer in [*self.peers.values(), *self.broadcasters.values()]:
                for table in (peer.transports, peer.producers, peer.consumers,
                              peer.data_producers, peer.data_consumers):
                    table.clear()
                peer.consuming.clear()
            for broadcaster in list(self.broadcasters.values()):
                broadcaster.closed = True
                broadcaster.log.warning("broadcaster dropped: its media worker died")
                self.manager.observer.safe_emit("peerleft", self, broadcaster)
            self.broadcasters.clear()
            # Tell everyone to reconnect; their peers wait in the grace period.
            for peer in self.peers.values():
                if peer.connection is not None:
                    peer.connection.close_soon(CLOSE_RECONNECT, "media worker died, reconnect")
            deadline = time.monotonic() + REBUILD_TIMEOUT
            while not self.closed:
                try:
                    await self._build()
                    break
                except (InvalidStateError, MediasoupError) as error:
                    if time.monotonic() > deadline:
                        raise
                    self.log.warning("room rebuild waiting for a live worker: {}", error)
                    await asyncio.sleep(0.25)
            if self.closed:  # everyone left meanwhile
                for router in self.routers:
                    router.close()
                self._rebuild_task = None
                return
            self.log.info("room rebuilt on worker {}", self.primary.worker.pid)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001
            self.log.error("room could not be rebuilt: {}; closing it", error)
            self._rebuild_task = None
            self.close(1011, "media worker died and the room could not be rebuilt")
            return
        self._rebuild_task = None
        self._ready.set()

    # -- views ----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "peers": len(self.peers),
            "broadcasters": len(self.broadcasters),
            "workers": [router.worker.pid for router in self.routers],
            "createdAt": self.created_at,
        }

    def describe(self) -> dict[str, Any]:
        """Everything in the room, for operators (never integration values)."""

        def participant(peer: Peer) -> dict[str, Any]:
            return {
                "id": peer.id,
                "displayName": peer.display_name,
                "device": peer.device,
                "broadcaster": peer.broadcaster,
                "joined": peer.joined,
                "connected": peer.connected if not peer.broadcaster else None,
                "joinedAt": peer.joined_at,
                "metadata": peer.metadata.public(),
                "transports": [
                    {"id": t.id, "type": t.type, "workerPid": t.router.worker.pid,
                     "producing": t.app_data.get("producing"), "consuming": t.app_data.get("consuming")}
                    for t in peer.transports.values()
                ],
                "producers": [
                    {"id": p.id, "kind": p.kind, "type": p.type, "paused": p.paused,
                     "workerPid": p.transport.router.worker.pid}
                    for p in peer.producers.values()
                ],
                "consumers": [
                    {"id": c.id, "producerId": c.producer_id, "kind": c.kind, "type": c.type,
                     "paused": c.paused, "producerPaused": c.producer_paused,
                     "workerPid": c.transport.router.worker.pid}
                    for c in peer.consumers.values()
                ],
                "dataProducers": [
                    {"id": d.id, "label": d.label, "protocol": d.protocol} for d in peer.data_producers.values()
                ],
                "dataConsumers": [
                    {"id": d.id, "dataProducerId": d.data_producer_id, "label": d.label}
                    for d in peer.data_consumers.values()
                ],
            }

        return {
            **self.summary(),
            "routers": [
                {"id": r.id, "workerPid": r.worker.pid, "primary": i == 0, "consumers": self.consumer_count(r)}
                for i, r in enumerate(self.routers)
            ],
            "dominantSpeaker": self.dominant_speaker,
            "peers": [participant(p) for p in self.peers.values()],
            "broadcasters": [participant(b) for b in self.broadcasters.values()],
        }

    def __repr__(self) -> str:
        return f"<Room id={self.id!r} peers={len(self.peers)} closed={self.closed}>"

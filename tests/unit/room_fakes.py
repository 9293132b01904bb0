"""Small fakes for unit tests of :class:`control.rooms.room.Room`: a host, a worker,
a router, its RTP observers, a protoo connection. They keep only what a room reads
or calls; anything that needs media goes to the integration tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, cast

from control.rooms.host import ExtraMethod, RoomHost
from control.rooms.room import Room
from control.signaling.protoo import ProtooConnection
from workers.enhanced_events import EnhancedEventEmitter

_ids = itertools.count(1)


class FakeObserver(EnhancedEventEmitter):
    def __init__(self) -> None:
        super().__init__()
        self.producers: list[str] = []

    async def add_producer(self, producer_id: str) -> None:
        self.producers.append(producer_id)


class FakeRouter(EnhancedEventEmitter):
    def __init__(self, worker: FakeWorker) -> None:
        super().__init__()
        self.id = f"router-{next(_ids)}"
        self.worker = worker
        self.closed = False
        self.transports: dict[str, Any] = {}
        self.producers: dict[str, Any] = {}
        self.data_producers: dict[str, Any] = {}
        self.rtp_capabilities: dict[str, Any] = {"codecs": [], "headerExtensions": []}

    async def create_audio_level_observer(self, **options: Any) -> FakeObserver:
        return FakeObserver()

    async def create_active_speaker_observer(self, **options: Any) -> FakeObserver:
        return FakeObserver()

    def close(self) -> None:
        self.closed = True


class FakeWorker:
    def __init__(self, pid: int = 1000) -> None:
        self.pid = pid
        self.closed = False
        self.routers: set[FakeRouter] = set()

    async def create_router(self, media_codecs: Any = None, app_data: Any = None) -> FakeRouter:
        router = FakeRouter(self)
        self.routers.add(router)
        return router


@dataclass
class FakeSettings:
    peer_reconnect_grace_seconds: float = 10.0
    room_consumers_per_worker: int = 500
    signaling_join_timeout_seconds: float = 15.0
    max_rooms: int = 500
    max_peers_per_room: int = 200
    max_broadcasters_per_room: int = 8
    max_transports_per_peer: int = 8
    max_producers_per_peer: int = 16
    max_data_producers_per_peer: int = 8
    max_consumers_per_peer: int = 1000


@dataclass
class FakeHost:
    """A RoomHost with one worker; records the rooms that closed."""

    settings: FakeSettings = field(default_factory=FakeSettings)
    closing: bool = False
    workers: list[FakeWorker] = field(default_factory=lambda: [FakeWorker()])
    methods: dict[str, ExtraMethod] = field(default_factory=dict)
    closed_rooms: list[Room] = field(default_factory=list)
    rooms: dict[str, Room] = field(default_factory=dict)

    def worker_load(self, worker: Any) -> int:
        return 0

    async def pick_worker(self) -> Any:
        return self.workers[0]

    async def webrtc_server(self, worker: Any) -> Any:
        return object()

    def plain_listen_info(self) -> dict[str, Any]:
        return {"protocol": "udp", "ip": "127.0.0.1"}

    def extra_method(self, name: str) -> ExtraMethod | None:
        return self.methods.get(name)

    def room_closed(self, room: Room) -> None:
        self.closed_rooms.append(room)


class FakeConnection:
    """What a room does with a peer's protoo connection: notify, request, close."""

    def __init__(self) -> None:
        self.closed = False
        self.client_closed = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def notify(self, method: str, data: dict[str, Any] | None = None) -> None:
        self.notifications.append((method, data or {}))

    async def request(self, method: str, data: dict[str, Any] | None = None) -> Any:
        self.requests.append((method, data or {}))
        return {}

    def close_soon(self, code: int = 4000, reason: str = "") -> None:
        self.closed = True
        self.close_code, self.close_reason = code, reason

    def ended(self, *, by_client: bool) -> None:
        """The socket ended (a close frame from the client, or a drop)."""
        self.closed = True
        self.client_closed = by_client

    def methods(self) -> list[str]:
        return [method for method, _ in self.notifications]

    def as_protoo(self) -> ProtooConnection:
        return cast(ProtooConnection, self)


async def make_room(host: FakeHost | None = None, room_id: str = "r") -> tuple[Room, FakeHost]:
    host = host or FakeHost()
    return await Room.create(cast(RoomHost, host), room_id), host


def events(room: Room, *names: str) -> list[tuple[Any, ...]]:
    """Record ``(name, *args)`` of the room observer's events ``names``."""
    seen: list[tuple[Any, ...]] = []
    for name in names:
        room.observer.on(name, lambda *args, _name=name: seen.append((_name, *args)))
    return seen

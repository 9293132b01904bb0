"""What a room needs from whoever hosts it, and the events a room emits.

A :class:`~control.rooms.room.Room` does not know the
:class:`~control.rooms.manager.RoomManager`: it talks to a :class:`RoomHost`,
the few things a room asks of the process around it (a worker to live on, that
worker's WebRtcServer, the workers to spread over, the settings it reads, the
protoo methods other services added, whether the server is shutting down) and
the one thing it tells it (it closed). The manager implements it; unit tests
use a small fake.

A room's own ``observer`` emits the :data:`RoomEvent` names below, as a
mediasoup entity's observer does; the host never emits on it and the room never
emits on the host's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from control.rooms.limits import LimitSettings

if TYPE_CHECKING:
    from control.rooms.peer import Peer
    from control.rooms.room import Room
    from workers.webrtc_server import WebRtcServer
    from workers.worker import Worker

__all__ = [
    "CLOSE",
    "DATA_PRODUCER_CREATED",
    "DOMINANT_SPEAKER",
    "PEER_JOINED",
    "PEER_LEFT",
    "PEER_UPDATED",
    "PRODUCER_CREATED",
    "ExtraMethod",
    "MethodHandler",
    "RoomEvent",
    "RoomHost",
    "RoomSettings",
]

#: Events of ``room.observer``.
RoomEvent = Literal[
    "peerjoined", "peerupdated", "peerleft", "producercreated", "dataproducercreated", "dominantspeaker", "close"
]
#: ``peerjoined(peer)``: a peer joined (not a re-join) or a broadcaster was created.
PEER_JOINED: Final = "peerjoined"
#: ``peerupdated(peer)``: a joined peer changed its display name.
PEER_UPDATED: Final = "peerupdated"
#: ``peerleft(peer)``: a joined peer or a broadcaster left the room.
PEER_LEFT: Final = "peerleft"
#: ``producercreated(peer, producer)``: a peer's or a broadcaster's producer.
PRODUCER_CREATED: Final = "producercreated"
#: ``dataproducercreated(peer, dataProducer)``: a peer's or a broadcaster's data producer.
DATA_PRODUCER_CREATED: Final = "dataproducercreated"
#: ``dominantspeaker(peerId)``: the primary router's ActiveSpeakerObserver named a new
#: dominant speaker (the peerId of the producer's appData).
DOMINANT_SPEAKER: Final = "dominantspeaker"
#: ``close()``: the room closed (after its peers were told).
CLOSE: Final = "close"

#: An extra protoo method: ``await handler(room, peer, data)`` -> the answer's data.
MethodHandler = Callable[["Room", "Peer", dict[str, Any]], Awaitable[Any]]
#: A registered extra method: its handler and whether it is allowed before ``join``.
ExtraMethod = tuple[MethodHandler, bool]


class RoomSettings(LimitSettings, Protocol):
    """The settings a room reads (:class:`control.config.Settings` has them)."""

    @property
    def peer_reconnect_grace_seconds(self) -> float: ...

    @property
    def room_consumers_per_worker(self) -> int: ...

    @property
    def signaling_join_timeout_seconds(self) -> float: ...


class RoomHost(Protocol):
    """What a room asks of the process that hosts it."""

    @property
    def settings(self) -> RoomSettings: ...

    @property
    def rooms(self) -> Mapping[str, Room]:
        """The open rooms of this host (counted against ``MAX_ROOMS``)."""
        ...

    @property
    def closing(self) -> bool:
        """The server is shutting down: a dropped peer gets no grace period."""
        ...

    @property
    def workers(self) -> Sequence[Worker]:
        """The live workers a room may spread over."""
        ...

    def worker_load(self, worker: Worker) -> int: ...

    async def pick_worker(self) -> Worker:
        """The least loaded live worker (``InvalidStateError`` when there is none)."""
        ...

    async def webrtc_server(self, worker: Worker) -> WebRtcServer: ...

    def plain_listen_info(self) -> dict[str, Any]:
        """Listen info of the PlainTransports of broadcasters."""
        ...

    def extra_method(self, name: str) -> ExtraMethod | None:
        """A protoo method another service registered, if ``name`` is one."""
        ...

    def room_closed(self, room: Room) -> None:
        """``room`` closed: forget it."""
        ...

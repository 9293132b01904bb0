"""How much one client may make: every limit of a node, checked in one place each.

Each limit is a :class:`~control.config.Settings` field (an env var, listed in
the README's "Limits" table) and is checked by one function here, called where
the resource is made:

========================  ==============================  ==========================================
resource                  setting                         checked by
========================  ==============================  ==========================================
rooms of the node         ``MAX_ROOMS``                   :func:`check_rooms` (``Room.create``, and
                                                          the signaling upgrade, as an HTTP 429)
peers of a room           ``MAX_PEERS_PER_ROOM``          :func:`check_peers` (``Room.attach``)
broadcasters of a room    ``MAX_BROADCASTERS_PER_ROOM``   :func:`check_broadcasters`
                                                          (``Room.add_broadcaster``)
transports of a peer      ``MAX_TRANSPORTS_PER_PEER``     :func:`check_transports` (media)
producers of a peer       ``MAX_PRODUCERS_PER_PEER``      :func:`check_producers` (media)
data producers            ``MAX_DATA_PRODUCERS_PER_PEER`` :func:`check_data_producers` (media)
consumers of a peer       ``MAX_CONSUMERS_PER_PEER``      :func:`consumers_full` (consumers: the
                                                          server makes them, so a full peer is
                                                          skipped with a warning, not refused)
recordings of the node    ``MAX_RECORDINGS``              :func:`check_recordings`
========================  ==============================  ==========================================

A refusal is a :class:`~control.errors.TooManyRequests` (HTTP 429, protoo
``errorCode`` 429) whose stable ``code`` names the limit (``rooms_limit``,
``peers_limit``...) and whose message names the setting; nothing that exists is
touched. Signaling's own limits (request rate, join timeout, frame size, JSON
depth) live in :mod:`control.signaling`; what one client address or principal may
open and send (sockets, REST requests, broadcaster creations) in :mod:`control.ratelimit`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sized
from typing import Protocol

from control.errors import TooManyRequests

__all__ = [
    "LimitReached",
    "LimitSettings",
    "check_broadcasters",
    "check_data_producers",
    "check_peers",
    "check_producers",
    "check_recordings",
    "check_rooms",
    "check_transports",
    "consumers_full",
    "creating_room",
]


class LimitSettings(Protocol):
    """The settings read here (:class:`control.config.Settings` has them)."""

    @property
    def max_rooms(self) -> int: ...

    @property
    def max_peers_per_room(self) -> int: ...

    @property
    def max_broadcasters_per_room(self) -> int: ...

    @property
    def max_transports_per_peer(self) -> int: ...

    @property
    def max_producers_per_peer(self) -> int: ...

    @property
    def max_data_producers_per_peer(self) -> int: ...

    @property
    def max_consumers_per_peer(self) -> int: ...


class LimitReached(TooManyRequests):
    """429: a configured limit was reached; ``code`` is ``<resource>_limit``."""

    def __init__(self, resource: str, what: str, count: int, setting: str) -> None:
        noun = resource.replace("_", " ")
        super().__init__(f"{what} has reached its limit of {count} {noun} ({setting})", code=f"{resource}_limit")
        self.setting = setting


def _check(count: int, limit: int, resource: str, what: str, setting: str) -> None:
    if count >= limit:
        raise LimitReached(resource, what, limit, setting)


#: Rooms being built per host (not yet in ``host.rooms``), so that concurrent first
#: connections to different rooms cannot all pass the check at once.
#: Keyed by ``id(host)``: an entry lives only while a build runs.
_creating: dict[int, int] = {}


def check_rooms(host: object, rooms: Sized, settings: LimitSettings) -> None:
    """Refuse a new room when the node has ``MAX_ROOMS`` (open and being built)."""
    _check(len(rooms) + _creating.get(id(host), 0), settings.max_rooms, "rooms", "this node", "MAX_ROOMS")


@contextlib.contextmanager
def creating_room(host: object) -> Iterator[None]:
    """Count a room of ``host`` as existing while it is being built."""
    key = id(host)
    _creating[key] = _creating.get(key, 0) + 1
    try:
        yield
    finally:
        left = _creating.get(key, 1) - 1
        if left:
            _creating[key] = left
        else:
            _creating.pop(key, None)


def check_peers(peers: Sized, settings: LimitSettings) -> None:
    _check(len(peers), settings.max_peers_per_room, "peers", "the room", "MAX_PEERS_PER_ROOM")


def check_broadcasters(broadcasters: Sized, settings: LimitSettings) -> None:
    _check(
        len(broadcasters), settings.max_broadcasters_per_room, "broadcasters", "the room", "MAX_BROADCASTERS_PER_ROOM"
    )


def check_transports(transports: Sized, settings: LimitSettings) -> None:
    _check(len(transports), settings.max_transports_per_peer, "transports", "the peer", "MAX_TRANSPORTS_PER_PEER")


def check_producers(producers: Sized, settings: LimitSettings) -> None:
    _check(len(producers), settings.max_producers_per_peer, "producers", "the peer", "MAX_PRODUCERS_PER_PEER")


def check_data_producers(data_producers: Sized, settings: LimitSettings) -> None:
    _check(
        len(data_producers),
        settings.max_data_producers_per_peer,
        "data_producers",
        "the peer",
        "MAX_DATA_PRODUCERS_PER_PEER",
    )


def consumers_full(consumers: int, settings: LimitSettings) -> bool:
    """A peer with ``MAX_CONSUMERS_PER_PEER`` consumers gets no more (the server makes them)."""
    return consumers >= settings.max_consumers_per_peer


def check_recordings(active: int, max_recordings: int) -> None:
    """Refuse a recording when ``MAX_RECORDINGS`` run on this node."""
    _check(active, max_recordings, "recordings", "this node", "MAX_RECORDINGS")

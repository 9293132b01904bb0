"""A participant of a room: a WebSocket peer or an HTTP broadcaster.

A :class:`Peer` outlives its WebSocket: when the socket drops, the peer (its
transports, producers and consumers) is kept for the reconnect grace period,
and notifications meanwhile wait in a small backlog that is flushed when the
same ``peerId`` reconnects. Broadcasters (``broadcaster=True``) never have a
connection; they are always joined.

The seed's participant metadata (``email``, ``aiSettings``, ``integrations``)
lives in :class:`ParticipantMetadata`; it is for the room's services
(recording, events), never sent to other peers, and ``integrations`` (which
holds credentials) never appears in a repr or a log line.

Every peer carries the :class:`~control.auth.Principal` it connected with
(``peer.principal``: verified once, at the WebSocket upgrade; a reconnect brings a
new one). The room asks it, never the token: :mod:`control.rooms.handlers` checks
each request against its grants, :mod:`control.rooms.consumers` consumes only for
a principal with ``canSubscribe``, and a ``hidden`` one is not announced.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger

from control.auth import Principal, open_principal
from control.ids import DISPLAY_NAME_FORBIDDEN_RE, MAX_DISPLAY_NAME_LENGTH
from control.signaling.messages import is_email

if TYPE_CHECKING:
    from control.rooms.room import Room
    from control.signaling.protoo import ProtooConnection
    from workers.consumer import Consumer
    from workers.data_consumer import DataConsumer
    from workers.data_producer import DataProducer
    from workers.producer import Producer
    from workers.transport import Transport

#: Notifications kept for a disconnected peer (oldest dropped beyond this).
BACKLOG = 256

#: The principal of a participant made in-process without one (broadcasters made
#: by the REST API, whose request was checked there; unit tests): a full participant.
IN_PROCESS = open_principal(admin=False)


@dataclass
class ParticipantMetadata:
    """What ``join`` says about the participant beyond the demo's fields."""

    email: str | None = None
    ai_settings: dict[str, Any] | None = field(default=None, repr=False)
    integrations: dict[str, Any] | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        """Safe to show to an operator: the e-mail and which keys are set, no values."""
        return {
            "email": self.email,
            "aiSettings": sorted(self.ai_settings) if self.ai_settings else [],
            "integrations": sorted(self.integrations) if self.integrations else [],
        }


def token_name(principal: Principal) -> str:
    """The participant's name its credentials carry (a token's ``name`` claim, the
    signed-in user's name), made to follow the one display name rule; "" if none.

    It wins over ``join``'s ``displayName``, as in LiveKit, where the name is the
    token's: whoever issued the credentials decides who the others see."""
    name = DISPLAY_NAME_FORBIDDEN_RE.sub("", principal.name).strip()
    return name[:MAX_DISPLAY_NAME_LENGTH]


def token_email(principal: Principal) -> str | None:
    """The e-mail the credentials carry: the signed-in user's, or ``email`` in a token's
    ``metadata`` JSON object (what Parley's own minting writes); None if none."""
    if principal.email:
        return principal.email
    if not principal.metadata.startswith("{"):
        return None
    try:
        metadata = json.loads(principal.metadata)
    except (ValueError, RecursionError):  # signed by the operator, still not trusted to parse
        return None
    email = metadata.get("email") if isinstance(metadata, dict) else None
    return email if isinstance(email, str) and is_email(email) else None


class Peer:
    def __init__(
        self, room: Room, peer_id: str, *, broadcaster: bool = False, principal: Principal | None = None
    ) -> None:
        self.id = peer_id
        self.room = room
        self.broadcaster = broadcaster
        self.joined = broadcaster
        self.joined_generation = -1
        self.closed = False
        self.display_name = ""
        self.device: dict[str, Any] = {}
        self.rtp_capabilities: dict[str, Any] | None = None
        self.sctp_capabilities: dict[str, Any] | None = None
        self.metadata = ParticipantMetadata()
        #: Who connected as this peer and what they may do (replaced by each reconnect).
        self.principal: Principal = principal or IN_PROCESS
        self.connection: ProtooConnection | None = None
        #: Incremented on every (re)connection; transports remember theirs.
        self.generation = 0
        self.transports: dict[str, Transport] = {}
        self.producers: dict[str, Producer] = {}
        self.consumers: dict[str, Consumer] = {}
        self.data_producers: dict[str, DataProducer] = {}
        self.data_consumers: dict[str, DataConsumer] = {}
        #: Producer / data producer ids whose consumer is being created.
        self.consuming: set[str] = set()
        self.grace_timer: asyncio.TimerHandle | None = None
        #: Closes the connection if the peer has not joined in time (control.rooms.room).
        self.join_timer: asyncio.TimerHandle | None = None
        self.backlog: deque[tuple[str, dict[str, Any]]] = deque(maxlen=BACKLOG)
        self.created_at = time.time()
        self.joined_at: float | None = time.time() if broadcaster else None
        self.log = logger.bind(room=room.id, peer=peer_id)

    # -- signaling ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.closed

    def notify(self, method: str, data: dict[str, Any]) -> None:
        """Notify the peer; kept in the backlog while it is disconnected."""
        if self.broadcaster or self.closed:
            return
        if self.connected:
            assert self.connection is not None
            self.connection.notify(method, data)
        else:
            if len(self.backlog) == self.backlog.maxlen:
                self.log.warning("disconnected peer: notification backlog full, dropping the oldest")
            self.backlog.append((method, data))

    async def request(self, method: str, data: dict[str, Any]) -> Any:
        """Send a request and wait for the answer (ConnectionError when not connected)."""
        if not self.connected:
            raise ConnectionError("peer not connected")
        assert self.connection is not None
        return await self.connection.request(method, data)

    def cancel_grace(self) -> None:
        """Stop the reconnect grace period, if it runs."""
        if self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None

    def cancel_join_timer(self) -> None:
        if self.join_timer is not None:
            self.join_timer.cancel()
            self.join_timer = None

    def flush_backlog(self) -> None:
        while self.backlog and self.connected:
            method, data = self.backlog.popleft()
            self.notify(method, data)

    @property
    def hidden(self) -> bool:
        """Not announced to the others (``video.hidden``): no ``newPeer``/``peerClosed``,
        not in ``join`` answers, no room events; such a peer does not publish."""
        return self.principal.hidden

    # -- views ----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What other peers see: ``{id, displayName, device}``."""
        return {"id": self.id, "displayName": self.display_name, "device": self.device}

    def consuming_transport(self) -> Transport | None:
        """The transport the peer consumes on (the first with ``appData.consuming``)."""
        for transport in self.transports.values():
            if transport.app_data.get("consuming") and not transport.closed:
                return transport
        return None

    def consumed_producer_ids(self) -> set[str]:
        ids = {c.producer_id for c in self.consumers.values()}
        ids.update(dc.data_producer_id for dc in self.data_consumers.values())
        return ids | self.consuming

    def __repr__(self) -> str:
        kind = "Broadcaster" if self.broadcaster else "Peer"
        return f"<{kind} id={self.id!r} room={self.room.id!r} joined={self.joined} connected={self.connected}>"

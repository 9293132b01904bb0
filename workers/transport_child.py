"""What Producer, Consumer, DataProducer and DataConsumer share.

As in mediasoup, each is owned by a transport: ``close()`` is the user's close,
which tells the worker (through the transport) and the transport (``@close``);
``transport_closed()`` is the parent-driven close, where the worker already
dropped the entity and only the Python side and its listeners are told.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.enhanced_events import EnhancedEventEmitter

if TYPE_CHECKING:
    from workers.channel import Channel
    from workers.transport import Transport


class TransportChild(EnhancedEventEmitter):
    """Base of the entities a transport owns; subclasses set ``id``, ``channel``,
    ``transport``, ``closed`` and ``observer`` and say how the worker is told."""

    id: str
    channel: Channel
    transport: Transport
    closed: bool
    observer: EnhancedEventEmitter

    def _send_close_request(self) -> None:
        """Ask the worker to close this entity (fire and forget)."""
        raise NotImplementedError

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.channel.unsubscribe(self.id)
        self._send_close_request()
        self.emit("@close")
        self.observer.safe_emit("close")

    def transport_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.channel.unsubscribe(self.id)
        self.safe_emit("transportclose")
        self.observer.safe_emit("close")

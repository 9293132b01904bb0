"""What operators see of a room (``GET /api/rooms``, ``GET /api/rooms/{roomId}``).

Participant metadata appears only as the e-mail and the names of the
aiSettings/integrations keys, never their values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from control.rooms.spreading import consumer_count

if TYPE_CHECKING:
    from control.rooms.peer import Peer
    from control.rooms.room import Room

__all__ = ["describe", "summary"]


def summary(room: Room) -> dict[str, Any]:
    """One line of the room list."""
    return {
        "id": room.id,
        "peers": len(room.peers),
        "broadcasters": sum(1 for b in room.broadcasters.values() if b.node is None),
        # Cascading (control.cluster.cascade): peers of the room's other nodes mirrored here.
        "remotePeers": sum(1 for b in room.broadcasters.values() if b.node is not None),
        "origin": room.origin,
        "satellites": sorted(room.satellites),
        "workers": [router.worker.pid for router in room.routers],
        "createdAt": room.created_at,
    }


def _participant(peer: Peer) -> dict[str, Any]:
    return {
        "id": peer.id,
        "displayName": peer.display_name,
        "device": peer.device,
        "broadcaster": peer.broadcaster and peer.node is None,
        "node": peer.node,
        "joined": peer.joined,
        "connected": peer.connected if not peer.broadcaster else None,
        "joinedAt": peer.joined_at,
        "metadata": peer.metadata.public(),
        "transports": [
            {
                "id": t.id,
                "type": t.type,
                "workerPid": t.router.worker.pid,
                "producing": t.app_data.get("producing"),
                "consuming": t.app_data.get("consuming"),
            }
            for t in peer.transports.values()
        ],
        "producers": [
            {"id": p.id, "kind": p.kind, "type": p.type, "paused": p.paused, "workerPid": p.transport.router.worker.pid}
            for p in peer.producers.values()
        ],
        "consumers": [
            {
                "id": c.id,
                "producerId": c.producer_id,
                "kind": c.kind,
                "type": c.type,
                "paused": c.paused,
                "producerPaused": c.producer_paused,
                "workerPid": c.transport.router.worker.pid,
            }
            for c in peer.consumers.values()
        ],
        "dataProducers": [{"id": d.id, "label": d.label, "protocol": d.protocol} for d in peer.data_producers.values()],
        "dataConsumers": [
            {"id": d.id, "dataProducerId": d.data_producer_id, "label": d.label} for d in peer.data_consumers.values()
        ],
    }


def describe(room: Room) -> dict[str, Any]:
    """Everything in the room, for operators (never integration values)."""
    return {
        **summary(room),
        "routers": [
            {"id": r.id, "workerPid": r.worker.pid, "primary": i == 0, "consumers": consumer_count(r)}
            for i, r in enumerate(room.routers)
        ],
        "dominantSpeaker": room.dominant_speaker,
        "peers": [_participant(p) for p in room.peers.values()],
        "broadcasters": [_participant(b) for b in room.broadcasters.values() if b.node is None],
        "remotePeers": [_participant(b) for b in room.broadcasters.values() if b.node is not None],
    }

"""Rooms and peers: mediasoup-demo's Room semantics over ``workers``.

- ``manager``: RoomManager (rooms by id, WebRtcServer per worker, the rooms' host)
- ``host``: RoomHost, what a room needs of its host; the room events
- ``room``: Room (membership and lifecycle)
- ``handlers``: the protoo requests of peers
- ``media``: transports, producers, data producers (peers and broadcasters)
- ``consumers``: consumers and data consumers, one skeleton
- ``spreading``: routers on several workers, pipes
- ``recovery``: rebuild after a worker death
- ``views``: what operators see (``summary``, ``describe``)
- ``peer``: Peer and its ParticipantMetadata
- ``broadcasters``: the demo's broadcaster REST API (``/rooms/...``)
- ``routes``: ``GET /api/rooms`` (roomList), ``GET /api/rooms/{roomId}`` (roomAdmin)

:func:`setup` wires the subsystem into the application.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from control.keys import CHAT, MEETINGS, WORKER_POOL

if TYPE_CHECKING:
    from control.chat.meetings import MeetingService
    from control.chat.service import ChatService
    from workers.worker_pool import WorkerPool

__all__ = ["setup"]


def setup(
    app: web.Application,
    *,
    pool: web.AppKey[WorkerPool] = WORKER_POOL,
    chat: web.AppKey[ChatService] | None = CHAT,
    meetings: web.AppKey[MeetingService] | None = MEETINGS,
) -> None:
    """Run the rooms (``ROOMS``) on the worker pool under ``pool``, report joins and
    leaves to the chat (or meetings) service under ``chat`` (``meetings``) when it
    runs, close the peers' WebSockets early on shutdown; add the rooms' routes."""
    # Imported here: importing a module of the package (``control.rooms.peer``)
    # runs this file, and need not load the worker layer.
    from control.rooms import broadcasters, routes
    from control.rooms.manager import close_connections, rooms_ctx

    app.cleanup_ctx.append(rooms_ctx(pool, chat, meetings))
    app.on_shutdown.append(close_connections)  # peers' WebSockets close (1001) before aiohttp waits on them
    app.add_routes(routes.routes)  # GET /api/rooms, /api/rooms/{roomId} (roomList, roomAdmin)
    app.add_routes(broadcasters.routes)  # mediasoup-demo's broadcaster API under /rooms/...

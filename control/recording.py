"""Composite recording of a room, wired to signaling, REST, chat, storage and events.

Signaling (joined peers; registered with ``RoomManager.register_method``):

``startRecording {}`` -> ``{recordingId, startedAt}``
    Records every audio and video producer of the room at that moment (one grid
    video, mixed audio; ``recording/``). 409 if the room is already recording,
    400 if nothing is produced.
``stopRecording {}`` -> ``{recordingId, key, duration}``
    Stops it; the MP4 is handed to the durable upload queue.

REST (admin, ``require_admin``): ``POST /api/rooms/{roomId}/recording`` starts,
``DELETE /api/rooms/{roomId}/recording`` stops (same answers; 404 for an unknown
room or no recording).

Every joined peer is notified ``recordingStarted {recordingId, startedAt, peerId?}``
and ``recordingStopped {recordingId, key?, duration?}``; the chat gets its system
messages (``recording_started`` / ``recording_stopped``). A recording stops by
itself when its room closes, and on shutdown.

After stop the file is uploaded to ``recordings/<roomId>/<meetingId>-<startTime>.mp4``
(``submit_upload(kind="recording.completed")``): once stored, the
``recording.completed`` event carries the meeting, the times and every participant
seen during the recording (peerId, displayName, email, aiSettings, integrations).

Not yet: new segments on join/leave/mute, restarting a dead FFmpeg, recovering
after a crash, disk space checks.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from loguru import logger

from control.events.admin import require_admin
from control.keys import CHAT, MEETINGS, ROOMS, SETTINGS, STORAGE
from control.signaling.protoo import ProtooError
from control.storage import RECORDING_UPLOAD_KIND, recording_key
from recording import Recorder, RecordingError, Source

__all__ = ["RECORDINGS", "RecordingService", "recording_ctx", "routes"]

START_RECORDING = "startRecording"
STOP_RECORDING = "stopRecording"
RECORDING_STARTED = "recordingStarted"
RECORDING_STOPPED = "recordingStopped"
#: How long the chat's "Recording stopped" waits for the upload (it says where the file is).
UPLOAD_WAIT = 600.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _participant(peer: Any) -> dict[str, Any]:
    md = peer.metadata
    return {"peerId": peer.id, "displayName": peer.display_name or peer.id, "email": md.email,
            "aiSettings": dict(md.ai_settings or {}), "integrations": dict(md.integrations or {})}


@dataclass
class ActiveRecording:
    id: str
    room_id: str
    meeting_id: str
    recorder: Recorder
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopping: asyncio.Future | None = None


class RecordingService:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.settings = app[SETTINGS]
        self.rooms = app[ROOMS]
        self.active: dict[str, ActiveRecording] = {}
        self._starting: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._announcing: set[asyncio.Task] = set()

    # -- lifecycle ----------------------------------------------------------------------

    def attach(self) -> None:
        self.rooms.register_method(START_RECORDING, self._on_start)
        self.rooms.register_method(STOP_RECORDING, self._on_stop)
        self.rooms.observer.on("peerjoined", self._on_peer_joined)
        self.rooms.observer.on("roomclosed", self._on_room_closed)

    async def close(self) -> None:
        self.rooms.observer.remove_listener("peerjoined", self._on_peer_joined)
        self.rooms.observer.remove_listener("roomclosed", self._on_room_closed)
        for room_id in list(self.active):
            self._spawn(self.stop(room_id))
        if self._tasks:  # FFmpeg finishes each file, uploads are queued (durable)
            await asyncio.wait(list(self._tasks), timeout=30)
        if self._announcing:  # chat messages waiting for their upload: a little longer, not forever
            await asyncio.wait(list(self._announcing), timeout=10)
            for task in list(self._announcing):
                task.cancel()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or logger.warning(
            "recording: {}", t.exception()))
        return task

    def _on_peer_joined(self, room: Any, peer: Any) -> None:
        active = self.active.get(room.id)
        if active is not None:
            active.participants.setdefault(peer.id, _participant(peer))

    def _on_room_closed(self, room: Any) -> None:
        if room.id in self.active:
            self._spawn(self.stop(room.id, room_closed=True))

    # -- start / stop -------------------------------------------------------------------

    async def _meeting_id(self, room_id: str) -> str:
        meetings = self.app.get(MEETINGS)
        if meetings is not None:
            current = meetings.current_id(room_id)
            if current is None:
                with_db = await meetings.current(room_id)
                current = with_db.meeting_id if with_db else None
            if current:
                return current
        return f"room-{room_id}"

    async def start(self, room_id: str, by: Any = None) -> dict[str, Any]:
        room = self.rooms.get_room(room_id)
        if room is None:
            raise ProtooError(404, f"room {room_id} not found")
        if room_id in self.active or room_id in self._starting:
            raise ProtooError(409, "already_recording: the room is being recorded")
        self._starting.add(room_id)
        try:
            router = room.primary
            participants = [*room.joined_peers(), *room.broadcasters.values()]
            sources = []
            for peer in participants:
                for producer in list(peer.producers.values()):
                    if producer.closed or producer.kind not in ("audio", "video"):
                        continue
                    await room._make_available(producer, router)
                    sources.append(Source(producer.id, producer.kind, peer.id))
            if not sources:
                raise ProtooError(400, "nothing_to_record: no audio or video is being sent")
            meeting_id = await self._meeting_id(room_id)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            filename = f"{meeting_id}-{stamp}.mp4"
            workdir = self.settings.data_dir / "recording-work" / room_id
            s = self.settings
            recorder = Recorder(router, sources, workdir / filename, width=s.recording_width,
                                height=s.recording_height, fps=s.recording_fps)
            try:
                await recorder.start()
            except RecordingError as error:
                logger.bind(room=room_id).error("recording not started: {}", error)
                raise ProtooError(500, f"recording_failed: {error}") from None
            active = ActiveRecording(secrets.token_hex(8), room_id, meeting_id, recorder,
                                     {p.id: _participant(p) for p in participants})
            self.active[room_id] = active
        finally:
            self._starting.discard(room_id)
        assert recorder.started_at is not None
        info = {"recordingId": active.id, "startedAt": _iso(recorder.started_at)}
        logger.bind(room=room_id).info("recording {} started ({} inputs)", active.id, len(sources))
        self.rooms.notify_room(room_id, RECORDING_STARTED, {**info, **({"peerId": by.id} if by else {})})
        chat = self.app.get(CHAT)
        if chat is not None:
            sender = {"peerId": by.id, "displayName": by.display_name or by.id} if by is not None else None
            self._spawn(chat.recording_started(room_id, recording_id=active.id, by=sender))
        return info

    async def stop(self, room_id: str, *, room_closed: bool = False) -> dict[str, Any]:
        active = self.active.get(room_id)
        if active is None:
            raise ProtooError(404, "not_recording: the room is not being recorded")
        if active.stopping is None:
            active.stopping = asyncio.ensure_future(self._stop(active, room_closed))
        return await asyncio.shield(active.stopping)

    async def _stop(self, active: ActiveRecording, room_closed: bool) -> dict[str, Any]:
        log = logger.bind(room=active.room_id)
        room = self.rooms.get_room(active.room_id)
        if room is not None:  # whoever is there now was in the recording
            for peer in room.joined_peers():
                active.participants.setdefault(peer.id, _participant(peer))
        try:
            result = await active.recorder.stop()
        finally:
            self.active.pop(active.room_id, None)
        key = recording_key(active.room_id, result.path.name)
        context = {
            "meetingId": active.meeting_id,
            "roomId": active.room_id,
            "startedAt": _iso(result.started_at),
            "endedAt": _iso(result.ended_at),
            "participants": list(active.participants.values()),
        }
        store = self.app[STORAGE]
        job = await store.submit_upload(result.path, key, content_type="video/mp4",
                                        duration=result.duration, delete_local=True,
                                        kind=RECORDING_UPLOAD_KIND, context=context)
        log.info("recording {} stopped ({:.1f} s), uploading to {}", active.id, result.duration, key)
        info = {"recordingId": active.id, "key": key, "duration": round(result.duration, 3)}
        if not room_closed:
            self.rooms.notify_room(active.room_id, RECORDING_STOPPED, info)
        task = asyncio.ensure_future(self._announce_stored(active, store, job))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)
        return info

    async def _announce_stored(self, active: ActiveRecording, store: Any, job: Any) -> None:
        """The chat's "Recording stopped" once the upload is confirmed (attached to the
        meeting); without the object if the upload does not finish in time."""
        chat = self.app.get(CHAT)
        if chat is None:
            return
        log = logger.bind(room=active.room_id)
        ref = None
        try:
            ref = await store.uploads.wait(job, timeout=UPLOAD_WAIT)
        except Exception as error:  # noqa: BLE001 - the queue keeps retrying on its own
            log.warning("recording {}: upload not confirmed yet ({}); chat message without it", active.id, error)
        try:
            await chat.recording_stopped(active.room_id, recording_id=active.id, recording=ref,
                                         meeting_id=active.meeting_id if ref is not None else None)
        except Exception as error:  # noqa: BLE001
            log.warning("recording {}: chat message not posted: {}", active.id, error)

    # -- signaling ----------------------------------------------------------------------

    async def _on_start(self, room: Any, peer: Any, data: dict[str, Any]) -> dict[str, Any]:
        return await self.start(room.id, by=peer)

    async def _on_stop(self, room: Any, peer: Any, data: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.stop(room.id)
        except RecordingError as error:
            raise ProtooError(500, f"recording_failed: {error}") from None


RECORDINGS: web.AppKey[RecordingService] = web.AppKey("recordings", RecordingService)

routes = web.RouteTableDef()


def _http(error: ProtooError) -> web.Response:
    return web.json_response({"error": error.reason}, status=error.code)


@routes.post("/api/rooms/{roomId}/recording")
@require_admin
async def start_recording(request: web.Request) -> web.Response:
    try:
        info = await request.app[RECORDINGS].start(request.match_info["roomId"])
    except ProtooError as error:
        return _http(error)
    return web.json_response(info, status=201)


@routes.delete("/api/rooms/{roomId}/recording")
@require_admin
async def stop_recording(request: web.Request) -> web.Response:
    try:
        info = await request.app[RECORDINGS].stop(request.match_info["roomId"])
    except ProtooError as error:
        return _http(error)
    except RecordingError as error:
        return web.json_response({"error": f"recording_failed: {error}"}, status=500)
    return web.json_response(info)


async def recording_ctx(app: web.Application) -> AsyncIterator[None]:
    """After ``rooms_ctx`` (and chat, storage): registers the methods; on exit stops
    every recording cleanly (FFmpeg finishes its file) and hands them to the uploads."""
    service = RecordingService(app)
    service.attach()
    app[RECORDINGS] = service
    try:
        yield
    finally:
        await service.close()

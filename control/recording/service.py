"""Composite recording of a room, wired to signaling, REST, chat, storage and events.

Signaling (joined peers whose token grants ``roomRecord``, checked with every other
request in :func:`control.rooms.handlers.authorize`; registered with
``RoomManager.register_method``):

``startRecording {}`` -> ``{recordingId, startedAt}``
    Records the room (one grid video, mixed audio; ``recording/``) from now on:
    409 ``already_recording``, 507 ``insufficient_storage`` if ``RECORDING_DIR`` has
    less than ``RECORDING_MIN_FREE_MB`` free, 400 ``nothing_to_record`` if nobody is there.
``stopRecording {}`` -> ``{recordingId, key, duration, segments}``
    Stops it (answered once the recorders stopped and the segments are probed); the
    join and the audio mix follow in the background, then the MP4, the per-participant
    audio files and the timeline go to the durable upload queue.

REST (admin, :mod:`control.recording.routes`): ``POST /api/rooms/{roomId}/recording``
starts, ``DELETE /api/rooms/{roomId}/recording`` stops (same answers; 404 ``not_found``
for an unknown room, ``not_recording`` for no recording).

The service raises its domain errors (:class:`AlreadyRecording`, :class:`NotRecording`,
:class:`NothingToRecord`, :class:`NoDiskSpace`, :class:`RecordingFailed`: ParleyErrors);
REST answers them through the error middleware, signaling as ``"<code>: <message>"``.

The recording follows the room: a participant joining or leaving, a producer
added, closed, paused (muted) or resumed, starts a new video segment with the new
layout (``recording.session``); a participant without video is a tile with
their name. Audio is recorded apart, one stem per audio producer that never
restarts (``recording.stem``). At stop the segments are joined without
re-encoding and the stems mixed in (``recording.mix``); the timeline (joins,
leaves, mutes, cameras, screen shares, dominant speakers from the room's
``dominantspeaker`` event) is written beside them (``recording.timeline``).

Every joined peer is notified ``recordingStarted {recordingId, startedAt, peerId?}``,
``recordingStopped {recordingId, key?, duration?, segments?}`` and, when something
goes wrong (FFmpeg died: a new segment starts), ``recordingError {recordingId,
error}``; the chat gets its system messages (``recording_started`` /
``recording_stopped``). A recording stops by itself when its room closes, and on
shutdown.

After stop the file is uploaded to ``recordings/<roomId>/<meetingId>-<startTime>.mp4``
(``uploads.submit(kind="recording.completed")``), the stems and ``timeline.json`` to
``recordings/<roomId>/<recordingId>/`` first (kind ``recording.track``): once stored, the
``recording.completed`` event carries the meeting, the times, every participant
seen during the recording (peerId, displayName, email, aiSettings, integrations),
``recordingId``, ``tracks`` (peerId, displayName, kind, object, offsetMs, durationMs)
and the ``timeline`` object.
The segments stay in ``RECORDING_DIR/<recordingId>/`` until the upload is
confirmed. A process that died while recording leaves them there with their
manifest: the next start joins them, uploads the MP4 and publishes the event
(:meth:`RecordingService.recover`).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from aiohttp import web
from loguru import logger

from control.chat.meetings import ChatUnavailable, MeetingService
from control.chat.service import ChatService
from control.chat.validation import ChatError
from control.config import Settings
from control.errors import BadRequest, Conflict, InsufficientStorage, NotFound, ParleyError
from control.rooms.limits import check_recordings
from control.signaling.protoo import ProtooError
from control.storage.base import ObjectRef
from control.storage.files import RECORDING_UPLOAD_KIND
from control.storage.keys import recording_key
from control.storage.uploads import UploadJob, UploadQueue
from recording import (
    Finished,
    Manifest,
    NothingRecorded,
    Plan,
    RecordingError,
    RecordingResult,
    RecordingSession,
    SegmentOptions,
    Snapshot,
    Source,
    finish_recording,
    plan,
)

if TYPE_CHECKING:
    from loguru import Logger

    from control.events.bus import EventBus
    from control.rooms.manager import RoomManager
    from control.rooms.peer import Peer
    from control.rooms.room import Room
    from workers.producer import Producer
    from workers.router import Router

__all__ = [
    "RECORDINGS",
    "AlreadyRecording",
    "NoDiskSpace",
    "NotRecording",
    "NothingToRecord",
    "RecordingFailed",
    "RecordingService",
]

START_RECORDING: Final = "startRecording"
STOP_RECORDING: Final = "stopRecording"
#: The notifications this service sends to the room's peers.
RecordingNotification = Literal["recordingStarted", "recordingStopped", "recordingError"]
RECORDING_STARTED: Final = "recordingStarted"
RECORDING_STOPPED: Final = "recordingStopped"
RECORDING_ERROR: Final = "recordingError"
#: How long the chat's "Recording stopped" waits for the upload (it says where the file is).
UPLOAD_WAIT = 600.0
MP4 = "video/mp4"
OGG = "audio/ogg"
JSON = "application/json"
#: Upload kind of a recording's stems and timeline (their objects go into the event).
TRACK_UPLOAD_KIND: Final = "recording.track"
#: Prefix of the stand-in meeting id of a recording made without a meetings store.
NO_MEETING = "room-"


class AlreadyRecording(Conflict):
    """409: the room is already being recorded (or its recording is starting)."""

    default_code = "already_recording"


class NotRecording(NotFound):
    """404: the room is not being recorded."""

    default_code = "not_recording"


class NothingToRecord(BadRequest):
    """400: nobody is in the room."""

    default_code = "nothing_to_record"


class NoDiskSpace(InsufficientStorage):
    """507: ``RECORDING_DIR`` has less than ``RECORDING_MIN_FREE_MB`` free."""


class RecordingFailed(ParleyError):
    """500: FFmpeg or the files failed; the message says what (never a secret)."""

    default_code = "recording_failed"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _participant(peer: Peer) -> dict[str, Any]:
    md = peer.metadata
    return {
        "peerId": peer.id,
        "displayName": peer.display_name or peer.id,
        "email": md.email,
        "aiSettings": dict(md.ai_settings or {}),
        "integrations": dict(md.integrations or {}),
    }


def _participants(room: Room) -> list[Peer]:
    """Everyone a recording of ``room`` shows: joined peers (not the hidden ones), then broadcasters."""
    return room.visible_participants()


@dataclass
class ActiveRecording:
    manifest: Manifest
    session: RecordingSession
    stopping: asyncio.Future[dict[str, Any]] | None = None
    #: Producers whose close/pause/resume this recording follows.
    watched: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return self.manifest.recording_id

    @property
    def room_id(self) -> str:
        return self.manifest.room_id

    @property
    def log(self) -> Logger:
        return self.manifest.log

    def record(self, kind: str, peer_id: str, **details: Any) -> None:
        """A timeline event, now (wall clock; turned into ms from the composite's start at stop)."""
        self.manifest.events.append({"at": time.time(), "type": kind, "peerId": peer_id, **details})


def _is_share(producer: Producer) -> bool:
    """A screen share, as mediasoup-demo's and LiveKit's clients mark it in appData."""
    app_data = producer.app_data or {}
    return bool(app_data.get("share")) or app_data.get("source") in ("screen", "screen_share", "screenshare")


def _record_present(active: ActiveRecording, room: Room) -> None:
    """The timeline's first entries: who is there, muted, sharing, speaking."""
    for peer in _participants(room):
        active.record("join", peer.id, displayName=peer.display_name or peer.id)
        for producer in list(peer.producers.values()):
            if producer.closed:
                continue
            if _is_share(producer):
                active.record("screenShareStart", peer.id, producerId=producer.id)
            elif producer.paused:
                active.record("mute" if producer.kind == "audio" else "cameraOff", peer.id, producerId=producer.id)
    if room.dominant_speaker:
        active.record("dominantSpeaker", room.dominant_speaker)


class RecordingService:
    """The recordings of every room of the process, given what they need explicitly:
    the rooms to record, the upload queue the MP4s go to, and (each optional) the
    chat that says so, the meetings the recordings attach to and the event bus that
    announces them."""

    def __init__(
        self,
        settings: Settings,
        rooms: RoomManager,
        uploads: UploadQueue,
        *,
        chat: ChatService | None = None,
        meetings: MeetingService | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.settings = settings
        self.rooms = rooms
        self.uploads = uploads
        self.chat = chat
        self.meetings = meetings
        self.events = events
        self.active: dict[str, ActiveRecording] = {}
        #: Recordings that failed to start or reported an error (read by metrics).
        self.failures = 0
        self._starting: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._announcing: set[asyncio.Task[None]] = set()
        self._unwatch: Callable[[], None] = lambda: None
        #: Objects of the stems and timelines uploaded, by upload job id (for the event).
        self._track_refs: dict[str, dict[str, Any]] = {}

    @property
    def work_dir(self) -> Path:
        return self.settings.recording_work_dir

    @property
    def options(self) -> SegmentOptions:
        s = self.settings
        return SegmentOptions(
            width=s.recording_width,
            height=s.recording_height,
            fps=s.recording_fps,
            video_bitrate=s.recording_video_bitrate,
        )

    # -- lifecycle ----------------------------------------------------------------------

    def attach(self) -> None:
        self.uploads.on_uploaded(RECORDING_UPLOAD_KIND, self._recording_uploaded)
        self.uploads.on_uploaded(TRACK_UPLOAD_KIND, self._track_hook)
        self.rooms.register_method(START_RECORDING, self._on_start)
        self.rooms.register_method(STOP_RECORDING, self._on_stop)
        self._unwatch = self.rooms.watch_rooms(
            {
                "peerjoined": self._on_peer_joined,
                "peerleft": self._on_peer_left,
                "producercreated": self._on_producer_created,
                "dominantspeaker": self._on_dominant_speaker,
            }
        )
        self.rooms.observer.on("roomclosed", self._on_room_closed)

    async def close(self) -> None:
        self._unwatch()
        self.rooms.observer.remove_listener("roomclosed", self._on_room_closed)
        for room_id in list(self.active):
            self._spawn(self.stop(room_id))
        deadline = asyncio.get_running_loop().time() + 30
        while self._tasks:  # FFmpeg finishes each file, the mix, the uploads are queued (durable)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:  # a long mix: its manifest says "finishing", the next start finishes it
                break
            await asyncio.wait(list(self._tasks), timeout=left)
        if self._announcing:  # waiting for their upload: a little longer, not forever
            await asyncio.wait(list(self._announcing), timeout=10)
            for task in list(self._announcing):
                task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(
            lambda t: t.cancelled() or t.exception() is None or logger.warning("recording: {}", t.exception())
        )
        return task

    # -- following the room -------------------------------------------------------------

    def _on_peer_joined(self, room: Room, peer: Peer) -> None:
        active = self.active.get(room.id)
        if active is not None:
            active.manifest.participants.setdefault(peer.id, _participant(peer))
            active.record("join", peer.id, displayName=peer.display_name or peer.id)
            active.session.changed()

    def _on_peer_left(self, room: Room, peer: Peer) -> None:
        active = self.active.get(room.id)
        if active is not None:
            active.record("leave", peer.id)
            active.session.changed(urgent=True)

    def _on_producer_created(self, room: Room, peer: Peer, producer: Producer) -> None:
        active = self.active.get(room.id)
        if active is not None:
            self._watch(active, producer, peer.id)
            if _is_share(producer):
                active.record("screenShareStart", peer.id, producerId=producer.id)
            if producer.kind == "audio":
                active.session.audio_added()
            active.session.changed()

    def _on_dominant_speaker(self, room: Room, peer_id: str) -> None:
        active = self.active.get(room.id)
        if active is not None and peer_id:
            active.record("dominantSpeaker", peer_id)

    def _watch(self, active: ActiveRecording, producer: Producer, peer_id: str) -> None:
        """A closed or paused producer stalls the segment that records it: urgent.
        Mutes, cameras and shares go to the timeline."""
        if producer.id in active.watched:
            return
        active.watched.add(producer.id)
        session = active.session
        off, on = ("mute", "unmute") if producer.kind == "audio" else ("cameraOff", "cameraOn")
        share = _is_share(producer)

        def live() -> bool:
            return self.active.get(active.room_id) is active

        def closed() -> None:
            session.changed(urgent=True)
            active.watched.discard(producer.id)
            if share and live():
                active.record("screenShareStop", peer_id, producerId=producer.id)

        def paused() -> None:
            session.changed(urgent=True)
            if live() and not share:
                active.record(off, peer_id, producerId=producer.id)

        def resumed() -> None:
            session.changed()
            if live() and not share:
                active.record(on, peer_id, producerId=producer.id)

        producer.observer.on("close", closed)
        producer.observer.on("pause", paused)
        producer.observer.on("resume", resumed)

    def _on_room_closed(self, room: Room) -> None:
        if room.id in self.active:
            self._spawn(self.stop(room.id, room_closed=True))

    def _snapshot(self, room_id: str) -> Snapshot:
        """What the session records now: the room's primary router (a new one after
        its worker died), every live audio and video producer of the room's
        participants (paused ones flagged: their stems record silence) (made available on that router), and everyone's name
        in the order they joined."""

        async def snapshot() -> tuple[Router, list[Source], dict[str, str]]:
            room = self.rooms.get_room(room_id)
            active = self.active.get(room_id)
            if room is None or room.closed:
                raise RecordingError(f"room {room_id} is closed")
            sources: list[Source] = []
            names: dict[str, str] = {}
            for peer in _participants(room):
                names[peer.id] = peer.display_name or peer.id
                if active is not None:
                    active.manifest.participants.setdefault(peer.id, _participant(peer))
                for producer in list(peer.producers.values()):
                    if producer.closed or producer.kind not in ("audio", "video"):
                        continue
                    if active is not None:
                        self._watch(active, producer, peer.id)
                    await room.make_available(producer, room.primary)
                    sources.append(
                        Source(producer.id, producer.kind, peer.id, paused=producer.paused, share=_is_share(producer))
                    )
            return room.primary, sources, names

        return snapshot

    def _notify(self, room_id: str, method: RecordingNotification, data: dict[str, Any]) -> None:
        """Tell every joined peer of the room (one of the three recording notifications)."""
        self.rooms.notify_room(room_id, method, data)

    def _reporter(self, room_id: str, recording_id: str) -> Callable[[str], None]:
        def report(message: str) -> None:
            self.failures += 1
            self._notify(room_id, RECORDING_ERROR, {"recordingId": recording_id, "error": message})

        return report

    # -- start / stop -------------------------------------------------------------------

    async def _meeting_id(self, room_id: str) -> str:
        """The room's meeting (opened now if the first join is still being recorded);
        ``room-<roomId>`` (:data:`NO_MEETING`) if there is no meetings store or it is
        unreachable."""
        if self.meetings is not None:
            try:
                return (await self.meetings.ensure_open(room_id)).meeting_id
            except ChatError as error:
                logger.bind(room=room_id).warning("recording without a meeting: {}", error)
        return f"{NO_MEETING}{room_id}"

    def _check_disk(self, room_id: str) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.work_dir).free // (1024 * 1024)
        if free < self.settings.recording_min_free_mb:
            logger.bind(room=room_id).error(
                "recording not started: {} MiB free in {}, {} MiB needed",
                free,
                self.work_dir,
                self.settings.recording_min_free_mb,
            )
            raise NoDiskSpace(f"{free} MiB free for recordings, {self.settings.recording_min_free_mb} MiB needed")

    async def start(self, room_id: str, by: Peer | None = None) -> dict[str, Any]:
        """Record the room from now on; :class:`~control.errors.ParleyError` subclasses say why not."""
        room = self.rooms.get_room(room_id)
        if room is None:
            raise NotFound(f"room {room_id} not found")
        if room_id in self.active or room_id in self._starting:
            raise AlreadyRecording("the room is being recorded")
        check_recordings(len(self.active) + len(self._starting), self.settings.max_recordings)
        self._starting.add(room_id)
        try:
            if not _participants(room):
                raise NothingToRecord("nobody is in the room")
            self._check_disk(room_id)
            meeting_id = await self._meeting_id(room_id)
            started = datetime.now(UTC)
            recording_id = secrets.token_hex(8)
            manifest = Manifest(
                self.work_dir / recording_id,
                recording_id,
                room_id,
                meeting_id,
                f"{meeting_id}-{started.strftime('%Y%m%dT%H%M%SZ')}.mp4",
                started.timestamp(),
            )
            session = RecordingSession(
                manifest, self._snapshot(room_id), options=self.options, on_error=self._reporter(room_id, recording_id)
            )
            active = ActiveRecording(manifest, session)
            _record_present(active, room)
            self.active[room_id] = active
            try:
                await session.start()
            except (RecordingError, OSError) as error:
                self.active.pop(room_id, None)
                await session.abort()
                await asyncio.to_thread(shutil.rmtree, manifest.directory, True)
                active.log.error("recording not started: {}", error)
                self.failures += 1
                raise RecordingFailed(str(error)) from None
        finally:
            self._starting.discard(room_id)
        info = {"recordingId": active.id, "startedAt": _iso(manifest.started_at)}
        active.log.info("recording started")
        self._notify(room_id, RECORDING_STARTED, {**info, **({"peerId": by.id} if by else {})})
        if self.chat is not None:
            sender = {"peerId": by.id, "displayName": by.display_name or by.id} if by is not None else None
            self._spawn(self.chat.recording_started(room_id, recording_id=active.id, by=sender))
        return info

    async def stop(self, room_id: str, *, room_closed: bool = False) -> dict[str, Any]:
        """Stop the room's recording and queue its upload; :class:`NotRecording`, or the
        ``recording`` package's :class:`RecordingError` if nothing usable was recorded."""
        active = self.active.get(room_id)
        if active is None:
            raise NotRecording("the room is not being recorded")
        if active.stopping is None:
            active.stopping = asyncio.ensure_future(self._stop(active, room_closed))
        return await asyncio.shield(active.stopping)

    async def _stop(self, active: ActiveRecording, room_closed: bool) -> dict[str, Any]:
        manifest = active.manifest
        room = self.rooms.get_room(active.room_id)
        if room is not None:  # whoever is there now was in the recording
            for peer in _participants(room):
                manifest.participants.setdefault(peer.id, _participant(peer))
        try:
            ended_at = await active.session.stop_recorders()
            planned = await plan(manifest)
        except NothingRecorded as error:
            active.log.warning("recording dropped at stop: {}", error)
            await asyncio.to_thread(shutil.rmtree, manifest.directory, True)
            if not room_closed:
                self._reporter(active.room_id, active.id)(f"recording failed: {error}")
            raise
        except RecordingError as error:
            active.log.error("recording failed at stop: {} (segments kept in {})", error, manifest.directory)
            if not room_closed:
                self._reporter(active.room_id, active.id)(f"recording failed: {error}")
            raise
        finally:
            self.active.pop(active.room_id, None)
        # The composite is cut to exactly this length; the mix (which takes time in
        # proportion to the length) runs after the answer.
        duration = max(0.1, ended_at - planned.origin)
        key = recording_key(manifest.room_id, manifest.filename)
        info = {
            "recordingId": active.id,
            "key": key,
            "duration": round(duration, 3),
            "segments": len(manifest.segments),
        }
        active.log.info("recording stopped ({:.1f} s, {} segment(s)); mixing", duration, len(manifest.segments))
        if not room_closed:
            self._notify(active.room_id, RECORDING_STOPPED, info)
        self._spawn(self._finish(active, planned, room_closed))
        return info

    async def _finish(self, active: ActiveRecording, planned: Plan, room_closed: bool) -> None:
        """Join, mix, then hand everything to the upload queue. A failure keeps the files
        and the manifest (``finishing``): the next start tries again."""
        manifest = active.manifest
        try:
            finished = await finish_recording(manifest, manifest.directory / manifest.filename, planned=planned)
        except (RecordingError, OSError) as error:
            active.log.error("recording not finished: {} (kept in {})", error, manifest.directory)
            if not room_closed:
                self._reporter(active.room_id, active.id)(f"recording failed: {error}")
            return
        key, job = await self._submit(manifest, finished)
        active.log.info("recording finished ({:.1f} s), uploading to {}", finished.duration, key)
        self._announce(manifest, job)

    async def _submit(self, manifest: Manifest, done: RecordingResult | Finished) -> tuple[str, UploadJob]:
        """Hand the stems, the timeline and the MP4 to the durable upload queue (in
        that order); the event follows the MP4's upload and names the others."""
        key = recording_key(manifest.room_id, manifest.filename)
        folder = recording_key(manifest.room_id, manifest.recording_id)
        tracks = []
        for track in done.tracks:
            job = await self.uploads.submit(
                track.path,
                f"{folder}/{recording_key(manifest.room_id, track.path.name).rsplit('/', 1)[1]}",
                content_type=OGG,
                duration=track.duration,
                delete_local=True,
                kind=TRACK_UPLOAD_KIND,
            )
            participant = manifest.participants.get(track.peer_id, {})
            tracks.append(
                {
                    "peerId": track.peer_id,
                    "displayName": participant.get("displayName", track.peer_id),
                    "kind": "audio",
                    "offsetMs": round(track.offset * 1000),
                    "durationMs": round(track.duration * 1000),
                    "job": job.id,
                }
            )
        timeline_job = None
        if done.timeline is not None and done.timeline.exists():
            timeline_job = await self.uploads.submit(
                done.timeline,
                f"{folder}/timeline.json",
                content_type=JSON,
                delete_local=True,
                kind=TRACK_UPLOAD_KIND,
            )
        context = {
            "meetingId": manifest.meeting_id,
            "roomId": manifest.room_id,
            "recordingId": manifest.recording_id,
            "startedAt": _iso(manifest.started_at),
            "endedAt": _iso(manifest.ended_at or manifest.started_at + done.duration),
            "participants": list(manifest.participants.values()),
            "tracks": tracks,
            "timelineJob": timeline_job.id if timeline_job is not None else None,
        }
        job = await self.uploads.submit(
            manifest.directory / manifest.filename,
            key,
            content_type=MP4,
            duration=done.duration,
            delete_local=True,
            kind=RECORDING_UPLOAD_KIND,
            context=context,
        )
        manifest.state, manifest.key, manifest.upload_job = "submitted", key, job.id
        await manifest.save_async()
        return key, job

    def _announce(self, manifest: Manifest, job: UploadJob) -> None:
        task = asyncio.ensure_future(self._announce_stored(manifest, job))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _announce_stored(self, manifest: Manifest, job: UploadJob) -> None:
        """Once the upload is confirmed: the segments go, and the chat says
        "Recording stopped" (attached to the meeting); without the object if the
        upload does not finish in time (the queue goes on; the segments stay)."""
        log = manifest.log
        ref = None
        try:
            ref = await self.uploads.wait(job, timeout=UPLOAD_WAIT)
        except Exception as error:  # noqa: BLE001 - the queue keeps retrying on its own
            log.warning("upload not confirmed yet ({}); chat message without it", error)
        else:
            await asyncio.to_thread(shutil.rmtree, manifest.directory, True)
        if self.chat is None:
            return
        try:
            await self.chat.recording_stopped(
                manifest.room_id,
                recording_id=manifest.recording_id,
                recording=ref,
                meeting_id=manifest.meeting_id
                if ref is not None and not manifest.meeting_id.startswith(NO_MEETING)
                else None,
            )
        except Exception as error:  # noqa: BLE001
            log.warning("chat message not posted: {}", error)

    async def _recording_uploaded(self, job: UploadJob, ref: ObjectRef) -> None:
        """Upload-queue hook, once the MP4 is stored and verified: attach it to its
        meeting, then publish ``recording.completed`` (in that order, so the AI
        service finds the meeting complete). Retried by the queue until it returns:
        both steps are idempotent (the meeting keeps one entry per object, the event
        id is the job's)."""
        meeting_id = job.context.get("meetingId")
        if self.meetings is not None and meeting_id:
            try:
                await self.meetings.add_recording(meeting_id, ref)
            except ChatUnavailable:
                raise  # the store is down: the queue retries the hook
            except ChatError as error:  # no such meeting (no meetings store at start...)
                logger.bind(room=job.context.get("roomId"), meeting=meeting_id).warning(
                    "recording {} not attached to its meeting: {}", ref.key, error
                )
        if self.events is not None:
            await self.events.publish_upload(replace(job, context=await self._event_data(job, ref)), ref)

    async def _track_hook(self, job: UploadJob, ref: ObjectRef) -> None:
        """Upload-queue hook of a stem or a timeline: its object, for the event."""
        self._track_refs[job.id] = ref.to_event()

    async def _track_object(self, job_id: str, key_of: str, ref: ObjectRef) -> dict[str, Any]:
        """The object of a stem's or the timeline's upload (waited for: the event
        names stored objects only); a job finished by an earlier process is
        described from the composite's store."""
        if job_id in self._track_refs:
            return self._track_refs[job_id]
        try:
            return (await self.uploads.wait(job_id, timeout=UPLOAD_WAIT)).to_event()
        except KeyError:
            return {**ref.to_event(), "key": key_of, "size": 0, "etag": None, "sha256": None, "duration": None}

    async def _event_data(self, job: UploadJob, ref: ObjectRef) -> dict[str, Any]:
        """``recording.completed``'s data: the job's context with ``tracks[].object``
        and ``timeline`` (the objects of the stems and the timeline)."""
        context = dict(job.context)
        folder = ref.key.rsplit("/", 1)[0] + f"/{context.get('recordingId', '')}"
        tracks = []
        for track in context.get("tracks", []):
            track = dict(track)
            job_id = track.pop("job", None)
            if job_id:
                track["object"] = await self._track_object(job_id, f"{folder}/?", ref)
            tracks.append(track)
        context["tracks"] = tracks
        timeline_job = context.pop("timelineJob", None)
        context["timeline"] = (
            await self._track_object(timeline_job, f"{folder}/timeline.json", ref) if timeline_job else None
        )
        return context

    # -- recovery -----------------------------------------------------------------------

    async def recover(self) -> int:
        """Finish what a previous process left in ``RECORDING_DIR``: join and submit
        the segments of recordings it did not stop (the event follows the upload),
        remove those whose upload has been confirmed. Returns how many it submitted."""
        submitted = 0
        uploads = self.uploads
        for manifest in await asyncio.to_thread(Manifest.find, self.work_dir):
            log = manifest.log
            out = manifest.directory / manifest.filename
            if manifest.owned_by_another_process():
                log.info(
                    "recording in {} belongs to running process {}: left alone", manifest.directory, manifest.owner_pid
                )
                continue
            manifest.adopt()
            try:
                if manifest.state == "submitted":
                    job = uploads.get(manifest.upload_job or "")
                    if job is not None:
                        self._announce(manifest, job)
                        continue
                    if not out.exists():  # uploaded and confirmed: the queue deleted the MP4
                        await asyncio.to_thread(shutil.rmtree, manifest.directory, True)
                        continue
                    duration = manifest.ended_at - manifest.started_at if manifest.ended_at else 0.0
                    timeline_file = manifest.directory / "timeline.json"
                    finished = Finished(duration, [], [], timeline_file, manifest.started_at)
                else:
                    log.warning("recording left unfinished by a previous process: finishing it")
                    finished = await finish_recording(manifest, out)
                _key, job = await self._submit(manifest, finished)
                self._announce(manifest, job)
                submitted += 1
            except NothingRecorded as error:
                log.warning("leftover recording in {} dropped: {}", manifest.directory, error)
                await asyncio.to_thread(shutil.rmtree, manifest.directory, True)
            except (RecordingError, OSError, ValueError) as error:
                log.error("leftover recording in {} not recovered: {}", manifest.directory, error)
        return submitted

    # -- signaling ----------------------------------------------------------------------

    def _check_request(self, method: str, data: object) -> None:
        """Fields only: who may record (``roomRecord``) is checked before the request gets here."""
        if data not in (None, {}):
            raise ProtooError(400, f"invalid_request: {method} takes no fields")

    async def _on_start(self, room: Room, peer: Peer, data: dict[str, Any]) -> dict[str, Any]:
        self._check_request(START_RECORDING, data)
        try:
            # A hidden participant (a recorder bot) is not named to the others.
            return await self.start(room.id, by=None if peer.hidden else peer)
        except ParleyError as error:
            raise _protoo(error) from None

    async def _on_stop(self, room: Room, peer: Peer, data: dict[str, Any]) -> dict[str, Any]:
        self._check_request(STOP_RECORDING, data)
        try:
            return await self.stop(room.id)
        except ParleyError as error:
            raise _protoo(error) from None
        except RecordingError as error:
            raise _protoo(RecordingFailed(str(error))) from None


def _protoo(error: ParleyError) -> ProtooError:
    """Signaling clients read ``"<code>: <message>"`` as the error reason (as chat's)."""
    return ProtooError(error.status, f"{error.code}: {error.message}")


#: The recording service (``control.recording.setup``).
RECORDINGS: Final[web.AppKey[RecordingService]] = web.AppKey("recordings", RecordingService)

"""Recordings survive failures, end to end with real peers (aiortc), the real S3
server and the real RabbitMQ:

- a segment's FFmpeg is killed mid-recording and the broker is unreachable when the
  recording stops: peers are told, a new segment records, the MP4 (about as long as
  the recording) reaches S3, and ``recording.completed`` waits in the outbox until
  the broker is back;
- the whole server process is killed (SIGKILL) while recording: the next process
  started on the same ``DATA_DIR`` joins the segments, uploads the MP4, publishes
  the event and empties the recording's work directory; no process is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.recording import RECORDINGS
from tests.e2e.harness import running_server
from tests.e2e.media_peer import MediaPeer, ToneTrack
from tests.e2e.recording_helpers import (
    GREEN,
    PEOPLE,
    RED,
    GatedProxy,
    SolidTrack,
    _bind_queue,
    _close,
    _get_event,
    _get_event_or_none,
    _pixels,
    codecs_and_duration,
    drop_queue,
)
from tests.plugin_workers import require_worker_binary
from tests.polling import eventually
from tests.services import free_ports

pytestmark = pytest.mark.timeout(240)


def _peers(ws_url: Any, room: str) -> list[MediaPeer]:
    peers = []
    for name, yuv, _rgb, tone in PEOPLE[:2]:
        peer = MediaPeer(ws_url(room, name), name, display_name=name.title(), metadata={"email": f"{name}@example.org"})
        peer.tracks = [ToneTrack(tone), SolidTrack(yuv)]
        peers.append(peer)
    return peers


async def _join(peers: list[MediaPeer]) -> None:
    for peer in peers:
        await peer.join()
    await peers[0].wait_media(peers[1].peer_id, timeout=45)
    await peers[1].wait_media(peers[0].peer_id, timeout=45)


async def _close_all(peers: list[MediaPeer]) -> None:
    for peer in peers:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(peer.close(), 15)


# -- FFmpeg killed, broker down at stop ----------------------------------------------------


async def test_ffmpeg_killed_and_broker_down_at_stop(tmp_path: Path, s3: Any, rabbitmq: Any) -> None:
    bucket = f"rec-{secrets.token_hex(4)}"
    ai_queue = f"test.ai.{secrets.token_hex(4)}"
    host_port = rabbitmq.url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = GatedProxy(host, int(port))
    app_broker = rabbitmq.url.replace(host_port, f"127.0.0.1:{proxy.port}")
    connection, channel, queue = await asyncio.to_thread(_bind_queue, rabbitmq.url)  # not via the proxy
    try:
        async with (
            running_server(
                tmp_path,
                minio_endpoint=s3.endpoint,
                minio_access_key=s3.access_key,
                minio_secret_key=s3.secret_key,
                minio_region=s3.region,
                minio_bucket=bucket,
                rabbitmq_url=app_broker,
                rabbitmq_ai_queue=ai_queue,
            ) as server,
            aiohttp.ClientSession() as http,
        ):
            peers = _peers(server.ws_url, "killed")
            try:
                await _join(peers)
                info = await peers[0].signaling.request("startRecording", {}, timeout=30)
                t0 = time.monotonic()
                session = server.app[RECORDINGS].active["killed"].session
                await asyncio.sleep(3)

                # 1. FFmpeg dies: everyone is told, a new segment records.
                assert session.current is not None
                killed = session.current.pid
                assert killed is not None
                os.kill(killed, signal.SIGKILL)
                killed_at = time.monotonic() - t0
                for peer in peers:
                    note = await peer.signaling.wait_for("recordingError", timeout=10)
                    assert note["recordingId"] == info["recordingId"] and note["error"], note
                await eventually(
                    lambda: session.current and session.current.pid != killed and session.current.t0 is not None,
                    what="a new segment after FFmpeg was killed",
                    interval=0.1,
                )
                restarted_at = time.monotonic() - t0
                assert session.current.pid is not None
                os.kill(session.current.pid, 0)  # it runs
                await asyncio.sleep(3)

                # 2. The broker becomes unreachable; the recording stops.
                proxy.down()
                assert proxy.refuses()
                wall = time.monotonic() - t0
                stopped = await peers[1].signaling.request("stopRecording", {}, timeout=60)
                timeline = (
                    f"FFmpeg killed at {killed_at:.2f} s, new segment at {restarted_at:.2f} s, "
                    f"stop at {wall:.2f} s; answer {stopped}"
                )
                assert stopped["recordingId"] == info["recordingId"], timeline
                assert stopped["segments"] >= 2, timeline
                # The killed FFmpeg loses at most its last second; its place in time is kept.
                assert abs(stopped["duration"] - wall) <= 1.5, timeline
                key = stopped["key"]
                assert key.startswith("recordings/killed/") and key.endswith(".mp4"), key

                # 3. The MP4 reaches S3 without the broker.
                client = s3.client()
                deadline = time.monotonic() + 60
                while True:
                    try:
                        head = await asyncio.to_thread(client.head_object, Bucket=bucket, Key=key)
                        break
                    except client.exceptions.ClientError:
                        assert time.monotonic() < deadline, f"{key} not in S3 ({timeline})"
                        await asyncio.sleep(0.3)
                assert head["ContentType"] == "video/mp4"

                # 4. ... and its event waits in the outbox, not delivered.
                deadline = time.monotonic() + 30
                while True:
                    async with http.get(f"{server.base_url}/api/events/outbox") as response:
                        assert response.status == 200
                        outbox = await response.json()
                    waiting = [e for e in outbox["events"] if e["type"] == "recording.completed"]
                    if waiting:
                        break
                    assert time.monotonic() < deadline, f"recording.completed not in the outbox: {outbox}"
                    await asyncio.sleep(0.3)
                assert waiting[0]["event"]["data"]["object"]["key"] == key, waiting
                await asyncio.sleep(1)
                assert await asyncio.to_thread(_get_event_or_none, channel, queue, bucket=bucket) is None

                # 5. The broker is back: the event arrives.
                proxy.up()
                event = await asyncio.to_thread(_get_event, channel, queue, 90, bucket=bucket)
                assert event["type"] == "recording.completed"
                assert event["eventId"] == waiting[0]["eventId"]
                assert event["data"]["object"]["key"] == key and event["data"]["object"]["bucket"] == bucket
                assert {p["peerId"] for p in event["data"]["participants"]} == {"alice", "bob"}
            finally:
                await _close_all(peers)

        local = tmp_path / "downloaded.mp4"
        await asyncio.to_thread(client.download_file, bucket, key, str(local))
        codecs, duration = await asyncio.to_thread(codecs_and_duration, local)
        assert codecs == ["aac", "h264"], codecs
        assert abs(duration - wall) <= 1.5, (duration, timeline)
        # Before the kill and after the restart: alice | bob.
        for at in (killed_at / 2, (restarted_at + duration) / 2):
            left, right = await asyncio.to_thread(_pixels, local, at, [(160, 180), (480, 180)])
            assert _close(left, RED) and _close(right, GREEN), (at, left, right, timeline)
    finally:
        proxy.close()

        await drop_queue(connection, channel, ai_queue)


# -- the whole process killed ---------------------------------------------------------------

TAG_VAR = "PARLEY_TEST_PROCESS_TAG"


def _tagged(tag: str) -> dict[int, str]:
    """Our processes whose environment carries ``tag`` (the server, its workers and
    FFmpeg, wherever they were re-parented): pid -> command line."""
    marker = f"{TAG_VAR}={tag}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            state = next(
                (line for line in (entry / "status").read_text().splitlines() if line.startswith("State:")), ""
            )
        except OSError:
            continue
        if "zombie" not in state:
            found[int(entry.name)] = cmdline
    return found


async def _wait_gone(tag: str, what: str, timeout: float) -> dict[int, str]:
    """The tagged processes whose command line contains ``what`` still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = {pid: cmd for pid, cmd in _tagged(tag).items() if what in cmd}
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.2)


class ServerProcess:
    """``python -m control run`` with the given environment, its log in a file."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.env, self.cwd, self.log = env, cwd, log
        self.proc: subprocess.Popen | None = None
        self.port = int(env["PORT"])

    async def start(self, timeout: float = 90) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "control", "run"],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc.poll() is None, f"server exited ({self.proc.returncode}):\n{self.tail()}"
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(
                        f"http://127.0.0.1:{self.port}/api/health", timeout=aiohttp.ClientTimeout(total=2)
                    ) as response:
                        if response.status == 200:
                            return
                assert time.monotonic() < deadline, f"server not healthy in {timeout:.0f} s:\n{self.tail()}"
                await asyncio.sleep(0.2)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def ws_url(self, room: str, peer: str) -> str:
        return f"ws://127.0.0.1:{self.port}/?roomId={room}&peerId={peer}"


async def test_a_killed_server_s_recording_is_finished_at_the_next_start(
    tmp_path: Path, s3: Any, rabbitmq: Any
) -> None:
    require_worker_binary()
    tag = secrets.token_hex(8)
    bucket = f"rec-{secrets.token_hex(4)}"
    ai_queue = f"test.ai.{secrets.token_hex(4)}"
    data_dir = tmp_path / "data"
    work_dir = data_dir / "recording-work"
    env = {
        **os.environ,
        # a stray configuration of the caller does not apply (empty = unset)
        "MONGODB_URI": "",
        "RECORDING_DIR": "",
        "ADMIN_TOKEN": "",
        "MEDIASOUP_ANNOUNCED_ADDRESS": "",
        "PORT": str(free_ports(1)[0]),
        "HOST": "127.0.0.1",
        "DATA_DIR": str(data_dir),
        **s3.env(),
        "MINIO_BUCKET": bucket,
        "MINIO_REGION": s3.region,
        "RABBITMQ_URL": rabbitmq.url,
        "RABBITMQ_AI_QUEUE": ai_queue,
        "MEDIASOUP_NUM_WORKERS": "1",
        "MEDIASOUP_LISTEN_IP": "127.0.0.1",
        "PEER_RECONNECT_GRACE_SECONDS": "0",
        "LOG_LEVEL": "DEBUG",
        TAG_VAR: tag,
    }
    connection, channel, queue = await asyncio.to_thread(_bind_queue, rabbitmq.url)
    first = ServerProcess(env, tmp_path, tmp_path / "server-1.log")
    second = ServerProcess(env, tmp_path, tmp_path / "server-2.log")
    try:
        # 1. Recording, then the process is killed.
        await first.start()
        peers = _peers(first.ws_url, "crash")
        try:
            await _join(peers)
            async with aiohttp.ClientSession() as http:
                async with http.post(f"http://127.0.0.1:{first.port}/api/rooms/crash/recording") as response:
                    assert response.status == 201, await response.text()
                    info = await response.json()
            t0 = time.monotonic()
            await asyncio.sleep(5)
            assert first.proc is not None
            first.proc.send_signal(signal.SIGKILL)
            recorded = time.monotonic() - t0
            await asyncio.to_thread(first.proc.wait, 10)
        finally:
            await _close_all(peers)

        manifest = json.loads((work_dir / info["recordingId"] / "manifest.json").read_text())
        assert manifest["state"] == "recording" and manifest["segments"], manifest
        # The workers notice their channel closed and exit.
        left = await _wait_gone(tag, "mediasoup-worker", 15)
        assert not left, f"mediasoup workers outlived their server: {left}"
        # FFmpeg may finish its file by itself or be left running (the next start interrupts it).
        orphans = await _wait_gone(tag, "ffmpeg", 5)
        # What the crash left (a segment FFmpeg finished has a duration in its header).
        left_behind = {
            seg.name: (
                await asyncio.to_thread(
                    subprocess.run,
                    ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(seg)],
                    capture_output=True,
                    text=True,
                )
            ).stdout.strip()
            for seg in sorted(work_dir.rglob("*.mkv"))
        }

        # 2. The next process finishes it: S3, the event, an empty work directory.
        await second.start()
        event = await asyncio.to_thread(_get_event, channel, queue, 90, bucket=bucket)
        data = event["data"]
        assert event["type"] == "recording.completed", event
        assert data["roomId"] == "crash" and data["object"]["bucket"] == bucket, data
        key = data["object"]["key"]
        assert key.startswith("recordings/crash/") and key.endswith(".mp4"), key
        assert key.split("/")[-1] == manifest["filename"], (key, manifest["filename"])
        by_id = {p["peerId"]: p for p in data["participants"]}
        assert set(by_id) == {"alice", "bob"} and by_id["bob"]["email"] == "bob@example.org", data
        # The stems and the timeline were recovered too, beside the composite.
        folder = f"recordings/crash/{info['recordingId']}/"
        assert {t["peerId"] for t in data["tracks"]} == {"alice", "bob"}, data["tracks"]
        assert all(t["object"]["key"].startswith(folder) and t["durationMs"] > 3000 for t in data["tracks"]), data
        assert data["timeline"]["key"] == folder + "timeline.json", data["timeline"]

        client = s3.client()
        listed = await asyncio.to_thread(
            client.list_objects_v2, Bucket=bucket, Prefix="recordings/crash/", Delimiter="/"
        )
        assert [o["Key"] for o in listed.get("Contents", [])] == [key], listed
        # ... and the stems and the timeline in the recording's folder beside it.
        assert [p["Prefix"] for p in listed.get("CommonPrefixes", [])] == [folder], listed
        local = tmp_path / "recovered.mp4"
        await asyncio.to_thread(client.download_file, bucket, key, str(local))
        codecs, duration = await asyncio.to_thread(codecs_and_duration, local)
        diagnosis = (
            f"recorded {recorded:.2f} s; segments left by the crash (header duration): {left_behind}; "
            f"FFmpeg still running 5 s after it: {orphans}; server 2:\n{second.tail()}"
        )
        assert codecs == ["aac", "h264"], f"{codecs}; {diagnosis}"
        assert 3 < duration <= recorded + 1.0, f"MP4 of {duration} s; {diagnosis}"
        # FFmpeg is told to finish its file when its server dies: nothing recorded is lost.
        assert duration >= recorded - 0.5, f"MP4 of {duration} s; {diagnosis}"
        left_tile, right_tile = await asyncio.to_thread(_pixels, local, duration / 2, [(160, 180), (480, 180)])
        assert _close(left_tile, RED) and _close(right_tile, GREEN), f"{left_tile} {right_tile}; {diagnosis}"

        deadline = time.monotonic() + 30
        while work_dir.exists() and any(work_dir.iterdir()):
            assert time.monotonic() < deadline, f"left in {work_dir}: {list(work_dir.rglob('*'))}; {diagnosis}"
            await asyncio.sleep(0.2)

        # 3. A clean stop leaves nothing running: no FFmpeg, no worker.
        assert second.proc is not None
        second.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.proc.wait, 30) == 0, second.tail()
        left = await _wait_gone(tag, "", 10)
        assert not left, f"processes left behind: {left}"
    finally:
        for server in (first, second):
            if server.proc is not None and server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(10)
        for pid in _tagged(tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

        await drop_queue(connection, channel, ai_queue)

"""mediasoup-demo's broadcasters/ffmpeg.sh, step by step: FFmpeg publishes over
two PlainTransports created through the HTTP API, and a WebRTC peer decodes it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import running_server
from tests.e2e.media_peer import MediaPeer

pytestmark = pytest.mark.timeout(120)

AUDIO_SSRC, AUDIO_PT = 1111, 100
VIDEO_SSRC, VIDEO_PT = 2222, 101


def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.fail("ffmpeg is not installed (Debian package ffmpeg; `make setup` installs it)", pytrace=False)
    return path


def make_media_file(path: Path) -> Path:
    """A 2 s WebM with Opus audio (a tone) and VP8 video (test pattern), made by FFmpeg."""
    subprocess.run(
        [
            _ffmpeg(),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=2",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=15:duration=2",
            "-c:a",
            "libopus",
            "-c:v",
            "libvpx",
            "-b:v",
            "300k",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


async def test_ffmpeg_broadcaster_is_received_by_a_webrtc_peer(tmp_path: Path) -> None:
    media = await asyncio.to_thread(make_media_file, tmp_path / "source.webm")
    async with running_server(tmp_path) as server:
        viewer = MediaPeer(server.ws_url("live", "viewer"), "viewer", audio=False, video=False)
        await viewer.join()
        base = f"{server.base_url}/rooms/live"
        ffmpeg = None
        async with aiohttp.ClientSession() as http:
            try:
                async with http.get(base) as resp:  # the room exists
                    assert resp.status == 200 and "codecs" in await resp.json()
                async with http.post(
                    f"{base}/broadcasters",
                    json={"id": "ffmpeg", "displayName": "Broadcaster", "device": {"name": "FFmpeg"}},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    assert await resp.json() == {"peers": []}
                new_peer = await viewer.signaling.wait_for("newPeer")
                assert new_peer == {
                    "id": "ffmpeg",
                    "displayName": "Broadcaster",
                    "device": {"flag": "broadcaster", "name": "FFmpeg", "version": None},
                }
                transports = {}
                for kind in ("audio", "video"):
                    async with http.post(
                        f"{base}/broadcasters/ffmpeg/transports",
                        json={"type": "plain", "comedia": True, "rtcpMux": False},
                    ) as resp:
                        assert resp.status == 200, await resp.text()
                        transports[kind] = await resp.json()
                        assert set(transports[kind]) == {"id", "ip", "port", "rtcpPort"}
                        assert transports[kind]["ip"] == "127.0.0.1"
                async with http.post(
                    f"{base}/broadcasters/ffmpeg/transports/{transports['audio']['id']}/producers",
                    json={
                        "kind": "audio",
                        "rtpParameters": {
                            "codecs": [
                                {
                                    "mimeType": "audio/opus",
                                    "payloadType": AUDIO_PT,
                                    "clockRate": 48000,
                                    "channels": 2,
                                    "parameters": {"sprop-stereo": 1},
                                }
                            ],
                            "encodings": [{"ssrc": AUDIO_SSRC}],
                        },
                    },
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    audio_id = (await resp.json())["id"]
                async with http.post(
                    f"{base}/broadcasters/ffmpeg/transports/{transports['video']['id']}/producers",
                    json={
                        "kind": "video",
                        "rtpParameters": {
                            "codecs": [{"mimeType": "video/vp8", "payloadType": VIDEO_PT, "clockRate": 90000}],
                            "encodings": [{"ssrc": VIDEO_SSRC}],
                        },
                    },
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    video_id = (await resp.json())["id"]

                a, v = transports["audio"], transports["video"]
                # As the demo's ffmpeg.sh, plus pkt_size=1200: FFmpeg's default 1472-byte RTP
                # packets plus mediasoup's header extensions and SRTP tag exceed what aiortc
                # (the receiving peer here) accepts; browsers take them.
                ffmpeg = subprocess.Popen(
                    [
                        _ffmpeg(),
                        "-re",
                        "-v",
                        "error",
                        "-stream_loop",
                        "-1",
                        "-i",
                        str(media),
                        "-map",
                        "0:a:0",
                        "-acodec",
                        "libopus",
                        "-ab",
                        "64k",
                        "-ac",
                        "2",
                        "-ar",
                        "48000",
                        "-map",
                        "0:v:0",
                        "-pix_fmt",
                        "yuv420p",
                        "-c:v",
                        "libvpx",
                        "-b:v",
                        "300k",
                        "-deadline",
                        "realtime",
                        "-cpu-used",
                        "4",
                        "-f",
                        "tee",
                        f"[select=a:f=rtp:ssrc={AUDIO_SSRC}:payload_type={AUDIO_PT}]"
                        f"rtp://{a['ip']}:{a['port']}?rtcpport={a['rtcpPort']}&pkt_size=1200|"
                        f"[select=v:f=rtp:ssrc={VIDEO_SSRC}:payload_type={VIDEO_PT}]"
                        f"rtp://{v['ip']}:{v['port']}?rtcpport={v['rtcpPort']}&pkt_size=1200",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                await viewer.wait_media("ffmpeg", video_frames=10, audio_samples=48000 // 2, timeout=40)
                video = viewer.from_peer("ffmpeg", "video")
                assert [r.producer_id for r in video] == [video_id] and video[0].width == 320
                assert [r.producer_id for r in viewer.from_peer("ffmpeg", "audio")] == [audio_id]

                # Deleting the broadcaster: the peer is told, its consumers close.
                async with http.delete(f"{base}/broadcasters/ffmpeg") as resp:
                    assert resp.status == 200 and await resp.text() == "broadcaster deleted"
                assert await viewer.signaling.wait_for("peerClosed") == {"peerId": "ffmpeg"}
                for received in viewer.from_peer("ffmpeg"):
                    await viewer.signaling.wait_for("consumerClosed", lambda d: d["consumerId"] == received.consumer_id)
            finally:
                if ffmpeg is not None:
                    ffmpeg.kill()
                    ffmpeg.wait(timeout=10)
                await viewer.close()
        assert ffmpeg.returncode is not None
        await asyncio.sleep(0)

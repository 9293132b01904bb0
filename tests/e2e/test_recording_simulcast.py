"""A simulcast producer is recorded from its best layer: FFmpeg publishes three VP8
encodings (red 160x120, green 320x240, blue 640x360, one SSRC each) as one producer
of a broadcaster's PlainTransport; the recording's consumer prefers the highest
spatial layer, and the MP4's tile is blue. And a camera whose picture changes size
goes on in the same segment without a hole (FFmpeg's graph is not rebuilt: that
took a second of video, or ended the segment)."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.recording import RECORDINGS
from tests.e2e.harness import running_server
from tests.e2e.media_peer import MediaPeer
from tests.e2e.recording_helpers import (
    BLUE,
    GREEN,
    LEFT,
    PEOPLE,
    QUADRANTS,
    SolidTrack,
    _close,
    _peer,
    _stored,
    codecs_and_duration,
    frame_at,
    largest_hole,
    packets,
    pixel,
)
from tests.e2e.test_broadcaster_ffmpeg import _ffmpeg

pytestmark = pytest.mark.timeout(120)

VIDEO_PT = 101
#: (SSRC, FFmpeg colour, size), lowest layer first.
LAYERS = [(3001, "red", "160x120"), (3002, "green", "320x240"), (3003, "blue", "640x360")]


class _Forward(asyncio.DatagramProtocol):
    """Sends what it receives on from one socket: mediasoup's PlainTransport (comedia)
    takes RTP from one address only, FFmpeg sends each encoding from its own."""

    def __init__(self, out: asyncio.DatagramTransport, to: tuple[str, int]) -> None:
        self.out, self.to = out, to

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.out.sendto(data, self.to)


async def _relay(rtp: tuple[str, int], rtcp: tuple[str, int]) -> tuple[list[tuple[int, int]], list[Any]]:
    """One local (RTP, RTCP) port pair per layer, each kind forwarded from one socket
    (the sender reports matter: mediasoup aligns the layers' timestamps with them)."""
    loop = asyncio.get_running_loop()
    ports: list[tuple[int, int]] = []
    transports: list[Any] = []
    outs = []
    for _kind in (rtp, rtcp):
        out, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        outs.append(out)
        transports.append(out)
    for _layer in LAYERS:
        pair = []
        for out, to in zip(outs, (rtp, rtcp), strict=True):
            inbound, _ = await loop.create_datagram_endpoint(
                functools.partial(_Forward, out, to), local_addr=("127.0.0.1", 0)
            )
            pair.append(inbound.get_extra_info("sockname")[1])
            transports.append(inbound)
        ports.append((pair[0], pair[1]))
    return ports, transports


#: A camera's clock: frames paced in real time and stamped with the wall clock when
#: made, so a starved encoder drops frames as a camera would instead of slowing its
#: media clock (with ``-re`` alone, FFmpeg at 0.2x under load sent RTP timestamps
#: that advanced at a fifth of real time: 6 s of recording held 1.9 s of video).
CAMERA_CLOCK = "realtime,setpts=(RTCTIME-RTCSTART)/(TB*1000000)"


def _publish(ports: list[tuple[int, int]]) -> subprocess.Popen[bytes]:
    args = [_ffmpeg(), "-v", "error"]
    for _ssrc, colour, size in LAYERS:
        args += ["-f", "lavfi", "-i", f"color=c={colour}:s={size}:r=15,{CAMERA_CLOCK}"]
    for n, ((ssrc, _colour, _size), port) in enumerate(zip(LAYERS, ports, strict=True)):
        args += ["-map", f"{n}:v", "-fps_mode", "passthrough", "-pix_fmt", "yuv420p"]
        args += ["-c:v", "libvpx", "-b:v", "200k"]
        args += ["-deadline", "realtime", "-cpu-used", "8", "-g", "5"]
        args += ["-f", "rtp", "-ssrc", str(ssrc), "-payload_type", str(VIDEO_PT)]
        args += [f"rtp://127.0.0.1:{port[0]}?rtcpport={port[1]}&pkt_size=1200"]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _current_layers(server: Any, room: str, timeout: float = 20) -> dict[str, int]:
    """The recording consumer's current layers, once it has some."""
    deadline = time.monotonic() + timeout
    while True:
        active = server.app[RECORDINGS].active.get(room)
        segment = active.session.current if active is not None else None
        if segment is not None and segment.inputs:
            consumer = segment.inputs[0].consumer
            if consumer.current_layers and consumer.current_layers.get("spatialLayer") == 2:
                return dict(consumer.current_layers)
        assert time.monotonic() < deadline, "the recording never consumed the best layer"
        await asyncio.sleep(0.1)


async def test_a_simulcast_video_is_recorded_from_its_best_layer(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        base = f"{server.base_url}/rooms/sim"
        ffmpeg = None
        relay: list[asyncio.BaseTransport] = []
        viewer = MediaPeer(server.ws_url("sim", "viewer"), "viewer", audio=False, video=False)
        await viewer.join()  # the room exists while someone is in it
        async with aiohttp.ClientSession() as http:
            try:
                async with http.get(base) as resp:
                    assert resp.status == 200
                async with http.post(
                    f"{base}/broadcasters", json={"id": "cam", "displayName": "Cam", "device": {"name": "FFmpeg"}}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                async with http.post(
                    f"{base}/broadcasters/cam/transports", json={"type": "plain", "comedia": True, "rtcpMux": False}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    transport = await resp.json()
                async with http.post(
                    f"{base}/broadcasters/cam/transports/{transport['id']}/producers",
                    json={
                        "kind": "video",
                        "rtpParameters": {
                            "codecs": [{"mimeType": "video/vp8", "payloadType": VIDEO_PT, "clockRate": 90000}],
                            "encodings": [{"ssrc": ssrc} for ssrc, _c, _s in LAYERS],
                        },
                    },
                ) as resp:
                    assert resp.status == 200, await resp.text()
                ports, relay = await _relay(
                    (transport["ip"], transport["port"]), (transport["ip"], transport["rtcpPort"])
                )
                ffmpeg = _publish(ports)
                await asyncio.sleep(2)

                async with http.post(f"{server.base_url}/api/rooms/sim/recording") as resp:
                    assert resp.status == 201, await resp.text()
                layers = await _current_layers(server, "sim")
                active = server.app[RECORDINGS].active["sim"]
                segment = active.session.current
                assert segment is not None
                consumer = segment.inputs[0].consumer
                assert consumer.type == "simulcast", consumer.type
                assert consumer.preferred_layers is not None and consumer.preferred_layers["spatialLayer"] == 2
                dump = await consumer.dump()
                await asyncio.sleep(5)
                async with http.delete(f"{server.base_url}/api/rooms/sim/recording") as resp:
                    assert resp.status == 200, await resp.text()
                    stopped = await resp.json()
                path = await _stored(server, stopped["key"])
            finally:
                if ffmpeg is not None:
                    ffmpeg.kill()
                    ffmpeg.wait(timeout=10)
                for item in relay:
                    item.close()
                await viewer.close()

    assert layers["spatialLayer"] == 2, (layers, dump)
    codecs, duration = await asyncio.to_thread(codecs_and_duration, path)
    assert "h264" in codecs, codecs
    # The camera's tile (videos first, then the viewer's name card) has the best
    # layer's colour (not the red or green of the lower ones).
    # The recording's first frame waits for a key frame of the best layer (FFmpeg
    # here sends one every 1/3 s: the recorder's PLI has no way back to it), so
    # the picture is looked at within the video's own span.
    last = (await asyncio.to_thread(packets, path, "v:0"))[-1][0]
    assert last >= 3.0, (last, duration, stopped)
    for at in (last - 2.5, last - 1.0):
        colour = pixel((await asyncio.to_thread(frame_at, path, at)), *LEFT)
        assert _close(colour, BLUE), (at, colour, layers, stopped)


async def test_a_camera_that_changes_size_goes_on_in_the_same_segment(tmp_path: Path) -> None:
    """bob's camera doubles its size mid-recording (as a browser adapting its
    resolution, or a layer switch): the segment goes on (no FFmpeg restart, its
    graph is not rebuilt) and his tile stays green; carol, without video, is a card."""
    async with running_server(tmp_path) as server:
        alice, bob = (_peer(server, "size", i) for i in range(2))
        carol = MediaPeer(server.ws_url("size", "carol"), "carol", audio=False, video=False)
        camera = SolidTrack(PEOPLE[1][1])
        bob.tracks = [bob.tracks[0], camera]
        try:
            for peer in (alice, bob, carol):
                await peer.join()
            await alice.wait_media("bob", timeout=45)
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{server.base_url}/api/rooms/size/recording") as response:
                    assert response.status == 201, await response.text()
                await asyncio.sleep(3)
                camera.width, camera.height = 320, 240
                await asyncio.sleep(4)
                async with http.delete(f"{server.base_url}/api/rooms/size/recording") as response:
                    assert response.status == 200, await response.text()
                    stopped = await response.json()
            path = await _stored(server, stopped["key"])
        finally:
            for peer in (alice, bob, carol):
                await peer.close()

    assert stopped["segments"] == 1, stopped
    video = await asyncio.to_thread(packets, path, "v:0")
    assert video[-1][0] >= 5.5 and largest_hole(video) <= 1 / 15 + 0.001, (video[-1], largest_hole(video), stopped)
    for at in (video[-1][0] - 1.0, video[-1][0] - 2.0):
        colour = pixel((await asyncio.to_thread(frame_at, path, at)), *QUADRANTS[1])
        assert _close(colour, GREEN), (at, colour, stopped)

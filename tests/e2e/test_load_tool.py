"""``parley load-test`` against a local server: real WebRTC peers (pymediasoup + aiortc)
publishing the pre-encoded clip and subscribers counting what arrives; bad input fails
in seconds with one clear line."""

from __future__ import annotations

import asyncio
import io
import re
import socket
import sys
import time
from pathlib import Path

import pytest

from control.loadtest.runner import LoadTestError, LoadTestOptions, check_target, run_load_test
from control.loadtest.stats import TrackCounter, is_vp8_keyframe
from tests.e2e.harness import running_server
from tests.polling import eventually

pytestmark = pytest.mark.timeout(180)

API_KEY = "load-test-key"
API_SECRET = "l" * 40
SUMMARY = re.compile(
    r"^load-test: (\d+) publishers, (\d+) subscribers, (\d+) tracks, join p50/p99 \d+ms/\d+ms, "
    r"first packet p50/p99 \d+ms/\d+ms, bitrate [\d.]+ Mbps received, loss ([\d.]+)%$",
    re.M,
)


async def test_load_test_through_the_sfu(tmp_path: Path) -> None:
    async with running_server(tmp_path, api_key=API_KEY, api_secret=API_SECRET) as server:
        out = io.StringIO()
        options = LoadTestOptions(
            url=f"ws://127.0.0.1:{server.port}",
            room="lt",
            publishers=2,
            subscribers=2,
            duration=4,
            api_key=API_KEY,
            api_secret=API_SECRET,
        )
        started = time.monotonic()
        report = await run_load_test(options, out)
        assert time.monotonic() - started < 60
        assert not report.failed_joins
        counters = report.counters
        assert len(counters) == 2 * 2 * 2  # 2 subscribers x 2 publishers x (audio, video)
        for counter in counters:
            assert counter.packets > 50, counter
            if counter.kind == "video":
                assert counter.keyframes >= 2, counter  # one per second of the clip
                assert 150_000 < counter.bitrate(report.window_end) < 2_000_000
        assert report.loss < 0.05
        text = out.getvalue()
        match = SUMMARY.search(text)
        assert match is not None, text
        assert match.group(1, 2, 3) == ("2", "2", "4")
        assert "pub-lt-1/video" in text and "pub-lt-2/audio" in text
        # Every peer left: the room closes.
        await eventually(lambda: not server.rooms.rooms, timeout=10, what="the room closed", interval=0.1)


async def test_cli_audio_only_rooms(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "control",
            "load-test",
            "--url",
            f"ws://127.0.0.1:{server.port}",
            "--room",
            "cli",
            "--rooms",
            "2",
            "--publishers",
            "1",
            "--subscribers",
            "2",
            "--audio-only",
            "--duration",
            "3",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 90)
        text = stdout.decode()
        assert process.returncode == 0, stderr.decode()[-2000:]
        match = SUMMARY.search(text)
        assert match is not None, text
        assert match.group(1, 2, 3) == ("2", "4", "2")
        assert float(match.group(4)) < 5
        assert "pub-cli-1-1/audio" in text and "pub-cli-2-1/audio" in text and "/video" not in text


async def _fails_fast(options: LoadTestOptions, message: str, within: float = 15.0) -> None:
    started = time.monotonic()
    with pytest.raises(LoadTestError, match=message):
        await run_load_test(options, io.StringIO())
    assert time.monotonic() - started < within


async def test_bad_input_fails_in_seconds(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    await _fails_fast(LoadTestOptions(url=f"ws://127.0.0.1:{closed_port}", duration=1), "cannot reach")
    await _fails_fast(LoadTestOptions(url="http://127.0.0.1:1", duration=1), "ws://HOST:PORT")
    await _fails_fast(
        LoadTestOptions(url="ws://127.0.0.1:1", duration=1, simulcast=True, resolution="180p"), "simulcast"
    )
    await _fails_fast(LoadTestOptions(url="ws://127.0.0.1:1", duration=1, spatial_layers=(0,)), "needs --simulcast")
    async with running_server(tmp_path, api_key=API_KEY, api_secret=API_SECRET, mediasoup_num_workers=1) as server:
        url = f"ws://127.0.0.1:{server.port}"
        await _fails_fast(LoadTestOptions(url=url, duration=1), "refused with HTTP 401")
        wrong = LoadTestOptions(url=url, duration=1, api_key=API_KEY, api_secret="w" * 40)
        await _fails_fast(wrong, "refused with HTTP 401")
        assert not server.rooms.rooms  # nothing was created


def test_non_loopback_targets_need_the_operator_flag() -> None:
    with pytest.raises(LoadTestError, match="--allow-remote-target"):
        check_target("ws://192.0.2.10:3000", allow_remote=False)  # TEST-NET-1: never contacted
    check_target("ws://192.0.2.10:3000", allow_remote=True)
    check_target("ws://127.0.0.1:3000", allow_remote=False)
    check_target("ws://localhost:3000", allow_remote=False)


def test_counter_sequence_gaps_and_key_frames() -> None:
    counter = TrackCounter("p", "video", payload_type=101)
    keyframe = bytes([0x90, 0x80, 0x01, 0x00])  # X, S, PID 0; I: 15-bit picture id; P bit 0
    delta = bytes([0x90, 0x80, 0x01, 0x01])
    for seq in (65534, 65535, 0, 2, 3):  # 1 lost across the wrap
        counter.add(101, seq, keyframe if seq == 65534 else delta)
    counter.add(97, 1, delta)  # RTX: another payload type, not counted
    assert (counter.packets, counter.expected, counter.lost, counter.keyframes) == (5, 6, 1, 1)
    assert is_vp8_keyframe(bytes([0x10, 0x00])) and not is_vp8_keyframe(bytes([0x00, 0x00]))


async def test_meeting_publishers_receive_each_other(tmp_path: Path) -> None:
    async with running_server(tmp_path, mediasoup_num_workers=1) as server:
        options = LoadTestOptions(
            url=f"ws://127.0.0.1:{server.port}", room="meet", publishers=3, subscribers=0, duration=2
        )
        options.publishers_subscribe = True
        out = io.StringIO()
        report = await run_load_test(options, out)
        assert len(report.counters) == 3 * 2 * 2  # each publisher receives the other two's audio and video
        assert all(counter.packets > 0 for counter in report.counters)
        assert "load-test: measured, leaving..." in out.getvalue()

"""The composite layout: grid by participant count, filter graph, SDP."""

from __future__ import annotations

from pathlib import Path

import ffmpeg
import pytest

from recording.layout import NameCard, Tile, _font_size, composite, grid, tiles
from recording.sdp import Media, consumer_sdp, session_sdp


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, (1, 1)),
        (2, (2, 1)),
        (3, (2, 2)),
        (4, (2, 2)),
        (5, (3, 3)),
        (9, (3, 3)),
    ],
)
def test_grid_by_participant_count(n: int, expected: tuple[int, int]) -> None:
    assert grid(n) == expected


@pytest.mark.parametrize("n", [0, 10])
def test_grid_refuses_out_of_range(n: int) -> None:
    with pytest.raises(ValueError):
        grid(n)


def test_tiles_cover_the_canvas_row_by_row() -> None:
    assert tiles(1, 640, 360) == [Tile(0, 0, 640, 360)]
    assert tiles(2, 640, 360) == [Tile(0, 0, 320, 360), Tile(320, 0, 320, 360)]
    assert tiles(3, 640, 360) == [Tile(0, 0, 320, 180), Tile(320, 0, 320, 180), Tile(0, 180, 320, 180)]
    nine = tiles(9, 640, 360)
    assert nine[4] == Tile(212, 120, 212, 120) and nine[8] == Tile(424, 240, 212, 120)
    assert all(t.width % 2 == 0 and t.height % 2 == 0 for t in nine)


def _graph(n_video: int, n_audio: int, **size: int) -> tuple[str, list[str]]:
    inputs = [ffmpeg.input(f"{i}.sdp") for i in range(max(n_video, n_audio))]
    video, audio = composite(
        [i.video for i in inputs[:n_video]],
        [i.audio for i in inputs[:n_audio]],
        width=size.get("width", 640),
        height=size.get("height", 360),
        fps=15,
    )
    args = ffmpeg.output(video, audio, "out.mp4").compile()
    return args[args.index("-filter_complex") + 1], args


def test_one_participant_is_full_frame_without_xstack() -> None:
    graph, _ = _graph(1, 1)
    assert "scale=640:360:force_original_aspect_ratio=decrease" in graph
    assert "xstack" not in graph and "amix" not in graph
    assert "fps=15" in graph and "pad=640:360:0:0" in graph and "aresample=async=1" in graph


def test_two_side_by_side_three_in_two_by_two_with_black_fill() -> None:
    graph, _ = _graph(2, 2)
    assert "xstack=fill=black:inputs=2:layout=0_0|320_0" in graph
    assert "amix=dropout_transition=0:duration=longest:inputs=2:normalize=0" in graph
    graph, args = _graph(3, 3)
    assert "scale=320:180" in graph
    assert "xstack=fill=black:inputs=3:layout=0_0|320_0|0_180" in graph
    assert args.count("-map") == 2  # one video, one audio


def test_five_in_three_by_three_padded_to_the_canvas() -> None:
    graph, _ = _graph(5, 0)
    assert "layout=0_0|212_0|424_0|0_120|212_120" in graph
    assert "pad=640:360:0:0:color=black" in graph and "amix" not in graph


def test_without_video_a_black_canvas_without_audio_silence() -> None:
    """Every segment has one video and one audio stream, so segments always join."""
    graph, args = _graph(0, 2)
    assert "xstack" not in graph and "color=c=black:s=640x360:r=15" in args
    assert args[args.index("color=c=black:s=640x360:r=15") - 1] == "-i" and "-re" in args
    graph, args = _graph(2, 0)
    assert "anullsrc=r=48000:cl=stereo" in args and "amix" not in graph
    assert args.count("-map") == 2


def test_name_card_for_a_participant_without_video(tmp_path: Path) -> None:
    name = tmp_path / "card.txt"
    name.write_text("Zoë: 100% 'quoted'")
    cam = ffmpeg.input("0.sdp")
    video, audio = composite([cam.video, NameCard(name, 18)], [cam.audio], width=640, height=360, fps=15)
    args = ffmpeg.output(video, audio, "out.mkv").compile()
    graph = args[args.index("-filter_complex") + 1]
    assert "color=c=0x262626:s=320x360:r=15" in args  # the card's tile, read in real time
    assert "drawtext=expansion=none" in graph and "card.txt" in graph  # the name from a file: no escaping
    assert "xstack=fill=black:inputs=2:layout=0_0|320_0" in graph


def test_name_card_text_fits_its_tile() -> None:
    tile = Tile(0, 0, 212, 120)
    assert _font_size(NameCard(Path("n"), 3), tile) == 20  # short: limited by the tile's height
    long = _font_size(NameCard(Path("n"), 32), tile)
    assert long * 0.6 * 32 <= 212 and long >= 8


def test_ten_tiles_show_the_first_nine() -> None:
    inputs = [ffmpeg.input(f"{i}.sdp") for i in range(10)]
    video, audio = composite([i.video for i in inputs], [i.audio for i in inputs], width=640, height=360, fps=15)
    graph = ffmpeg.output(video, audio, "out.mkv").compile()
    graph = graph[graph.index("-filter_complex") + 1]
    assert "xstack=fill=black:inputs=9:" in graph and "amix=dropout_transition=0:duration=longest:inputs=10" in graph


def test_sdp_for_opus_and_h264() -> None:
    opus = consumer_sdp(
        "audio",
        {
            "codecs": [
                {
                    "mimeType": "audio/opus",
                    "payloadType": 100,
                    "clockRate": 48000,
                    "channels": 2,
                    "parameters": {"useinbandfec": 1},
                }
            ]
        },
        ip="127.0.0.1",
        port=40000,
        rtcp_port=40001,
    )
    assert "m=audio 40000 RTP/AVP 100\r\n" in opus
    assert "a=rtcp:40001\r\n" in opus and "a=rtpmap:100 opus/48000/2\r\n" in opus
    assert "a=fmtp:100 useinbandfec=1\r\n" in opus and "c=IN IP4 127.0.0.1\r\n" in opus
    h264 = consumer_sdp(
        "video",
        {
            "codecs": [
                {
                    "mimeType": "video/H264",
                    "payloadType": 102,
                    "clockRate": 90000,
                    "parameters": {"packetization-mode": 1, "profile-level-id": "42e01f"},
                }
            ]
        },
        ip="127.0.0.1",
        port=40002,
        rtcp_port=40003,
    )
    assert "a=rtpmap:102 H264/90000\r\n" in h264
    assert "a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n" in h264


def test_one_session_sdp_for_every_stream_in_order() -> None:
    opus = {"codecs": [{"mimeType": "audio/opus", "payloadType": 100, "clockRate": 48000, "channels": 2}]}
    vp8 = {"codecs": [{"mimeType": "video/VP8", "payloadType": 101, "clockRate": 90000}]}
    sdp = session_sdp([Media("audio", opus, 40000), Media("video", vp8, 40002)], ip="127.0.0.1")
    assert sdp.count("v=0") == 1 and sdp.count("c=IN IP4 127.0.0.1") == 1
    audio, video = sdp.index("m=audio 40000 RTP/AVP 100"), sdp.index("m=video 40002 RTP/AVP 101")
    assert audio < sdp.index("a=rtcp:40001") < video < sdp.index("a=rtcp:40003")
    assert "a=rtpmap:101 VP8/90000\r\n" in sdp
    with pytest.raises(ValueError):
        session_sdp([], ip="127.0.0.1")

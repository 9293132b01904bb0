"""Composite layout: every participant in a grid tile, everyone's audio mixed.

Pure functions (no processes, no I/O): :func:`grid` gives columns x rows for n
tiles (1 full, 2 side by side, up to 4 2x2, up to 9 3x3), :func:`tiles` the tile
rectangles, :func:`composite` the FFmpeg filter graph (ffmpeg-python nodes) from
the input streams to one video and one audio stream.

A tile shows a video stream (a camera or a screen share) or, for a participant
without video, a :class:`NameCard`: their name on a dark background. Beyond
:data:`MAX_TILES` tiles the first nine are shown (the caller puts video before
name cards); everyone's audio is mixed whatever the number.

Every composite has both a video and an audio stream (black canvas, silence
when there is nothing), so the segments of one recording always have the same
streams and join without re-encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg

__all__ = ["MAX_TILES", "NameCard", "Tile", "composite", "grid", "tiles"]

#: More tiles than this are not shown (3x3 grid).
MAX_TILES = 9
#: Background of a name card (dark grey, so it is told apart from the black fill).
CARD_COLOUR = "0x262626"
SAMPLE_RATE = 48000


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class NameCard:
    """A tile for a participant without video: ``text_file`` holds the name (read
    by drawtext as a file, so no name needs escaping for the filter graph)."""

    text_file: Path
    #: Characters in the name, to size the text to the tile.
    length: int = 12


def grid(n: int) -> tuple[int, int]:
    """(columns, rows) for ``n`` tiles."""
    if n < 1:
        raise ValueError("at least one tile")
    if n == 1:
        return 1, 1
    if n == 2:
        return 2, 1
    if n <= 4:
        return 2, 2
    if n <= MAX_TILES:
        return 3, 3
    raise ValueError(f"at most {MAX_TILES} tiles")


def _even(v: float) -> int:
    return max(2, int(v) // 2 * 2)


def tiles(n: int, width: int, height: int) -> list[Tile]:
    """The tiles of ``n`` participants on a ``width`` x ``height`` canvas, row by row."""
    cols, rows = grid(n)
    tw, th = _even(width / cols), _even(height / rows)
    return [Tile((i % cols) * tw, (i // cols) * th, tw, th) for i in range(n)]


def _lavfi(source: str) -> Any:
    """A generated input, read at its native rate (``-re``): without a real-time
    input beside it FFmpeg would otherwise run it as fast as it can."""
    return ffmpeg.input(source, f="lavfi", re=None)


def _fit(stream: Any, tile: Tile, fps: int) -> Any:
    """Scale into the tile keeping the aspect ratio, letterboxed in black."""
    return (
        stream.filter("scale", tile.width, tile.height, force_original_aspect_ratio="decrease")
        .filter("pad", tile.width, tile.height, "(ow-iw)/2", "(oh-ih)/2", color="black")
        .filter("setsar", 1)
        .filter("fps", fps)
    )


def _font_size(card: NameCard, tile: Tile) -> int:
    """Large enough to read, small enough that the name fits the tile (a glyph of
    DejaVu Sans is about 0.6 em wide)."""
    fits = int(tile.width * 0.9 / (0.6 * max(1, card.length)))
    return max(8, min(tile.height // 6, fits))


def _card(card: NameCard, tile: Tile, fps: int) -> Any:
    return (
        _lavfi(f"color=c={CARD_COLOUR}:s={tile.width}x{tile.height}:r={fps}")
        .video.filter(
            "drawtext",
            textfile=str(card.text_file),
            expansion="none",
            fontcolor="white",
            fontsize=_font_size(card, tile),
            x="(w-text_w)/2",
            y="(h-text_h)/2",
        )
        .filter("setsar", 1)
    )


def composite(shown: list[Any], audios: list[Any], *, width: int, height: int, fps: int) -> tuple[Any, Any]:
    """The grid of ``shown`` (video streams and :class:`NameCard` s; the first
    :data:`MAX_TILES`) on a black ``width`` x ``height`` canvas, and the mix of
    ``audios``."""
    shown = shown[:MAX_TILES]
    if shown:
        layout = tiles(len(shown), width, height)
        fitted = [
            _card(s, t, fps) if isinstance(s, NameCard) else _fit(s, t, fps) for s, t in zip(shown, layout, strict=True)
        ]
        if len(fitted) == 1:
            video = fitted[0]
        else:
            video = ffmpeg.filter(
                fitted, "xstack", inputs=len(fitted), layout="|".join(f"{t.x}_{t.y}" for t in layout), fill="black"
            )
        # The grid's bounding box may be smaller than the canvas (5 tiles in 3x3).
        video = video.filter("pad", width, height, 0, 0, color="black")
    else:
        video = _lavfi(f"color=c=black:s={width}x{height}:r={fps}").video
    video = video.filter("format", "yuv420p")
    if not audios:
        audio = _lavfi(f"anullsrc=r={SAMPLE_RATE}:cl=stereo").audio
    elif len(audios) == 1:
        audio = audios[0].filter("aresample", **{"async": 1})
    else:
        audio = ffmpeg.filter(
            audios, "amix", inputs=len(audios), duration="longest", dropout_transition=0, normalize=0
        ).filter("aresample", **{"async": 1})
    return video, audio

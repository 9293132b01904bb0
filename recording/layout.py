"""Composite layout: n participants' video in a grid, everyone's audio mixed.

Pure functions (no processes, no I/O): :func:`grid` gives columns x rows for n
tiles (1 full, 2 side by side, up to 4 2x2, up to 9 3x3), :func:`tiles` the tile
rectangles, :func:`composite` the FFmpeg filter graph (ffmpeg-python nodes) from
the input streams to one video and one audio stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ffmpeg

__all__ = ["MAX_TILES", "Tile", "composite", "grid", "tiles"]

#: More video inputs than this are not shown (3x3 grid).
MAX_TILES = 9


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    width: int
    height: int


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


def _fit(stream: Any, tile: Tile, fps: int) -> Any:
    """Scale into the tile keeping the aspect ratio, letterboxed in black."""
    return (
        stream.filter("scale", tile.width, tile.height, force_original_aspect_ratio="decrease")
        .filter("pad", tile.width, tile.height, "(ow-iw)/2", "(oh-ih)/2", color="black")
        .filter("setsar", 1)
        .filter("fps", fps)
    )


def composite(videos: list[Any], audios: list[Any], *, width: int, height: int,
              fps: int) -> tuple[Any | None, Any | None]:
    """The grid of ``videos`` (at most :data:`MAX_TILES` are shown) on a black
    ``width`` x ``height`` canvas and the mix of ``audios``; ``None`` for a kind
    without input."""
    video = audio = None
    shown = videos[:MAX_TILES]
    if shown:
        layout = tiles(len(shown), width, height)
        fitted = [_fit(v, t, fps) for v, t in zip(shown, layout)]
        if len(fitted) == 1:
            video = fitted[0]
        else:
            video = ffmpeg.filter(fitted, "xstack", inputs=len(fitted),
                                  layout="|".join(f"{t.x}_{t.y}" for t in layout), fill="black")
        # The grid's bounding box may be smaller than the canvas (5 tiles in 3x3).
        video = video.filter("pad", width, height, 0, 0, color="black").filter("format", "yuv420p")
    if audios:
        if len(audios) == 1:
            audio = audios[0].filter("aresample", **{"async": 1})
        else:
            audio = ffmpeg.filter(audios, "amix", inputs=len(audios), duration="longest",
                                  dropout_transition=0, normalize=0).filter("aresample", **{"async": 1})
    return video, audio

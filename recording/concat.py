"""Joining a recording's segments into one MP4 without re-encoding.

FFmpeg's concat demuxer plays the segments one after the other; each segment
but the last is given the length of its place in the recording (the next
segment's ``t0`` minus its own), both as ``duration`` and ``outpoint``, so:

- the overlap at a change (the old segment runs on until the new one records)
  is cut at the packet (no B-frames in our H.264, so any frame may end a part);
- a segment that ended early (its FFmpeg died, an input stalled) leaves a gap
  of that length instead of pulling the rest of the recording earlier;

and audio and video keep their positions. The output is MP4 with ``+faststart``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Part", "join", "parts", "write_listing"]


@dataclass(frozen=True)
class Part:
    path: Path
    #: Its length in the recording; None for the last part (its own duration).
    length: float | None


def parts(segments: list[tuple[Path, float]], usable: set[Path]) -> list[Part]:
    """The parts from ``(path, t0)`` in recording order. A segment not in ``usable``
    (unreadable) is left out and its time added to the part before it."""
    out: list[Part] = []
    for n, (path, t0) in enumerate(segments):
        length = segments[n + 1][1] - t0 if n + 1 < len(segments) else None
        if path in usable:
            out.append(Part(path, length))
        elif out and (previous_length := out[-1].length) is not None:
            out[-1] = Part(out[-1].path, None if length is None else previous_length + length)
    return out


def _quote(path: Path) -> str:
    return "'" + str(path.resolve()).replace("'", "'\\''") + "'"


def write_listing(items: list[Part], listing: Path) -> Path:
    """The concat demuxer's listing of ``items`` (each part but the last cut to its length)."""
    lines = ["ffconcat version 1.0"]
    for item in items:
        lines.append(f"file {_quote(item.path)}")
        if item.length is not None:
            lines += [f"duration {item.length:.6f}", f"outpoint {item.length:.6f}"]
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return listing


def join(items: list[Part], out: Path, *, ffmpeg_bin: str = "ffmpeg", timeout: float = 600) -> None:
    """Write ``out`` (MP4) from ``items``; raises CalledProcessError with FFmpeg's
    message if it fails. Blocking: run it in a thread."""
    if not items:
        raise ValueError("nothing to join")
    listing = write_listing(items, out.with_suffix(".ffconcat"))
    try:
        subprocess.run(
            [
                ffmpeg_bin,
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-y",
                "-f",
                "concat",
                "-safe",
                "0",
                "-i",
                str(listing),
                "-map",
                "0",
                "-c",
                "copy",
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
                str(out),
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    finally:
        listing.unlink(missing_ok=True)

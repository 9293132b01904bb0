"""At stop: the composite MP4 from the video segments and the audio stems.

The video segments are joined without re-encoding (``recording.concat``: each
part cut at the next segment's ``t0``); the audio is the mix of every stem,
each delayed by its offset in samples (``adelay ...S``) from the composite's
start (the first stem's first packet or the first segment's ``t0``, whichever
came first: no audio a stem holds is cut), padded with silence and cut to the recording's length, encoded once to
AAC. A recording whose segments carry their own audio and has no stem (one
left by an older version) keeps the segments' audio.

Also here: one participant's stems (several producers: a rejoin, a worker
move) merged into one Ogg at their relative offsets.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from recording.concat import Part, write_listing

__all__ = ["StemInput", "compose", "cut", "merge_stems"]

RATE = 48000


@dataclass(frozen=True)
class StemInput:
    path: Path
    #: Seconds from the output's start to the stem's first sample (may be negative: trimmed).
    offset: float


def _placed(index: int, stem: StemInput, label: str) -> str:
    """Filter chain putting input ``index`` at its offset (sample-accurate)."""
    chain = f"[{index}:a]aresample={RATE},aformat=sample_fmts=fltp:sample_rates={RATE}"
    if stem.offset >= 0:
        samples = round(stem.offset * RATE)
        if samples:
            chain += f",adelay=delays={samples}S:all=1"
    else:
        chain += f",atrim=start_sample={round(-stem.offset * RATE)},asetpts=PTS-STARTPTS"
    return chain + f"[{label}]"


def _mix_graph(stems: list[StemInput], first_input: int, total: float | None, layout: str) -> str:
    chains = [_placed(first_input + n, s, f"s{n}") for n, s in enumerate(stems)]
    labels = "".join(f"[s{n}]" for n in range(len(stems)))
    if len(stems) > 1:
        mixed = f"{labels}amix=inputs={len(stems)}:duration=longest:dropout_transition=0:normalize=0"
    else:
        mixed = f"{labels}anull"
    if total is not None:
        mixed += f",apad,atrim=end_sample={round(total * RATE)}"
    mixed += f",aformat=channel_layouts={layout}[a]"
    return ";".join([*chains, mixed])


def _run(args: list[str], timeout: float) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=timeout)


def compose(
    parts: list[Part],
    stems: list[StemInput],
    total: float,
    out: Path,
    *,
    segment_audio: bool = False,
    video_delay: float = 0.0,
    ffmpeg_bin: str = "ffmpeg",
    audio_bitrate: str = "128k",
    timeout: float = 1800,
) -> None:
    """Write ``out`` (MP4, ``total`` seconds): the joined ``parts`` (video copied)
    and the mix of ``stems`` (AAC; silence if there is none). The video starts
    ``video_delay`` seconds in (an MP4 edit list: black before; the stems began
    before the first segment). Blocking: run it in a thread; CalledProcessError
    carries FFmpeg's message."""
    if not parts:
        raise ValueError("nothing to join")
    listing = write_listing(parts, out.with_suffix(".ffconcat"))
    args = [ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    if video_delay > 0:
        args += ["-itsoffset", f"{video_delay:.6f}"]
    args += ["-f", "concat", "-safe", "0", "-i", str(listing)]
    try:
        if segment_audio and not stems:
            args += ["-map", "0:v:0", "-map", "0:a:0?", "-c", "copy"]
        else:
            if stems:
                for stem in stems:
                    args += ["-i", str(stem.path)]
                graph = _mix_graph(stems, 1, total, "stereo")
            else:
                args += ["-f", "lavfi", "-i", f"anullsrc=r={RATE}:cl=stereo"]
                graph = f"[1:a]atrim=end_sample={round(total * RATE)}[a]"
            args += ["-filter_complex", graph, "-map", "0:v:0", "-map", "[a]", "-c:v", "copy"]
            args += ["-c:a", "aac", "-b:a", audio_bitrate, "-ar", str(RATE), "-ac", "2"]
        args += ["-t", f"{total:.6f}", "-movflags", "+faststart", "-f", "mp4", str(out)]
        _run(args, timeout)
    finally:
        listing.unlink(missing_ok=True)


def merge_stems(stems: list[StemInput], out: Path, *, ffmpeg_bin: str = "ffmpeg", timeout: float = 600) -> None:
    """One Ogg/Opus of ``stems`` placed at their offsets (from the first's start),
    silence between them."""
    args = [ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    for stem in stems:
        args += ["-i", str(stem.path)]
    args += ["-filter_complex", _mix_graph(stems, 0, None, "mono"), "-map", "[a]"]
    args += ["-c:a", "libopus", "-b:a", "48k", "-f", "ogg", str(out)]
    _run(args, timeout)


def cut(path: Path, length: float, *, ffmpeg_bin: str = "ffmpeg", timeout: float = 600) -> None:
    """``path`` (Ogg/Opus) cut to its first ``length`` seconds in place, without
    re-encoding (at a packet: 20 ms)."""
    tmp = path.with_suffix(".cut.ogg")
    args = [ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(path)]
    args += ["-map", "0:a:0", "-t", f"{length:.6f}", "-c", "copy", "-f", "ogg", str(tmp)]
    try:
        _run(args, timeout)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)

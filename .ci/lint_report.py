#!/usr/bin/env python3
"""What ``make lint`` still finds, counted per directory and per rule (``make lint-report``).

Runs the same three checks as ``make lint`` (``ruff check``, ``ruff format --check``,
``mypy``, configured in pyproject.toml) without failing, and prints a table: one row per
directory (two levels deep: ``control/rooms``), one column per tool, then the most
frequent rule codes. For planning a clean-up; ``make lint`` stays the gate.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MYPY_LINE = re.compile(r"^(?P<path>[^:\s]+\.py):\d+(?::\d+)?: error: .*\[(?P<code>[a-z0-9-]+)\]$")


def directory(path: str) -> str:
    """The file's directory, two levels deep at most (``control/rooms``, ``tests/unit``)."""
    parts = Path(path).parts[:-1]
    return "/".join(parts[:2]) or "."


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=ROOT, capture_output=True, text=True, check=False)


def ruff_errors() -> list[tuple[str, str]]:
    out = run("ruff", "check", ".", "--output-format", "json", "--exit-zero").stdout
    return [(str(Path(e["filename"]).relative_to(ROOT)), e["code"] or "syntax") for e in json.loads(out or "[]")]


def unformatted() -> list[str]:
    out = run("ruff", "format", "--check", "--output-format", "concise", ".").stdout
    return [line.split(":", 1)[0] for line in out.splitlines() if "unformatted" in line]


def mypy_errors() -> list[tuple[str, str]]:
    out = run("mypy").stdout
    return [(m["path"], m["code"]) for m in map(MYPY_LINE.match, out.splitlines()) if m]


def main() -> int:
    ruff, fmt, mypy = ruff_errors(), unformatted(), mypy_errors()
    per_dir: dict[str, Counter[str]] = {}
    for tool, paths in (("ruff", [p for p, _ in ruff]), ("format", fmt), ("mypy", [p for p, _ in mypy])):
        for path in paths:
            per_dir.setdefault(directory(path), Counter())[tool] += 1
    print(f"{'directory':<28} {'ruff':>6} {'format':>7} {'mypy':>6}   (ruff: errors; format: files; mypy: errors)")
    for name in sorted(per_dir):
        c = per_dir[name]
        print(f"{name:<28} {c['ruff']:>6} {c['format']:>7} {c['mypy']:>6}")
    print(f"{'total':<28} {len(ruff):>6} {len(fmt):>7} {len(mypy):>6}")
    for tool, errors in (("ruff", ruff), ("mypy", mypy)):
        top = Counter(code for _, code in errors).most_common(12)
        if top:
            print(f"\n{tool} rules: " + ", ".join(f"{code} {n}" for code, n in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())

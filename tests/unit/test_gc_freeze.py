"""``parley run`` freezes its start-up objects: full collections stop scanning them."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json, time
import control.app
from control.cli import freeze_startup_objects

def full_collection_ms():
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter(); gc.collect(); best = min(best, time.perf_counter() - t)
    return best * 1000

before = full_collection_ms()
frozen = freeze_startup_objects()
print(json.dumps({"frozen": frozen, "tracked": len(gc.get_objects()), "before": before, "after": full_collection_ms()}))
"""


def test_start_up_objects_are_frozen_and_no_longer_scanned() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    # Every module-level object of the server is frozen; what is left to scan is what
    # the probe itself made after the freeze.
    assert probe["frozen"] > 50_000, probe
    assert probe["tracked"] < probe["frozen"] / 100, probe

"""The native ``mediasoup-worker``: where the built binary and bindings live.

The build itself is ``workers/native/build.py``; this module only answers
"where is it", so importing ``workers`` never triggers a build.
(PLACEHOLDER: the native-build work replaces this with the real lookup.)
"""
from __future__ import annotations

import os
from pathlib import Path

MEDIASOUP_VERSION = "3.27.1"
_HERE = Path(__file__).resolve().parent


def generated_dir() -> Path:
    """Directory holding the generated ``FBS`` Python package."""
    return _HERE / "generated"


def worker_binary() -> Path:
    """Path of the mediasoup-worker binary (``MEDIASOUP_WORKER_BIN`` wins)."""
    override = os.environ.get("MEDIASOUP_WORKER_BIN")
    if override:
        return Path(override)
    raise FileNotFoundError("mediasoup-worker not built; run `make setup`")

"""Access to the FlatBuffers bindings generated from mediasoup's ``worker/fbs``.

``flatc --python`` emits a top-level ``FBS`` package whose modules import each
other absolutely (``import FBS.Message.Body``), so the directory it is generated
into must be on ``sys.path``. The bindings are built by
``workers/native/build.py`` (``make setup``) and never committed.
"""

from __future__ import annotations

import sys

from workers.native import generated_dir

_GENERATED = generated_dir()
if not (_GENERATED / "FBS").is_dir():
    raise ImportError(
        f"FlatBuffers bindings not found in {_GENERATED}; run `make setup` "
        "(workers/native/build.py generates them from mediasoup's worker/fbs)"
    )
if str(_GENERATED) not in sys.path:
    sys.path.insert(0, str(_GENERATED))

import FBS  # noqa: E402  (importable only now)

__all__ = ["FBS"]  # re-exported for `from workers.fbs import FBS`

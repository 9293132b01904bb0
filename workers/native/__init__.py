"""The native ``mediasoup-worker``: where the built binary and bindings live.

The build itself is ``workers/native/build.py``; this module only answers
"where is it", so importing ``workers`` never triggers a build. It is
stdlib-only on purpose: ``build.py`` loads this very file (by path) to compute
the same cache key, so the two can never disagree about where the binary is.

The cached binary lives outside the repository, at
``<cache>/mediasoup-worker/<version>-<hash>/mediasoup-worker`` where
``<cache>`` is ``$PARLEY_CACHE_DIR`` (default ``~/.cache/parley``) and
``<hash>`` covers everything that decides what gets compiled: the pinned
package, the meson arguments, our shim subprojects and our patches.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MEDIASOUP_VERSION = "3.27.1"
#: npm ``integrity`` of ``mediasoup@3.27.1`` (sha512 of the ``npm pack`` tarball).
MEDIASOUP_INTEGRITY = "sha512-unjG0ihJFZmCXxtS5ay6iPp+ov1Rg/BhJuP1gGfw4ElX/K5Z0it3PCC7rKecWMK2FgbQ52kKmDgZBPm/ewYO6A=="
#: ``meson setup`` arguments, run inside the package's ``worker/`` directory.
#: Upstream's defaults otherwise (notably the libwebrtc bandwidth estimator).
MESON_SETUP_ARGS: tuple[str, ...] = (
    "--buildtype=release",
    "-Db_ndebug=true",
    "--wrap-mode=nodownload",
)
#: Bump when build.py changes how it builds in a way the inputs above miss.
BUILD_RECIPE = "1"

_HERE = Path(__file__).resolve().parent
SUBPROJECTS_DIR = _HERE / "subprojects"
PATCHES_DIR = _HERE / "patches"


def cache_dir() -> Path:
    """Root of Parley's build cache (``$PARLEY_CACHE_DIR`` or ``~/.cache/parley``)."""
    override = os.environ.get("PARLEY_CACHE_DIR")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "parley"


def generated_dir() -> Path:
    """Directory holding the generated ``FBS`` Python package."""
    return _HERE / "generated"


def patch_files() -> list[Path]:
    """Our patches to the mediasoup sources, in the order they are applied."""
    return sorted(PATCHES_DIR.glob("*.patch"))


def _tree_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def build_hash(*, patched: bool = True) -> str:
    """Cache key of the worker binary (16 hex digits)."""
    h = hashlib.sha256()

    def feed(label: str, data: bytes) -> None:
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)

    feed("version", MEDIASOUP_VERSION.encode())
    feed("integrity", MEDIASOUP_INTEGRITY.encode())
    feed("meson", "\0".join(MESON_SETUP_ARGS).encode())
    feed("recipe", BUILD_RECIPE.encode())
    for path in _tree_files(SUBPROJECTS_DIR):
        feed("shim:" + path.relative_to(SUBPROJECTS_DIR).as_posix(), path.read_bytes())
    if patched:
        for path in patch_files():
            feed("patch:" + path.name, path.read_bytes())
    else:
        feed("unpatched", b"")
    return h.hexdigest()[:16]


def binary_path(*, patched: bool = True) -> Path:
    """Where build.py puts (and looks for) the binary; it may not exist yet."""
    tag = f"{MEDIASOUP_VERSION}-{build_hash(patched=patched)}"
    if not patched:
        tag += "-unpatched"
    return cache_dir() / "mediasoup-worker" / tag / "mediasoup-worker"


def worker_binary() -> Path:
    """Path of the mediasoup-worker binary (``MEDIASOUP_WORKER_BIN`` wins)."""
    override = os.environ.get("MEDIASOUP_WORKER_BIN")
    if override:
        return Path(override)
    path = binary_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"mediasoup-worker {MEDIASOUP_VERSION} is not built (expected {path}); run `make setup`"
        )
    return path

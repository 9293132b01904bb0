#!/usr/bin/env python3
"""Build ``mediasoup-worker`` and the Python FlatBuffers bindings, reproducibly.

Run by ``make setup`` as::

    PATH=.venv/bin:$PATH .venv/bin/python workers/native/build.py

Steps (each skipped when its result is already there, so a second run takes
well under a second):

1. ``npm pack mediasoup@<version>`` into ``<cache>/npm/`` and check the
   tarball against the pinned sha512 integrity.
2. Unpack it into ``<cache>/build/<tag>/``, apply ``patches/*.patch`` (the build
   fails if one does not apply) and copy our shim subprojects into
   ``worker/subprojects/<directory named by each .wrap>/``, so meson uses
   Debian's libraries and downloads nothing.
3. ``meson setup`` + ``meson compile`` (``flatbuffers-generator`` first, then
   ``mediasoup-worker``), smoke-test the binary and copy it to
   ``<cache>/mediasoup-worker/<version>-<hash>/`` (see ``__init__.py``).
4. ``flatc --python --gen-object-api`` on the package's ``worker/fbs/*.fbs``
   into ``workers/native/generated`` when missing or stale (stamp file).

The binary's path is the only thing written to stdout (last line); progress
goes to stderr. ``--unpatched`` builds the worker without our patches, to a
separate cache path, only to demonstrate what the patches fix. Stdlib only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

#: The wraps of worker/subprojects we replace, and our shim for each.
SHIMS = {
    "libuv.wrap": "libuv",
    "openssl.wrap": "openssl",
    "libsrtp3.wrap": "libsrtp3",
    "flatbuffers.wrap": "flatbuffers",
    "abseil-cpp.wrap": "abseil-cpp",
    "unordered-dense.wrap": "unordered-dense",
}
#: Lines our patches must have produced; checked after patching.
PATCHED_LINES = {
    "worker/src/RTC/DtlsTransport.cpp": "(operationType & BIO_CB_RETURN)",
}
FLATC_ARGS = ("--python", "--gen-object-api")
MIN_MESON = (1, 1)
STAMP_NAME = ".parley-stamp"


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


def load_info() -> ModuleType:
    """``workers/native/__init__.py``, loaded by path.

    It is stdlib-only and holds the pinned version and the cache-key code.
    Loading it by path (not ``import workers.native``) keeps this script from
    importing the ``workers`` package, which needs the bindings built here.
    """
    spec = importlib.util.spec_from_file_location("_parley_native_info", HERE / "__init__.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INFO = load_info()


def log(message: str) -> None:
    print(f"[native] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, shown: str = "") -> None:
    """Run a command, its output going to our stderr; raise BuildError on failure."""
    log("$ " + (shown or " ".join(cmd)) + (f"  (in {cwd})" if cwd else ""))
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0:
        raise BuildError(f"command failed with exit code {proc.returncode}: {' '.join(cmd)}")


def tool_env() -> dict[str, str]:
    """Environment with the venv's bin directory (meson, ninja) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def which(name: str, env: dict[str, str]) -> str:
    found = shutil.which(name, path=env["PATH"])
    if not found:
        raise BuildError(f"`{name}` not found on PATH; run `make setup` (or install it)")
    return found


# --------------------------------------------------------------------------- package


def integrity_of(path: Path) -> str:
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def verify_integrity(tarball: Path) -> None:
    got = integrity_of(tarball)
    if got != INFO.MEDIASOUP_INTEGRITY:
        raise BuildError(
            f"INTEGRITY MISMATCH for mediasoup@{INFO.MEDIASOUP_VERSION} ({tarball}): got {got}, "
            f"pinned {INFO.MEDIASOUP_INTEGRITY}. Refusing to build."
        )


@contextlib.contextmanager
def build_lock(cache: Path, name: str) -> Iterator[None]:
    """Serialise concurrent builds of the same thing sharing a cache."""
    locks = cache / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch_package(cache: Path) -> Path:
    """The verified ``npm pack`` tarball of the pinned mediasoup version."""
    npm_dir = cache / "npm"
    tarball = npm_dir / f"mediasoup-{INFO.MEDIASOUP_VERSION}.tgz"
    if tarball.is_file():
        if integrity_of(tarball) == INFO.MEDIASOUP_INTEGRITY:
            return tarball
        log(f"cached {tarball} does not match the pinned integrity; fetching it again")
        tarball.unlink()
    npm_dir.mkdir(parents=True, exist_ok=True)
    npm = shutil.which("npm")
    if not npm:
        raise BuildError("`npm` not found; install Debian's npm package")
    with tempfile.TemporaryDirectory(dir=npm_dir, prefix="pack-") as tmp:
        # Run from an empty directory so no package.json around us is involved.
        run(
            [
                npm,
                "pack",
                f"mediasoup@{INFO.MEDIASOUP_VERSION}",
                "--ignore-scripts",
                "--pack-destination",
                tmp,
                "--loglevel=warn",
            ],
            cwd=Path(tmp),
        )
        packed = list(Path(tmp).glob("*.tgz"))
        if len(packed) != 1:
            raise BuildError(f"npm pack produced {len(packed)} tarballs in {tmp}")
        verify_integrity(packed[0])
        os.replace(packed[0], tarball)
    log(f"fetched {tarball} (integrity ok)")
    return tarball


def _safe_members(tar: tarfile.TarFile, wanted: Callable[[str], bool] = lambda name: True) -> Iterator[tarfile.TarInfo]:
    for member in tar.getmembers():
        name = member.name
        if name.startswith("/") or ".." in Path(name).parts:
            raise BuildError(f"unsafe path in package tarball: {name!r}")
        if not (member.isfile() or member.isdir()):
            raise BuildError(f"unexpected entry type in package tarball: {name!r}")
        if wanted(name):
            yield member


def extract(tarball: Path, dest: Path, wanted: Callable[[str], bool] = lambda name: True) -> Path:
    """Unpack (the wanted members of) the npm tarball; returns ``dest/package``."""
    with tarfile.open(tarball) as tar:
        members = list(_safe_members(tar, wanted))
        # Members were checked above; the "data" filter (3.11.4+) checks again.
        kwargs: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=members, **kwargs)
    return dest / "package"


# --------------------------------------------------------------------------- patches


def apply_patches(package_root: Path, patches: list[Path] | None = None) -> None:
    """Apply our patches to an unpacked package (``-p1`` from ``package/``).

    Raises BuildError if any hunk does not apply exactly (no fuzz) or if the
    lines the patches must produce are not there afterwards.
    """
    patches = INFO.patch_files() if patches is None else patches
    if not patches:
        raise BuildError(f"no patches found in {INFO.PATCHES_DIR}")
    patch = shutil.which("patch")
    if not patch:
        raise BuildError("`patch` not found; install Debian's patch package")
    for patch_file in patches:
        proc = subprocess.run(
            [
                patch,
                "-p1",
                "--forward",
                "--batch",
                "--fuzz=0",
                "--no-backup-if-mismatch",
                "-r",
                "-",
                "-d",
                str(package_root),
                "-i",
                str(patch_file),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise BuildError(
                f"patch {patch_file.name} does not apply to {package_root} "
                f"(mediasoup changed? update the patch):\n{proc.stdout}{proc.stderr}"
            )
        log(f"applied {patch_file.name}")
    for rel, line in PATCHED_LINES.items():
        path = package_root / rel
        if not path.is_file() or line not in path.read_text(errors="replace"):
            raise BuildError(f"patched source check failed: {line!r} not found in {path}")


def wrap_directory(wrap: Path) -> str:
    for raw in wrap.read_text().splitlines():
        key, sep, value = raw.partition("=")
        if sep and key.strip() == "directory":
            return value.strip()
    raise BuildError(f"no `directory =` in {wrap}")


def install_shims(worker_dir: Path) -> None:
    """Copy each shim to ``worker/subprojects/<directory of its .wrap>/``."""
    subprojects = worker_dir / "subprojects"
    for wrap_name, shim in SHIMS.items():
        wrap = subprojects / wrap_name
        if not wrap.is_file():
            raise BuildError(f"{wrap} is missing (mediasoup changed its subprojects?)")
        target = subprojects / wrap_directory(wrap)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(INFO.SUBPROJECTS_DIR / shim, target, ignore=shutil.ignore_patterns("__pycache__"))


# --------------------------------------------------------------------------- worker


def check_meson(env: dict[str, str]) -> str:
    meson = which("meson", env)
    which("ninja", env)
    out = subprocess.run([meson, "--version"], capture_output=True, text=True, env=env).stdout.strip()
    try:
        version = tuple(int(x) for x in out.split(".")[:2])
    except ValueError:
        version = (0, 0)
    if version < MIN_MESON:
        raise BuildError(f"meson >= {'.'.join(map(str, MIN_MESON))} needed, found {out!r} at {meson}")
    return meson


def prepare_source(tarball: Path, build_root: Path, *, patched: bool) -> Path:
    """Unpacked, patched, shimmed sources under ``build_root/src``; returns the package dir."""
    src = build_root / "src"
    package = src / "package"
    if (src / STAMP_NAME).is_file():
        return package
    if build_root.exists():
        shutil.rmtree(build_root)
    build_root.mkdir(parents=True)
    tmp = build_root / "src.tmp"
    package_tmp = extract(tarball, tmp)
    if patched:
        apply_patches(package_tmp)
    else:
        log("UNPATCHED build requested: not applying our patches")
    install_shims(package_tmp / "worker")
    (tmp / STAMP_NAME).write_text(f"{tarball.name} patched={patched}\n")
    os.replace(tmp, src)
    return package


def compile_worker(package: Path, env: dict[str, str], jobs: int | None) -> Path:
    meson = check_meson(env)
    worker = package / "worker"
    out = worker / "out" / "Release"
    if not (out / "build.ninja").is_file():
        if out.exists():
            shutil.rmtree(out)
        run([meson, "setup", *INFO.MESON_SETUP_ARGS, "out/Release"], cwd=worker, env=env)
    jobs_args = ["-j", str(jobs)] if jobs else []
    # The generated headers first: compiling in parallel with their generation races.
    run([meson, "compile", "-C", str(out), *jobs_args, "flatbuffers-generator"], env=env)
    run([meson, "compile", "-C", str(out), *jobs_args, "mediasoup-worker"], env=env)
    binary = out / "mediasoup-worker"
    if not binary.is_file():
        raise BuildError(f"meson finished but {binary} does not exist")
    return binary


def spawn_worker(binary: Path, args: list[str], **popen_kwargs: Any) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start a worker with a pipe channel; returns (process, request_w, response_r).

    The worker reads requests on its fd 3 and writes on its fd 4. Our pipe
    ends are close-on-exec, so only the dup2'ed copies reach the worker.
    """
    req_r, req_w = os.pipe()  # we -> worker
    rsp_r, rsp_w = os.pipe()  # worker -> we

    def child_fds() -> None:  # in the child, between fork and exec
        # Move both ends above 4 first so neither dup2 clobbers the other.
        high_r = fcntl.fcntl(req_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(rsp_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.dup2(high_r, 3)  # dup2 targets are inheritable
        os.dup2(high_w, 4)

    env = dict(popen_kwargs.pop("env", None) or os.environ)
    env["MEDIASOUP_VERSION"] = INFO.MEDIASOUP_VERSION
    try:
        proc = subprocess.Popen([str(binary), *args], env=env, close_fds=False, preexec_fn=child_fds, **popen_kwargs)
    except BaseException:
        for fd in (req_r, req_w, rsp_r, rsp_w):
            os.close(fd)
        raise
    os.close(req_r)
    os.close(rsp_w)
    return proc, req_w, rsp_r


def smoke_test(binary: Path, timeout: float = 10.0) -> None:
    """Start the worker on a pipe channel and expect a first message from it."""
    proc, req_w, rsp_r = spawn_worker(
        binary,
        ["--logLevel=warn"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stderr = proc.stderr
    assert stderr is not None  # stderr=PIPE
    try:
        ready, _, _ = select.select([rsp_r], [], [], timeout)
        header = os.read(rsp_r, 4) if ready else b""
        if len(header) != 4 or int.from_bytes(header, "little") == 0:
            proc.kill()
            proc.wait()
            raise BuildError(
                f"smoke test: {binary} sent no message within {timeout}s "
                f"(exit code {proc.returncode}): {stderr.read().decode(errors='replace')[-2000:]}"
            )
    finally:
        os.close(req_w)  # closing its channel makes the worker exit
        os.close(rsp_r)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()
    log(f"smoke test ok (worker sent its first message, exit code {proc.returncode})")


def install_binary(built: Path, target: Path, *, patched: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    shutil.copy2(built, tmp)
    tmp.chmod(0o755)
    info = {
        "mediasoup": INFO.MEDIASOUP_VERSION,
        "integrity": INFO.MEDIASOUP_INTEGRITY,
        "meson_setup_args": list(INFO.MESON_SETUP_ARGS),
        "patches": [p.name for p in INFO.patch_files()] if patched else [],
        "hash": INFO.build_hash(patched=patched),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (target.parent / "BUILDINFO.json").write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, target)


def build_worker(cache: Path, *, patched: bool, force: bool, keep_build: bool, jobs: int | None) -> Path:
    target: Path = INFO.binary_path(patched=patched)
    if target.is_file() and not force:
        log(f"mediasoup-worker cached: {target}")
        return target
    tag = target.parent.name
    with build_lock(cache, tag):
        if target.is_file() and not force:  # another process built it meanwhile
            log(f"mediasoup-worker cached: {target}")
            return target
        return _build_worker_locked(cache, target, tag, patched=patched, force=force, keep_build=keep_build, jobs=jobs)


def _build_worker_locked(
    cache: Path, target: Path, tag: str, *, patched: bool, force: bool, keep_build: bool, jobs: int | None
) -> Path:
    started = time.monotonic()
    build_root = cache / "build" / tag
    if force and build_root.exists():
        shutil.rmtree(build_root)
    tarball = fetch_package(cache)
    package = prepare_source(tarball, build_root, patched=patched)
    built = compile_worker(package, tool_env(), jobs)
    smoke_test(built)
    install_binary(built, target, patched=patched)
    if not keep_build:
        shutil.rmtree(build_root, ignore_errors=True)
    log(f"built mediasoup-worker in {time.monotonic() - started:.0f}s: {target}")
    return target


# --------------------------------------------------------------------------- bindings


def flatc_version() -> str:
    flatc = shutil.which("flatc")
    if not flatc:
        raise BuildError("`flatc` not found; install Debian's flatbuffers-compiler")
    out = subprocess.run([flatc, "--version"], capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildError(f"`flatc --version` failed: {out.stderr.strip()}")
    return out.stdout.strip()


def bindings_stamp() -> str:
    # The schemas are fixed by the verified package, so its integrity stands for them.
    return json.dumps(
        {"schemas": INFO.MEDIASOUP_INTEGRITY, "flatc": flatc_version(), "args": list(FLATC_ARGS)},
        sort_keys=True,
    )


def bindings_current(out_dir: Path | None = None) -> bool:
    out_dir = out_dir or INFO.generated_dir()
    stamp = out_dir / STAMP_NAME
    return (
        stamp.is_file()
        and (out_dir / "FBS" / "Message" / "Message.py").is_file()
        and stamp.read_text() == bindings_stamp()
    )


def check_bindings_import(out_dir: Path) -> None:
    """Import the generated package with the venv's PyPI ``flatbuffers`` runtime."""
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.is_file() else sys.executable
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import flatbuffers, FBS.Message.Message, FBS.Notification.Event, FBS.Request.Method, "
        "FBS.Response.Response, FBS.Worker.DumpResponse"
    )
    proc = subprocess.run([python, "-c", code, str(out_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"generated bindings do not import with {python}:\n{proc.stderr}")


def generate_bindings(cache: Path, out_dir: Path | None = None, force: bool = False) -> Path:
    out_dir = out_dir or INFO.generated_dir()
    if not force and bindings_current(out_dir):
        log(f"FlatBuffers bindings up to date: {out_dir}")
        return out_dir
    with build_lock(cache, "bindings"):
        if not force and bindings_current(out_dir):
            log(f"FlatBuffers bindings up to date: {out_dir}")
            return out_dir
        return _generate_bindings_locked(cache, out_dir)


def _generate_bindings_locked(cache: Path, out_dir: Path) -> Path:
    tarball = fetch_package(cache)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".generated-") as tmp:
        tmp_path = Path(tmp)
        package = extract(
            tarball, tmp_path / "src", lambda n: n.startswith("package/worker/fbs/") and n.endswith(".fbs")
        )
        schemas = sorted((package / "worker" / "fbs").glob("*.fbs"))
        if not schemas:
            raise BuildError(f"no worker/fbs/*.fbs in {tarball}")
        new = tmp_path / "generated"
        cmd = ["flatc", *FLATC_ARGS, "-o", str(new)]
        run([*cmd, *map(str, schemas)], shown=" ".join(cmd) + f" <{len(schemas)} worker/fbs/*.fbs>")
        check_bindings_import(new)
        (new / STAMP_NAME).write_text(bindings_stamp())
        old = tmp_path / "old"
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(new, out_dir)
    log(f"generated FlatBuffers bindings from {len(schemas)} schemas: {out_dir}")
    return out_dir


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="build nothing; exit 0 if the binary and bindings are up to date, else 1"
    )
    parser.add_argument(
        "--unpatched", action="store_true", help="build WITHOUT our patches to a separate cache path (crash demos only)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--keep-build", action="store_true", help="keep the build tree in the cache")
    parser.add_argument("--jobs", "-j", type=int, default=None, help="parallel compile jobs")
    args = parser.parse_args(argv)

    patched = not args.unpatched
    cache = INFO.cache_dir()
    try:
        if args.check:
            target = INFO.binary_path(patched=patched)
            ok_binary = target.is_file()
            ok_bindings = args.unpatched or bindings_current()
            log(f"binary {'cached' if ok_binary else 'MISSING'}: {target}")
            if not args.unpatched:
                log(f"bindings {'up to date' if ok_bindings else 'MISSING or stale'}: {INFO.generated_dir()}")
            if ok_binary:
                print(target)
            return 0 if ok_binary and ok_bindings else 1
        target = build_worker(cache, patched=patched, force=args.force, keep_build=args.keep_build, jobs=args.jobs)
        if patched:
            generate_bindings(cache, force=args.force)
    except BuildError as exc:
        log(f"ERROR: {exc}")
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())

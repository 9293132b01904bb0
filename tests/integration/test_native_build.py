"""The native build: cached binary, our patch, and the worker's channel handshake.

Needs `make setup` (workers/native/build.py) to have run; a missing binary is a
failure that says so, never a skip. Independent of workers/channel.py.
"""

from __future__ import annotations

import importlib
import inspect
import io
import os
import select
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import workers.native as native

build = importlib.import_module("workers.native.build")

BUILD_SCRIPT = Path(inspect.getfile(build)).resolve()
DTLS = "worker/src/RTC/DtlsTransport.cpp"
BUGGY = "(operationType == BIO_CB_RETURN)"
FIXED = "(operationType & BIO_CB_RETURN)"


def _binary() -> Path:
    path = native.binary_path()
    if not path.is_file():
        pytest.fail(f"mediasoup-worker not built at {path}; run `make setup`", pytrace=False)
    return path


def _script_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MEDIASOUP_WORKER_BIN", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _tarball() -> Path:
    # Present after any build; fetched (and integrity-checked) otherwise.
    return build.fetch_package(native.cache_dir())


# ---------------------------------------------------------------- (a) the cache


def test_cached_binary_exists_and_is_what_worker_binary_returns(monkeypatch):
    path = _binary()
    assert os.access(path, os.X_OK)
    assert path.parent.name == f"{native.MEDIASOUP_VERSION}-{native.build_hash()}"
    assert path.is_relative_to(native.cache_dir())
    monkeypatch.delenv("MEDIASOUP_WORKER_BIN", raising=False)
    assert native.worker_binary() == path
    monkeypatch.setenv("MEDIASOUP_WORKER_BIN", "/somewhere/else/mediasoup-worker")
    assert native.worker_binary() == Path("/somewhere/else/mediasoup-worker")


def test_unpatched_build_has_its_own_cache_path():
    assert native.binary_path(patched=False) != native.binary_path()
    assert native.binary_path(patched=False).parent.name.endswith("-unpatched")


def test_build_script_second_run_is_a_cache_hit():
    path = _binary()
    check = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_script_env(),
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().splitlines()[-1] == str(path)

    started = time.monotonic()
    again = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_script_env(),
    )
    elapsed = time.monotonic() - started
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == str(path)
    assert "mediasoup-worker cached" in again.stderr
    assert "meson" not in again.stderr and "npm pack" not in again.stderr, again.stderr
    assert elapsed < 10, f"cache hit took {elapsed:.1f}s:\n{again.stderr}"


def test_generated_bindings_are_current_and_import():
    assert build.bindings_current(), "bindings missing or stale; run `make setup`"
    build.check_bindings_import(native.generated_dir())


def test_package_integrity_is_checked(tmp_path):
    tarball = _tarball()
    build.verify_integrity(tarball)
    tampered = tmp_path / tarball.name
    tampered.write_bytes(tarball.read_bytes() + b"\0")
    with pytest.raises(build.BuildError, match="INTEGRITY MISMATCH"):
        build.verify_integrity(tampered)


# ---------------------------------------------------------------- (b) the patch


def test_patch_applies_to_pristine_source(tmp_path):
    package = build.extract(_tarball(), tmp_path, lambda name: name == f"package/{DTLS}")
    assert BUGGY in (package / DTLS).read_text()
    build.apply_patches(package)
    text = (package / DTLS).read_text()
    assert FIXED in text
    assert BUGGY not in text


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    extracted = tar.extractfile(member)
    assert extracted is not None, f"{member.name} is not a regular file"
    return extracted.read()


def _mini_tarball(tmp_path: Path, transform=lambda text: text) -> Path:
    """The parts of the pinned package that source preparation touches
    (DtlsTransport.cpp, rewritten by ``transform``, and the subproject wraps)."""
    out = tmp_path / "mini.tar"
    with tarfile.open(_tarball()) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            if member.name == f"package/{DTLS}":
                data = transform(_read(src, member).decode()).encode()
            elif member.name.startswith("package/worker/subprojects/") and member.name.endswith(".wrap"):
                data = _read(src, member)
            else:
                continue
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda text: text.replace(BUGGY, "(operationType == BIO_CB_RETURN_X)"), id="line-changed"),
        pytest.param(lambda text: text.replace(BUGGY, FIXED), id="already-fixed-upstream"),
    ],
)
def test_build_refuses_source_without_the_line(tmp_path, transform):
    tarball = _mini_tarball(tmp_path, transform)
    with pytest.raises(build.BuildError, match="does not apply"):
        build.prepare_source(tarball, tmp_path / "build", patched=True)
    assert not (tmp_path / "build" / "src").exists(), "a failed preparation must not look complete"


def test_build_refuses_source_without_the_file(tmp_path):
    (tmp_path / "package" / "worker").mkdir(parents=True)
    with pytest.raises(build.BuildError):
        build.apply_patches(tmp_path / "package")


def test_unpatched_preparation_keeps_the_buggy_line(tmp_path):
    package = build.prepare_source(_mini_tarball(tmp_path), tmp_path / "build", patched=False)
    assert BUGGY in (package / DTLS).read_text()
    patched = build.prepare_source(_mini_tarball(tmp_path), tmp_path / "build2", patched=True)
    assert FIXED in (patched / DTLS).read_text()
    # The shims are installed either way.
    wrap = package / "worker" / "subprojects" / "libsrtp3.wrap"
    assert (wrap.parent / build.wrap_directory(wrap) / "include" / "srtp.h").is_file()


# ---------------------------------------------------------------- (c) the channel


def _read_exactly(fd: int, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(remaining, 0))
        if not ready:
            raise TimeoutError(f"got {len(data)} of {size} bytes")
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError(f"channel closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def test_worker_announces_running_then_exits_when_its_channel_closes():
    sys.path.insert(0, str(native.generated_dir()))
    try:
        from FBS.Message.Body import Body
        from FBS.Message.Message import Message
        from FBS.Notification.Event import Event
        from FBS.Notification.Notification import Notification
    finally:
        sys.path.remove(str(native.generated_dir()))

    proc, req_w, rsp_r = build.spawn_worker(
        _binary(),
        ["--logLevel=warn"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        size = int.from_bytes(_read_exactly(rsp_r, 4, deadline), "little")
        assert 0 < size < 4 * 1024 * 1024
        frame = _read_exactly(rsp_r, size, deadline)

        message = Message.GetRootAs(frame, 0)
        assert message.DataType() == Body.Notification
        notification = Notification()
        table = message.Data()
        notification.Init(table.Bytes, table.Pos)
        assert notification.Event() == Event.WORKER_RUNNING

        os.close(req_w)  # the worker's request pipe hits EOF
        req_w = -1
        _out, err = proc.communicate(timeout=10)
        # Observed: a closed channel makes the worker close itself cleanly.
        assert proc.returncode == 0, (proc.returncode, err.decode(errors="replace"))
    finally:
        if req_w >= 0:
            os.close(req_w)
        os.close(rsp_r)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

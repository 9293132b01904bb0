"""Settings: defaults, env and .env overrides, and start-up errors that name the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from control.config import MEDIASOUP_LOG_TAGS, ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
VARS = [name.upper() for name in Settings.model_fields]
Loader = Callable[..., Settings]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Parley variable from the outer environment, and no ./.env in the cwd."""
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Loader:
    """``load(VAR=value, ...)``: set variables (undone after the test), load the settings."""

    def _load(**env: str) -> Settings:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return load_settings()

    return _load


def test_every_field_has_its_documented_variable() -> None:
    assert VARS == [
        "PORT",
        "HOST",
        "MONGODB_URI",
        "MONGODB_WRITE_CONCERN",
        "MONGODB_TIMEOUT_MS",
        "RABBITMQ_URL",
        "MINIO_ENDPOINT",
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
        "MINIO_BUCKET",
        "MINIO_REGION",
        "MINIO_PART_SIZE_MB",
        "MINIO_CONCURRENCY",
        "PRESIGN_EXPIRY",
        "CHAT_FILE_MAX_MB",
        "RABBITMQ_AI_QUEUE",
        "ADMIN_TOKEN",
        "DATA_DIR",
        "RECORDING_WIDTH",
        "RECORDING_HEIGHT",
        "RECORDING_FPS",
        "RECORDING_VIDEO_BITRATE",
        "RECORDING_DIR",
        "RECORDING_MIN_FREE_MB",
        "CHAT_MAX_TEXT_LENGTH",
        "CHAT_DELETE_ON_MEETING_END",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "MEDIASOUP_NUM_WORKERS",
        "MEDIASOUP_RTC_MIN_PORT",
        "MEDIASOUP_RTC_MAX_PORT",
        "MEDIASOUP_LISTEN_IP",
        "MEDIASOUP_ANNOUNCED_ADDRESS",
        "MEDIASOUP_UDP_RECV_BUFFER_BYTES",
        "MEDIASOUP_WORKER_LOG_LEVEL",
        "MEDIASOUP_WORKER_LOG_TAGS",
        "SIGNALING_MAX_FRAME_BYTES",
        "SIGNALING_REQUEST_TIMEOUT_SECONDS",
        "PEER_RECONNECT_GRACE_SECONDS",
        "ROOM_CONSUMERS_PER_WORKER",
        "MAX_ROOMS",
        "MAX_PEERS_PER_ROOM",
        "MAX_BROADCASTERS_PER_ROOM",
        "MAX_TRANSPORTS_PER_PEER",
        "MAX_PRODUCERS_PER_PEER",
        "MAX_DATA_PRODUCERS_PER_PEER",
        "MAX_CONSUMERS_PER_PEER",
        "MAX_RECORDINGS",
        "SIGNALING_REQUESTS_PER_SECOND",
        "SIGNALING_REQUEST_BURST",
        "SIGNALING_JOIN_TIMEOUT_SECONDS",
        "SIGNALING_MAX_JSON_DEPTH",
        "TRUSTED_PROXIES",
        "MAX_CONNECTIONS_PER_IP",
        "CONNECTIONS_PER_SECOND_PER_IP",
        "CONNECTION_BURST_PER_IP",
        "BROADCASTERS_PER_MINUTE_PER_IP",
        "REST_REQUESTS_PER_SECOND",
        "REST_REQUEST_BURST",
        "REST_REQUESTS_PER_SECOND_PER_IP",
        "REST_REQUEST_BURST_PER_IP",
        "RATE_LIMIT_MAX_CLIENTS",
        "REDIS_URL",
        "NODE_ID",
        "NODE_ADVERTISE_URL",
        "CLUSTER_SECRET",
        "CLUSTER_DRAIN_TIMEOUT_SECONDS",
        "CLUSTER_SOCKET_HANDOVER",
        "CLUSTER_HOST_ID",
        "ROOM_CONSUMERS_PER_NODE",
        "NODE_PIPE_LISTEN_IP",
        "NODE_PIPE_ANNOUNCED_ADDRESS",
        "API_KEY",
        "API_SECRET",
        "API_KEYS_FILE",
        "AUTH_OPEN_JOIN",
        "TOKEN_TTL_SECONDS",
        "DEFAULT_GRANTS",
        "PUBLIC_URL",
        "GOOGLE_CLIENT_ID",
        "GOOGLE_CLIENT_SECRET",
        "GOOGLE_ALLOWED_DOMAINS",
        "OIDC_ISSUER",
        "SESSION_SECRET",
        "TLS_CERT_FILE",
        "TLS_KEY_FILE",
        "WEB_DIR",
        "METRICS_ENABLED",
        "METRICS_TOKEN",
        "METRICS_SAMPLE_INTERVAL_SECONDS",
    ]
    documented = (REPO / "deploy" / ".env.example").read_text()
    readme = (REPO / "README.md").read_text()
    for name in VARS:
        assert f"{name}=" in documented, f"{name} missing from deploy/.env.example"
        assert f"`{name}`" in readme, f"{name} missing from the README's table"


def test_defaults(tmp_path: Path) -> None:
    s = load_settings()
    assert s.port == 3000
    assert s.host == "127.0.0.1"  # issue 14: loopback by default (no keys + loopback = dev mode)
    assert s.mongodb_uri is None and s.rabbitmq_url is None and s.minio_endpoint is None
    assert s.minio_access_key is None and s.minio_secret_key is None
    assert s.minio_bucket == "recordings"
    assert s.data_dir == (tmp_path / "data").resolve()
    assert s.sqlite_path.parent == s.data_dir
    assert s.recordings_dir.parent == s.data_dir and s.outbox_dir.parent == s.data_dir
    assert s.log_level == "INFO" and s.log_format == "text"
    assert s.mediasoup_num_workers == len(os.sched_getaffinity(0)) >= 1
    assert (s.mediasoup_rtc_min_port, s.mediasoup_rtc_max_port) == (40000, 49999)
    assert s.mediasoup_listen_ip == "0.0.0.0"
    assert s.mediasoup_announced_address is None
    assert s.mediasoup_worker_log_level == "warn"
    assert s.mediasoup_worker_log_tags == []
    assert all("embedded" in where for where in s.backends().values())


def test_env_overrides(load: Loader) -> None:
    s = load(
        PORT="8080",
        HOST="127.0.0.1",
        MONGODB_URI="mongodb://parley:pw@db:27017/parley?authSource=admin",
        RABBITMQ_URL="amqp://guest:guest@mq:5672/",
        MINIO_ENDPOINT="minio:9000",
        MINIO_ACCESS_KEY="ak",
        MINIO_SECRET_KEY="sk",
        MINIO_BUCKET="my-recordings",
        DATA_DIR="/var/lib/parley",
        LOG_LEVEL="debug",
        LOG_FORMAT="JSON",
        MEDIASOUP_NUM_WORKERS="3",
        MEDIASOUP_RTC_MIN_PORT="20000",
        MEDIASOUP_RTC_MAX_PORT="20100",
        MEDIASOUP_LISTEN_IP="::",
        MEDIASOUP_ANNOUNCED_ADDRESS="media.example.org",
        MEDIASOUP_WORKER_LOG_LEVEL="debug",
        MEDIASOUP_WORKER_LOG_TAGS="ice, dtls,ICE,rtp",
    )
    assert s.port == 8080 and s.host == "127.0.0.1"
    assert s.mongodb_uri == "mongodb://parley:pw@db:27017/parley?authSource=admin"
    assert s.rabbitmq_url == "amqp://guest:guest@mq:5672/"
    assert s.minio_endpoint == "http://minio:9000"  # scheme added for boto3's endpoint_url
    assert s.minio_access_key == "ak"
    assert s.minio_secret_key is not None and s.minio_secret_key.get_secret_value() == "sk"
    assert s.minio_bucket == "my-recordings"
    assert s.data_dir == Path("/var/lib/parley")
    assert s.log_level == "DEBUG" and s.log_format == "json"
    assert s.mediasoup_num_workers == 3
    assert (s.mediasoup_rtc_min_port, s.mediasoup_rtc_max_port) == (20000, 20100)
    assert s.mediasoup_listen_ip == "::"
    assert s.mediasoup_announced_address == "media.example.org"
    assert s.mediasoup_worker_log_level == "debug"
    assert s.mediasoup_worker_log_tags == ["ice", "dtls", "rtp"]
    assert not any("embedded" in where for where in s.backends().values())


def test_dotenv_file_is_read_and_env_wins(tmp_path: Path, load: Loader) -> None:
    (tmp_path / ".env").write_text("PORT=4000\nLOG_FORMAT=json\nMONGODB_URI=\n# a comment\n")
    s = load_settings()
    assert s.port == 4000 and s.log_format == "json"
    assert s.mongodb_uri is None  # empty means unset: embedded default
    assert load(PORT="5000").port == 5000


def test_empty_values_mean_default(load: Loader) -> None:
    s = load(PORT="", MINIO_BUCKET="", MEDIASOUP_WORKER_LOG_TAGS="", MEDIASOUP_NUM_WORKERS="")
    assert s.port == 3000 and s.minio_bucket == "recordings"
    assert s.mediasoup_worker_log_tags == []


def test_signaling_and_room_settings(load: Loader) -> None:
    s = load_settings()
    assert s.signaling_max_frame_bytes == 1_048_576
    assert s.signaling_request_timeout_seconds == 20
    assert s.peer_reconnect_grace_seconds == 10
    assert s.room_consumers_per_worker == 500
    s = load(
        SIGNALING_MAX_FRAME_BYTES="65536",
        SIGNALING_REQUEST_TIMEOUT_SECONDS="5",
        PEER_RECONNECT_GRACE_SECONDS="0",
        ROOM_CONSUMERS_PER_WORKER="200",
    )
    assert (s.signaling_max_frame_bytes, s.signaling_request_timeout_seconds) == (65536, 5)
    assert (s.peer_reconnect_grace_seconds, s.room_consumers_per_worker) == (0, 200)


def test_trusted_proxies_are_networks(load: Loader) -> None:
    assert load_settings().trusted_proxies == []
    s = load(TRUSTED_PROXIES="10.0.0.1/8, 192.168.1.7 ,2001:db8::/32")
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"]
    assert load(TRUSTED_PROXIES="").trusted_proxies == []


def test_all_log_tags_accepted(load: Loader) -> None:
    s = load(MEDIASOUP_WORKER_LOG_TAGS=",".join(MEDIASOUP_LOG_TAGS))
    assert s.mediasoup_worker_log_tags == list(MEDIASOUP_LOG_TAGS)
    assert load(MEDIASOUP_WORKER_LOG_TAGS='["ice", "bwe"]').mediasoup_worker_log_tags == ["ice", "bwe"]


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("HOST", "   "),
        ("MONGODB_URI", "postgres://db"),
        ("RABBITMQ_URL", "http://mq:5672"),
        ("MINIO_ENDPOINT", "ftp://minio:9000"),
        ("MINIO_BUCKET", "Not_A_Bucket"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
        ("MEDIASOUP_NUM_WORKERS", "0"),
        ("MEDIASOUP_NUM_WORKERS", "many"),
        ("MEDIASOUP_RTC_MIN_PORT", "-1"),
        ("MEDIASOUP_RTC_MAX_PORT", "65536"),
        ("MEDIASOUP_LISTEN_IP", "not-an-ip"),
        ("MEDIASOUP_ANNOUNCED_ADDRESS", "bad host"),
        ("MEDIASOUP_WORKER_LOG_LEVEL", "verbose"),
        ("MEDIASOUP_WORKER_LOG_TAGS", "ice,nope"),
        ("MEDIASOUP_WORKER_LOG_TAGS", "[ice"),
        ("SIGNALING_MAX_FRAME_BYTES", "100"),
        ("SIGNALING_REQUEST_TIMEOUT_SECONDS", "0"),
        ("PEER_RECONNECT_GRACE_SECONDS", "-1"),
        ("ROOM_CONSUMERS_PER_WORKER", "0"),
        ("TRUSTED_PROXIES", "10.0.0.0/8, proxy.example"),
        ("MAX_CONNECTIONS_PER_IP", "0"),
        ("CONNECTIONS_PER_SECOND_PER_IP", "0"),
        ("REST_REQUEST_BURST", "0"),
        ("RATE_LIMIT_MAX_CLIENTS", "1"),
    ],
)
def test_invalid_value_names_the_variable(var: str, value: str, load: Loader) -> None:
    with pytest.raises(ConfigError) as err:
        load(**{var: value})
    message = str(err.value)
    assert message.startswith(var), message
    assert "\n" not in message


@pytest.mark.parametrize(("low", "high"), [("45000", "44000"), ("45000", "45000")])
def test_rtc_port_range_must_be_increasing(low: str, high: str, load: Loader) -> None:
    with pytest.raises(ConfigError) as err:
        load(MEDIASOUP_RTC_MIN_PORT=low, MEDIASOUP_RTC_MAX_PORT=high)
    assert "MEDIASOUP_RTC_MIN_PORT" in str(err.value) and "MEDIASOUP_RTC_MAX_PORT" in str(err.value)


def test_minio_needs_credentials(load: Loader) -> None:
    with pytest.raises(ConfigError) as err:
        load(MINIO_ENDPOINT="https://s3.example.org", MINIO_ACCESS_KEY="ak")
    assert "MINIO_SECRET_KEY" in str(err.value)
    assert load(MINIO_SECRET_KEY="sk").minio_endpoint == "https://s3.example.org"


def test_admin_token_was_removed_and_refuses_to_start(load: Loader) -> None:
    """ADMIN_TOKEN guarded the admin routes before access tokens: a deployment still setting it
    must not start with those routes open (dev mode) nor silently ignore it; empty = unset."""
    assert load(ADMIN_TOKEN="").admin_token is None
    with pytest.raises(ConfigError) as err:
        load(ADMIN_TOKEN="s3cret-admin-token")
    message = str(err.value)
    assert message.startswith("ADMIN_TOKEN=<redacted>: was removed") and "roomAdmin" in message
    assert "s3cret-admin-token" not in message


def test_errors_and_redacted_settings_hide_secrets(load: Loader) -> None:
    with pytest.raises(ConfigError) as err:
        load(MONGODB_URI="mysql://root:hunter2@db/x")
    assert "MONGODB_URI" in str(err.value) and "hunter2" not in str(err.value)

    s = load(
        MONGODB_URI="mongodb://root:hunter2@db/x",
        RABBITMQ_URL="amqp://guest:rabbitpw@mq/",
        MINIO_ENDPOINT="minio:9000",
        MINIO_ACCESS_KEY="AKIAEXAMPLE",
        MINIO_SECRET_KEY="wJalrXUtnFEMI",
    )
    shown = repr(s.redacted()) + repr(s.backends()) + repr(s)
    for secret in ("hunter2", "rabbitpw", "AKIAEXAMPLE", "wJalrXUtnFEMI"):
        assert secret not in shown
    assert s.redacted()["MONGODB_URI"] == "mongodb://root:***@db/x"


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in VARS}
    return subprocess.run(
        [sys.executable, "-m", "control", *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("var", "value"),
    [("PORT", "abc"), ("MEDIASOUP_WORKER_LOG_LEVEL", "loud"), ("MINIO_SECRET_KEY", "")],
)
def test_cli_invalid_config_exits_2_with_one_line(tmp_path: Path, var: str, value: str) -> None:
    env = {var: value}
    if var == "MINIO_SECRET_KEY":  # endpoint set, secret missing
        env = {"MINIO_ENDPOINT": "minio:9000", "MINIO_ACCESS_KEY": "ak", "MINIO_SECRET_KEY": ""}
    proc = _cli(["run"], env, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert var in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_cli_config_prints_masked_settings(tmp_path: Path) -> None:
    proc = _cli(["config"], {"PORT": "3999", "RABBITMQ_URL": "amqp://u:topsecret@mq/"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "PORT=3999" in proc.stdout.splitlines()
    assert "RABBITMQ_URL=amqp://u:***@mq/" in proc.stdout.splitlines()
    assert "topsecret" not in proc.stdout + proc.stderr

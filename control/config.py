"""Parley's configuration: one pydantic-settings ``Settings`` read from the
environment and an optional ``.env`` file in the working directory.

Every variable is documented in the README and in ``deploy/.env.example``.
Empty values (``MONGODB_URI=``) count as unset, so a copied ``.env.example``
keeps the embedded defaults. Invalid values fail at start-up:
:func:`load_settings` raises :class:`ConfigError` whose one-line message names
the variable (``PORT='abc': Input should be a valid integer``); the CLI prints
it and exits with status 2.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from control.logging import is_secret_name, redact, redact_text

#: Tags accepted by mediasoup-worker's ``--logTag`` (mediasoup ``WorkerLogTag``).
MEDIASOUP_LOG_TAGS: tuple[str, ...] = (
    "info",
    "ice",
    "dtls",
    "rtp",
    "srtp",
    "rtcp",
    "rtx",
    "bwe",
    "score",
    "simulcast",
    "svc",
    "sctp",
    "message",
)

#: loguru's level names (``LOG_LEVEL``).
LOG_LEVELS: tuple[str, ...] = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _default_num_workers() -> int:
    """One worker per CPU this process may run on (respects cpusets/containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class ConfigError(Exception):
    """Invalid configuration; ``str()`` is one line naming the variable(s)."""


class Settings(BaseSettings):
    """All of Parley's settings. Field ``foo_bar`` is read from env ``FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # -- HTTP / signaling ---------------------------------------------------
    port: int = Field(3000, ge=1, le=65535, description="HTTP and WebSocket port")
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="HTTP bind address (loopback by default: with no API keys, loopback-only runs open)",
    )

    # -- backends (unset = embedded default under DATA_DIR) -------------------
    mongodb_uri: str | None = Field(None, description="MongoDB for chat and meetings")
    mongodb_write_concern: str | None = Field(
        None, description="MongoDB write concern w (1, 2, majority...); unset: the URI's, else 1"
    )
    mongodb_timeout_ms: int = Field(
        5000, ge=100, le=600_000, description="MongoDB server selection, connect and socket timeout"
    )
    rabbitmq_url: str | None = Field(None, description="RabbitMQ for meeting events")
    minio_endpoint: str | None = Field(None, description="S3/MinIO endpoint for recordings")
    minio_access_key: str | None = None
    minio_secret_key: SecretStr | None = None
    minio_bucket: str = "recordings"
    minio_region: str = Field("us-east-1", min_length=1, description="S3 region (signing)")
    minio_part_size_mb: int = Field(16, ge=5, le=5120, description="multipart upload part size")
    minio_concurrency: int = Field(4, ge=1, le=64, description="parallel parts per upload")
    presign_expiry: int = Field(3600, ge=1, le=604800, description="presigned URL lifetime (s)")
    chat_file_max_mb: int = Field(25, ge=1, le=5120, description="largest chat file upload")
    rabbitmq_ai_queue: str = Field("ai.recording.completed", min_length=1, max_length=255)
    admin_token: SecretStr | None = Field(
        None,
        description="REMOVED (refused when set): admin routes take an access token with roomAdmin/roomList",
    )
    data_dir: Path = Path("./data")

    # -- recording ----------------------------------------------------------
    recording_width: int = Field(640, ge=64, le=3840, multiple_of=2, description="composite recording width (px)")
    recording_height: int = Field(360, ge=64, le=2160, multiple_of=2, description="composite recording height (px)")
    recording_fps: int = Field(15, ge=1, le=60, description="composite recording frame rate")
    recording_video_bitrate: str = Field(
        "1000k", pattern=r"^[1-9][0-9]{0,5}k$", description="composite recording H.264 bitrate (e.g. 1000k)"
    )
    recording_dir: Path | None = Field(
        None, description="recording segments until uploaded (default DATA_DIR/recording-work)"
    )
    recording_min_free_mb: int = Field(1024, ge=0, description="free disk space (MiB) needed to start a recording")

    # -- chat ---------------------------------------------------------------
    chat_max_text_length: int = Field(4000, ge=1, le=100_000, description="longest chat message (characters)")
    chat_delete_on_meeting_end: bool = Field(False, description="delete a room's chat when its meeting ends")

    # -- logging ------------------------------------------------------------
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    # -- media (mediasoup workers) ------------------------------------------
    mediasoup_num_workers: int = Field(default_factory=_default_num_workers, ge=1, le=1024)
    mediasoup_rtc_min_port: int = Field(40000, ge=1, le=65535)
    mediasoup_rtc_max_port: int = Field(49999, ge=1, le=65535)
    mediasoup_listen_ip: str = "0.0.0.0"
    mediasoup_announced_address: str | None = None
    mediasoup_udp_recv_buffer_bytes: int = Field(
        4 * 1024 * 1024,
        ge=0,
        le=256 * 1024 * 1024,
        description="SO_RCVBUF of the workers' RTC UDP sockets (0: the kernel's default); capped by net.core.rmem_max",
    )
    mediasoup_worker_log_level: Literal["debug", "warn", "error", "none"] = "warn"
    mediasoup_worker_log_tags: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # -- signaling and rooms (control/signaling, control/rooms) ---------------
    signaling_max_frame_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1024 * 1024, description="largest WebSocket signaling message (bytes)"
    )
    signaling_request_timeout_seconds: float = Field(
        20.0, gt=0, le=300, description="how long a client has to answer a server request (newConsumer...)"
    )
    peer_reconnect_grace_seconds: float = Field(
        10.0, ge=0, le=3600, description="how long a dropped peer is kept for a reconnect with the same peerId"
    )
    room_consumers_per_worker: int = Field(
        500, ge=1, le=1_000_000, description="consumers of one room on one worker before it spreads to another"
    )

    # -- limits (control/rooms/limits.py; README "Limits") ---------------------
    max_rooms: int = Field(500, ge=1, le=1_000_000, description="open rooms on this node")
    max_peers_per_room: int = Field(200, ge=1, le=100_000, description="WebSocket peers of one room")
    max_broadcasters_per_room: int = Field(8, ge=0, le=10_000, description="REST broadcasters of one room")
    max_transports_per_peer: int = Field(8, ge=1, le=1_000, description="WebRTC transports of one peer")
    max_producers_per_peer: int = Field(16, ge=1, le=1_000, description="producers of one peer or broadcaster")
    max_data_producers_per_peer: int = Field(8, ge=0, le=1_000, description="data producers of one participant")
    max_consumers_per_peer: int = Field(1000, ge=1, le=100_000, description="consumers of one peer")
    max_recordings: int = Field(8, ge=0, le=10_000, description="concurrent recordings on this node")
    signaling_requests_per_second: float = Field(
        50.0, gt=0, le=100_000, description="sustained signaling requests per second of one peer (token bucket)"
    )
    signaling_request_burst: int = Field(
        200, ge=1, le=1_000_000, description="signaling requests one peer may send at once (token bucket size)"
    )
    signaling_join_timeout_seconds: float = Field(
        15.0, gt=0, le=3600, description="a socket that has not joined by then is closed"
    )
    signaling_max_json_depth: int = Field(
        32, ge=4, le=512, description="deepest JSON nesting of a signaling message or REST body"
    )

    # -- per-client limits (control/ratelimit; README "Limits") -------------------
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="CIDRs of reverse proxies whose X-Forwarded-For names the client (empty: never read)",
    )
    max_connections_per_ip: int = Field(
        500, ge=1, le=1_000_000, description="open signaling WebSockets of one client address"
    )
    connections_per_second_per_ip: float = Field(
        10.0, gt=0, le=100_000, description="sustained new WebSockets per second of one client address"
    )
    connection_burst_per_ip: int = Field(
        100, ge=1, le=1_000_000, description="new WebSockets one client address may open at once (bucket size)"
    )
    broadcasters_per_minute_per_ip: float = Field(
        60.0, gt=0, le=1_000_000, description="broadcaster creations per minute of one client address (also the burst)"
    )
    rest_requests_per_second: float = Field(
        20.0, gt=0, le=100_000, description="sustained REST requests per second of one principal (token identity)"
    )
    rest_request_burst: int = Field(
        100, ge=1, le=1_000_000, description="REST requests one principal may send at once (bucket size)"
    )
    rest_requests_per_second_per_ip: float = Field(
        100.0, gt=0, le=100_000, description="sustained REST requests per second of one client address"
    )
    rest_request_burst_per_ip: int = Field(
        400, ge=1, le=1_000_000, description="REST requests one client address may send at once (bucket size)"
    )
    rate_limit_max_clients: int = Field(
        50_000, ge=16, le=10_000_000, description="client addresses (and principals) tracked per limit at most"
    )

    # -- scale-out (control/cluster): unset REDIS_URL = one node, no Redis ------------
    redis_url: str | None = Field(None, description="Redis of the cluster (redis://host:6379/0): the node joins it")
    node_id: str | None = Field(None, max_length=200, description="this node's name in the cluster (default host:port)")
    node_advertise_url: str | None = Field(
        None, description="base URL other nodes reach this one at (default http(s)://host:port)"
    )
    cluster_secret: SecretStr | None = Field(
        None, description="key of the node-to-node relay token (default: derived from API_SECRET)"
    )
    cluster_drain_timeout_seconds: float = Field(
        60.0, ge=0, le=86400, description="SIGTERM in a cluster: wait at most this long for the node's rooms to end"
    )
    cluster_socket_handover: bool = Field(
        True,
        description="a client of a room on another node of this host is passed to it (its socket), not relayed",
    )
    cluster_host_id: str | None = Field(
        None,
        max_length=200,
        description="this host's identity for socket handover (default: the kernel's boot id)",
    )
    room_consumers_per_node: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="consumers of one room on one node before its new joiners go to a second node",
    )
    node_pipe_listen_ip: str | None = Field(
        None, description="IP of the PipeTransports between nodes (default MEDIASOUP_LISTEN_IP)"
    )
    node_pipe_announced_address: str | None = Field(
        None,
        description="address other nodes send piped media to (default MEDIASOUP_ANNOUNCED_ADDRESS, else the listen IP)",
    )

    # -- access control (control/auth) ----------------------------------------
    api_key: str | None = Field(None, description="API key: the iss of the access tokens it signs")
    api_secret: SecretStr | None = Field(None, description="secret of API_KEY (at least 32 characters)")
    api_keys_file: Path | None = Field(None, description="more keys, one 'key: secret' per line (rotation)")
    auth_open_join: bool = Field(False, description="token-less clients join any room as full participants")
    token_ttl_seconds: int = Field(21600, ge=60, le=30 * 86400, description="lifetime of tokens Parley mints")
    default_grants: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["join", "publish", "subscribe", "data"],
        description="grants of the tokens GET /api/token mints for signed-in users",
    )
    public_url: str | None = Field(None, description="external base URL (https://meet.example.org) for redirects")
    google_client_id: str | None = Field(None, description="OAuth client id: enables sign-in")
    google_client_secret: SecretStr | None = Field(None, description="OAuth client secret")
    google_allowed_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="e-mail domains allowed to sign in (empty: any verified e-mail)"
    )
    oidc_issuer: str = Field("https://accounts.google.com", description="OpenID Connect issuer for sign-in")
    session_secret: SecretStr | None = Field(None, description="key of the session cookie (32+ characters)")

    # -- meeting page and TLS (control/web, control/cli) -----------------------
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain: serve HTTPS and WSS directly")
    tls_key_file: Path | None = Field(None, description="PEM private key of TLS_CERT_FILE")
    web_dir: Path | None = Field(None, description="the built meeting page (default: web/dist of the source tree)")

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
        for name, path in (("TLS_CERT_FILE", self.tls_cert_file), ("TLS_KEY_FILE", self.tls_key_file)):
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file: {path}")
        return self

    # -- metrics (control/metrics) ---------------------------------------------
    metrics_enabled: bool = Field(True, description="serve GET /metrics (Prometheus text format)")
    metrics_token: SecretStr | None = Field(
        None, description="bearer token for GET /metrics (16+ characters; a roomList access token works too)"
    )
    metrics_sample_interval_seconds: float = Field(
        10.0, ge=1, le=3600, description="how often worker usage, transport bytes and consumer scores are sampled"
    )

    # -- validators ---------------------------------------------------------
    @field_validator("host", "mediasoup_announced_address", mode="before")
    @classmethod
    def _strip(cls, v: Any) -> Any:
        return v.strip() if isinstance(v, str) else v

    @field_validator("admin_token")
    @classmethod
    def _admin_token_removed(cls, v: SecretStr | None) -> None:
        """Refused rather than ignored: a deployment that relied on it must not start open."""
        if v is not None:
            raise ValueError(
                "was removed: admin routes take an access token with roomAdmin or roomList "
                "(parley token create --grants admin,list); set API_KEY/API_SECRET and unset ADMIN_TOKEN"
            )
        return None

    @field_validator("api_secret", "session_secret", "cluster_secret")
    @classmethod
    def _long_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (generate one with: openssl rand -base64 48)")
        return v

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (generate one with: openssl rand -base64 24)")
        return v

    @field_validator("default_grants", "google_allowed_domains", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [item.strip().lower() for item in v.split(",") if item.strip()]
        return v

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, v: Any) -> Any:
        """``10.0.0.0/8, 192.168.1.7`` (a bare address is one host; host bits are allowed)."""
        items = [item.strip() for item in v.split(",") if item.strip()] if isinstance(v, str) else v
        if not isinstance(items, list):
            return v
        try:
            return [ipaddress.ip_network(item, strict=False) if isinstance(item, str) else item for item in items]
        except ValueError as exc:
            raise ValueError(f"not an address or CIDR: {exc}") from None

    @field_validator("default_grants")
    @classmethod
    def _grant_names(cls, v: list[str]) -> list[str]:
        from control.auth.grants import GRANT_NAMES

        bad = [name for name in v if name not in GRANT_NAMES]
        if bad:
            raise ValueError(f"unknown grant(s) {', '.join(bad)}; valid: {','.join(GRANT_NAMES)}")
        return v

    @field_validator("google_allowed_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        return [d.removeprefix("@") for d in v]

    @field_validator("public_url", "oidc_issuer")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().rstrip("/")
        if not v.startswith(("https://", "http://")) or any(c.isspace() for c in v):
            raise ValueError("must be an http(s):// URL")
        return v

    @field_validator("mongodb_uri")
    @classmethod
    def _mongodb_uri(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return v

    @field_validator("mongodb_write_concern")
    @classmethod
    def _mongodb_write_concern(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip()
        if v.isdigit():
            if int(v) < 1:
                raise ValueError("must be at least 1 (w=0 is unacknowledged: chat messages could be lost)")
            return str(int(v))
        if not v or any(c.isspace() for c in v):
            raise ValueError("must be a number of members (1, 2...), majority, or a tag set name")
        return v

    @field_validator("rabbitmq_url")
    @classmethod
    def _rabbitmq_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("amqp://", "amqps://")):
            raise ValueError("must start with amqp:// or amqps://")
        return v

    @field_validator("minio_endpoint")
    @classmethod
    def _minio_endpoint(cls, v: str | None) -> str | None:
        """``minio:9000`` or ``http(s)://minio:9000``; normalized to a URL."""
        if v is None:
            return None
        v = v.strip().rstrip("/")
        if "://" not in v:
            v = "http://" + v
        scheme, _, rest = v.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest or "@" in rest:
            raise ValueError(
                "must be host:port or http(s)://host:port (credentials go in MINIO_ACCESS_KEY/MINIO_SECRET_KEY)"
            )
        return v

    @field_validator("minio_bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not _BUCKET_RE.match(v) or ".." in v:
            raise ValueError("must be a valid S3 bucket name (3-63 characters: a-z, 0-9, '.', '-')")
        return v

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip().upper()
            if v == "WARN":
                v = "WARNING"
            if v not in LOG_LEVELS:
                raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return v

    @field_validator("log_format", "mediasoup_worker_log_level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("mediasoup_listen_ip")
    @classmethod
    def _listen_ip(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v.strip()))
        except ValueError:
            raise ValueError("must be an IPv4 or IPv6 address") from None

    @field_validator("mediasoup_announced_address")
    @classmethod
    def _announced(cls, v: str | None) -> str | None:
        if v is not None and (any(c.isspace() for c in v) or "/" in v):
            raise ValueError("must be an IP address or a host name")
        return v

    @field_validator("mediasoup_worker_log_tags", mode="before")
    @classmethod
    def _log_tags(cls, v: Any) -> Any:
        if isinstance(v, str):
            s = v.strip()
            if s.startswith("["):
                try:
                    v = json.loads(s)
                except json.JSONDecodeError:
                    raise ValueError("must be a comma-separated list of tags") from None
            else:
                v = [t.strip() for t in s.split(",") if t.strip()]
        if isinstance(v, (list, tuple)):
            tags = [str(t).strip().lower() for t in v]
            bad = [t for t in tags if t not in MEDIASOUP_LOG_TAGS]
            if bad:
                raise ValueError(f"unknown tag(s) {', '.join(bad)}; valid: {' '.join(MEDIASOUP_LOG_TAGS)}")
            return list(dict.fromkeys(tags))
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if self.mediasoup_rtc_min_port >= self.mediasoup_rtc_max_port:
            raise ValueError(
                f"MEDIASOUP_RTC_MIN_PORT ({self.mediasoup_rtc_min_port}) must be lower than "
                f"MEDIASOUP_RTC_MAX_PORT ({self.mediasoup_rtc_max_port})"
            )
        if (self.api_key is None) != (self.api_secret is None):
            raise ValueError("API_KEY and API_SECRET must be set together")
        if (self.google_client_id is None) != (self.google_client_secret is None):
            raise ValueError("GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET must be set together")
        if self.minio_endpoint and not (self.minio_access_key and self.minio_secret_key):
            raise ValueError("MINIO_ENDPOINT is set but MINIO_ACCESS_KEY and MINIO_SECRET_KEY are not both set")
        return self

    # -- derived ------------------------------------------------------------
    @property
    def sqlite_path(self) -> Path:
        """Embedded chat/meetings store, used when ``MONGODB_URI`` is unset."""
        return self.data_dir / "parley.sqlite3"

    @property
    def recordings_dir(self) -> Path:
        """Embedded object store, used when ``MINIO_ENDPOINT`` is unset."""
        return self.data_dir / "recordings"

    @property
    def recording_work_dir(self) -> Path:
        """Segments of running (and crashed) recordings, kept until their upload is confirmed."""
        return self.recording_dir or self.data_dir / "recording-work"

    @property
    def outbox_dir(self) -> Path:
        """Reserved. The event outbox is the table/collection ``event_outbox`` of the
        chat store (``sqlite_path`` or MongoDB), see ``control/events/outbox.py``."""
        return self.data_dir / "outbox"

    def backends(self) -> dict[str, str]:
        """Which backend each store uses, for start-up messages (redacted)."""
        return {
            "chat+meetings": (
                f"MongoDB {redact_text(self.mongodb_uri)}"
                if self.mongodb_uri
                else f"embedded SQLite {self.sqlite_path} (set MONGODB_URI for MongoDB)"
            ),
            "recordings": (
                f"S3/MinIO {self.minio_endpoint} bucket {self.minio_bucket}"
                if self.minio_endpoint
                else f"embedded local directory {self.recordings_dir} (set MINIO_ENDPOINT for S3/MinIO)"
            ),
            "events": (
                f"RabbitMQ {redact_text(self.rabbitmq_url)} exchange meetings, through the outbox "
                f"(table event_outbox in {'MongoDB' if self.mongodb_uri else self.sqlite_path})"
                if self.rabbitmq_url
                else f"embedded outbox only: table event_outbox in "
                f"{'MongoDB' if self.mongodb_uri else self.sqlite_path} (set RABBITMQ_URL for RabbitMQ)"
            ),
        }

    def __repr_args__(self) -> Any:
        """``repr()``/``str()`` never show credentials."""
        for name, value in super().__repr_args__():
            if name is not None and is_secret_name(name) and value is not None:
                yield name, "***"
            elif isinstance(value, str):
                yield name, redact_text(value)
            else:
                yield name, value

    def redacted(self) -> dict[str, Any]:
        """All settings keyed by env var name, secrets masked: safe to log."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Path):
                value = str(value)
            out[name.upper()] = value
        masked: dict[str, Any] = redact(out)
        return masked


def env_name(field: str) -> str:
    """The environment variable that sets ``Settings.<field>``."""
    return field.upper()


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = err.get("loc") or ()
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ")
        if loc:
            name = env_name(str(loc[0]))
            value = err.get("input")
            if is_secret_name(name) or isinstance(value, SecretStr):
                shown = "<redacted>"
            elif isinstance(value, str):
                shown = repr(redact_text(value))
            else:
                shown = None
            parts.append(f"{name}={shown}: {msg}" if shown is not None else f"{name}: {msg}")
        else:
            parts.append(msg)
    return "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` if invalid.

    ``overrides`` are field values that win over the environment, plus
    pydantic-settings' own ``_env_file`` (``None`` to ignore ``.env``).
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    except SettingsError as exc:  # an env value pydantic-settings could not even parse
        text = str(exc)
        m = re.search(r'field "([^"]+)"', text)
        name = env_name(m.group(1)) if m else "configuration"
        raise ConfigError(f"{name}: could not parse value ({redact_text(text)})") from None

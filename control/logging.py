"""Logging for Parley: loguru, configured once by :func:`setup_logging`.

- ``text`` (default): human-readable lines, coloured on a terminal, with the
  bound context appended as ``key=value`` (``logger.bind(room=..., peer=...)``).
- ``json``: one JSON object per line: ``time``, ``level``, ``message``,
  ``logger``, ``function``, ``line``, the bound context (``room``, ``peer``,
  ``worker_pid``...) as top-level keys and ``exception`` when there is one.
- stdlib ``logging`` (aiohttp's access log, asyncio, pika, boto) is routed into
  loguru by :class:`InterceptHandler`.
- aiohttp's error (with a traceback) for an HTTP request it could not parse is
  a one-line warning (:func:`quiet_malformed_http`): client input is no error.
- Every message, bound value and traceback passes through :func:`redact_text`:
  credentials in URLs (``amqp://user:***@``), ``password=``/``token=``/``*_key=``
  pairs (also ``signature=``, ``Cookie:``), ``Bearer`` tokens, bare JWTs and
  encrypted session cookies are masked before they reach a sink. Use
  :func:`redact` on structures (e.g. settings) before logging them.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any, TextIO, cast

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

__all__ = [
    "InterceptHandler",
    "is_secret_name",
    "logger",
    "quiet_malformed_http",
    "redact",
    "redact_text",
    "setup_logging",
]

MASK = "***"

# Names whose values are secrets (settings keys, query parameters, JSON keys).
_SECRET_NAME = (
    r"[\w.-]*?(?:passw(?:or)?d|passphrase|pass(?![a-z])|pwd(?![a-z])|secret|token"
    r"|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|authorization|session[_-]?id"
    r"|signature|cookie|parley_session)[\w.-]*"
)
_SECRET_NAME_RE = re.compile(rf"^{_SECRET_NAME}$", re.IGNORECASE)

# scheme://user:password@  ->  scheme://user:***@   and   scheme://token@ -> scheme://***@
_URL_USERINFO_RE = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s:/@?#]*)(?::(?P<password>[^\s/?#]*))?@"
)
# name=value, name: value, "name": "value", ?name=value&...
_PAIR_RE = re.compile(
    rf"(?P<name>\b{_SECRET_NAME})(?P<sep>\"?'?\s*[=:]\s*\"?'?)(?P<value>(?!(?:null|none)\b)(?:Bearer\s+|Basic\s+)?[^\s\"'&,;}}\]]+)",
    re.IGNORECASE,
)
# Credentials that need no name to be recognised: JWTs (access and ID tokens) and
# Fernet tokens (the encrypted session cookie).
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# OAuth/OIDC parameters in query strings (the access log of /auth/callback, a provider's URL).
_OAUTH_QUERY_RE = re.compile(
    r"(?P<lead>[?&](?:code|state|nonce|code_verifier|code_challenge|id_token|access_token|refresh_token|credential)=)"
    r"[^&\s\"'#]+"
)
_FERNET_RE = re.compile(r"\bgAAAAA[A-Za-z0-9_=-]{20,}")
_BEARER_RE = re.compile(r"\b(?P<kind>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
# Cheap pre-checks so that ordinary lines skip the expensive patterns.
_PAIR_HINTS = (
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "credential",
    "authorization",
    "session",
    "signature",
    "cookie",
)


def is_secret_name(name: str) -> bool:
    """True if a key/variable/parameter called ``name`` holds a secret."""
    return bool(_SECRET_NAME_RE.match(name))


def _mask_userinfo(m: re.Match[str]) -> str:
    if m.group("password") is not None:
        return f"{m.group('scheme')}{m.group('user')}:{MASK}@"
    if m.group("user"):
        return f"{m.group('scheme')}{MASK}@"
    return m.group(0)


def redact_text(text: str | None) -> str:
    """Mask secrets in free text: URL credentials, secret-named pairs, bearer tokens."""
    if not text:
        return "" if text is None else text
    if "@" in text and "://" in text:
        text = _URL_USERINFO_RE.sub(_mask_userinfo, text)
    low = text.lower()
    if any(hint in low for hint in _PAIR_HINTS):
        text = _PAIR_RE.sub(lambda m: f"{m.group('name')}{m.group('sep')}{MASK}", text)
    if "bearer" in low or "basic" in low:
        text = _BEARER_RE.sub(lambda m: f"{m.group('kind')} {MASK}", text)
    if "eyj" in low:
        text = _JWT_RE.sub(MASK, text)
    if "=" in text and ("code" in low or "state" in low or "nonce" in low or "_token" in low or "credential" in low):
        text = _OAUTH_QUERY_RE.sub(lambda m: m.group("lead") + MASK, text)
    if "gaaaaa" in low:
        text = _FERNET_RE.sub(MASK, text)
    return text


def redact(value: Any, name: str | None = None) -> Any:
    """Recursively mask secrets in ``value`` (mappings, lists, strings, SecretStr).

    A value stored under a secret-looking ``name`` is replaced entirely
    (``None`` and empty values stay as they are, so "unset" stays visible).
    """
    if name is not None and is_secret_name(name) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    if type(value).__name__ in ("SecretStr", "SecretBytes"):
        return MASK
    return value


# -- stdlib logging -> loguru ----------------------------------------------


class InterceptHandler(logging.Handler):
    """Send stdlib ``logging`` records to loguru (the recipe from loguru's docs)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Find the caller that issued the stdlib call, so loguru reports it.
        frame, depth = inspect.currentframe(), 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken %-format in a library must not kill the caller
            message = f"{record.msg!r} {record.args!r}"
        logger.opt(depth=depth, exception=record.exc_info).bind(logger_name=record.name).log(level, message)


class _MalformedHttpFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a request line over 8 KiB, a bad header)
    as an error with a traceback, although it answered it 400: client input, so a
    one-line warning here. Anything else it logs passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and error.code < 500:
            record.msg = f"{record.getMessage()}: {error.code} {str(error.message)[:120]}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_MALFORMED_HTTP_FILTER = _MalformedHttpFilter()


def quiet_malformed_http() -> None:
    """Log malformed HTTP requests from clients as warnings, without a traceback (idempotent)."""
    server_logger = logging.getLogger("aiohttp.server")
    if _MALFORMED_HTTP_FILTER not in server_logger.filters:
        server_logger.addFilter(_MALFORMED_HTTP_FILTER)


# Libraries that are chatty at INFO/DEBUG: only their warnings unless LOG_LEVEL is TRACE.
_NOISY = ("pika", "botocore", "boto3", "s3transfer", "urllib3", "pymongo")


def _intercept_stdlib(level_no: int) -> None:
    logging.basicConfig(handlers=[InterceptHandler()], level=level_no, force=True)
    logging.captureWarnings(True)
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(level_no, logging.WARNING) if level_no > 5 else level_no)
    # aiohttp's access log at INFO, whatever the root level allows
    logging.getLogger("aiohttp.access").setLevel(max(level_no, logging.INFO))


# -- formatting ---------------------------------------------------------------

_RESERVED = ("time", "level", "message", "logger", "function", "line", "exception", "process")


def _context(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: redact(v, k) for k, v in record["extra"].items() if not k.startswith("_") and k != "logger_name"}


def _exception_text(record: Mapping[str, Any]) -> str:
    exc = record["exception"]
    if exc is None or exc.type is None:
        return ""
    lines = traceback.format_exception(exc.type, exc.value, exc.traceback)
    return redact_text("".join(lines)).rstrip("\n")


def _json_line(record: Mapping[str, Any]) -> str:
    out: dict[str, Any] = {
        "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["extra"].get("logger_name") or record["name"],
        "function": record["function"],
        "line": record["line"],
    }
    for k, v in _context(record).items():
        out[f"extra_{k}" if k in _RESERVED else k] = v
    exc = _exception_text(record)
    if exc:
        out["exception"] = exc
    return json.dumps(out, default=str, ensure_ascii=False)


def _json_format(record: Record) -> str:
    record["extra"]["_json"] = _json_line(record)
    return "{extra[_json]}\n"


def _text_format(record: Record) -> str:
    ctx = _context(record)
    record["extra"]["_ctx"] = "".join(f" {k}={v}" for k, v in ctx.items())
    record["extra"]["_where"] = record["extra"].get("logger_name") or record["name"]
    exc = _exception_text(record)
    record["extra"]["_exc"] = "\n" + exc if exc else ""
    return (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
        "<cyan>{extra[_where]}:{line}</cyan> - <level>{message}</level>{extra[_ctx]}{extra[_exc]}\n"
    )


def _redact_patcher(record: Record) -> None:
    record["message"] = redact_text(record["message"])


def setup_logging(
    level: str = "INFO",
    fmt: str = "text",
    sink: TextIO | Callable[[Any], None] | None = None,
    *,
    colorize: bool | None = None,
) -> int:
    """(Re)configure loguru and route stdlib logging into it.

    ``level``: a loguru level name; ``fmt``: ``"text"`` or ``"json"``;
    ``sink``: defaults to stderr. Returns the loguru handler id.
    """
    level = level.upper()
    if level == "WARN":
        level = "WARNING"
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    if sink is None:
        sink = sys.stderr
    if colorize is None:
        colorize = fmt == "text" and bool(getattr(sink, "isatty", lambda: False)())
    logger.remove()
    # The formatters treat the record as the dict it is at run time (loguru types it as a TypedDict).
    logger.configure(patcher=cast("Callable[[Record], None]", _redact_patcher))
    handler_id = logger.add(
        sink,
        level=level,
        format=cast("Callable[[Record], str]", _json_format if fmt == "json" else _text_format),
        colorize=colorize if fmt == "text" else False,
        backtrace=False,
        diagnose=False,  # never print local variables: they may hold secrets
        enqueue=False,
    )
    _intercept_stdlib(logger.level(level).no)
    quiet_malformed_http()
    return handler_id

"""Logging: JSON lines with bound context, stdlib routed into loguru, secrets redacted.

Every test reads the real output of the configured sink (a StringIO).
"""

from __future__ import annotations

import io
import json
import logging
import sys
import warnings
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from loguru import logger

from control.config import Settings
from control.logging import MASK, redact, redact_text, setup_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    logger.remove()
    logger.configure(patcher=None)
    logger.add(sys.stderr)
    logging.basicConfig(handlers=[], level=logging.WARNING, force=True)
    logging.captureWarnings(False)


@pytest.fixture
def json_out() -> io.StringIO:
    out = io.StringIO()
    setup_logging("DEBUG", "json", sink=out)
    return out


def records(out: io.StringIO) -> list[dict]:
    lines = out.getvalue().splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_json_lines_carry_bound_context(json_out: io.StringIO) -> None:
    log = logger.bind(room="room-1", peer="alice", worker_pid=4242)
    log.info("peer {} joined", "alice")
    log.bind(transport_id="t1").warning("second line\nwith a newline in the message")
    logger.debug("no context")

    first, second, third = records(json_out)
    assert first["message"] == "peer alice joined"
    assert first["level"] == "INFO"
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert (first["room"], first["peer"], first["worker_pid"]) == ("room-1", "alice", 4242)
    assert first["logger"] == __name__ and first["function"] == "test_json_lines_carry_bound_context"
    assert second["level"] == "WARNING" and second["transport_id"] == "t1"
    assert second["message"] == "second line\nwith a newline in the message"
    assert third["level"] == "DEBUG" and "room" not in third


def test_json_exception_is_a_field(json_out: io.StringIO) -> None:
    try:
        raise RuntimeError("cannot reach amqp://guest:s3cret@mq:5672/")
    except RuntimeError:
        logger.bind(room="r").exception("publish failed")
    (rec,) = records(json_out)
    assert rec["level"] == "ERROR" and rec["room"] == "r"
    assert "RuntimeError" in rec["exception"] and "Traceback" in rec["exception"]
    assert "s3cret" not in json_out.getvalue()
    assert "amqp://guest:***@mq:5672/" in rec["exception"]


def test_level_filters(json_out: io.StringIO) -> None:
    out = io.StringIO()
    setup_logging("WARNING", "json", sink=out)
    logger.info("dropped")
    logging.getLogger("asyncio").info("dropped too")
    logger.warning("kept")
    assert [r["message"] for r in records(out)] == ["kept"]


def test_text_format_is_readable_with_context() -> None:
    out = io.StringIO()
    setup_logging("INFO", "text", sink=out)
    logger.bind(room="r1", worker_pid=7).info("hello")
    line = out.getvalue().rstrip("\n")
    assert "\n" not in line and "\x1b[" not in line  # not a tty: no colours
    assert "| INFO     |" in line and line.split(" - ", 1)[1] == "hello room=r1 worker_pid=7"


def test_stdlib_logging_lands_in_loguru(json_out: io.StringIO) -> None:
    logging.getLogger("asyncio").warning("Task was destroyed but it is pending: %s", "<Task>")
    logging.getLogger("pika.adapters").warning("connection %s lost", "amqp://guest:guest@localhost/")
    logging.getLogger("pika.adapters").info("chatty pika info is dropped")
    logging.getLogger("botocore.credentials").warning("creds aws_secret_access_key=AbCdEf")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a py.warnings warning", DeprecationWarning, stacklevel=1)

    recs = records(json_out)
    by_logger = {r["logger"]: r for r in recs}
    assert by_logger["asyncio"]["message"] == "Task was destroyed but it is pending: <Task>"
    assert by_logger["asyncio"]["level"] == "WARNING"
    assert by_logger["pika.adapters"]["message"] == "connection amqp://guest:***@localhost/ lost"
    assert by_logger["botocore.credentials"]["message"] == f"creds aws_secret_access_key={MASK}"
    assert "a py.warnings warning" in by_logger["py.warnings"]["message"]
    assert not any("chatty" in r["message"] for r in recs)
    assert "AbCdEf" not in json_out.getvalue()


async def test_aiohttp_access_log_lands_in_loguru_redacted(json_out: io.StringIO) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/ws", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/ws?roomId=r1&peerId=p1&token=eyJhbGciOiJIUzI1NiJ9.payload.sig"
            async with session.get(url) as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()

    access = [r for r in records(json_out) if r["logger"] == "aiohttp.access"]
    assert len(access) == 1, json_out.getvalue()
    assert "GET /ws?roomId=r1&peerId=p1&token=*** HTTP/1.1" in access[0]["message"]
    assert "eyJhbGciOiJIUzI1NiJ9" not in json_out.getvalue()


def test_messages_and_bound_values_are_redacted(json_out: io.StringIO) -> None:
    logger.info("connecting to mongodb://parley:pa55word@db:27017/parley?authSource=admin")
    logger.bind(url="amqp://u:rabbitpw@mq/", api_key="k-123456", token="t-987654").info("bound")
    logger.info("request headers: Authorization: Bearer abc.def.ghi123")
    logger.info('payload {"password": "hunter2", "peerId": "bob"}')
    text = json_out.getvalue()
    for secret in ("pa55word", "rabbitpw", "k-123456", "t-987654", "abc.def.ghi123", "hunter2"):
        assert secret not in text
    first, second, third, fourth = records(json_out)
    assert first["message"] == "connecting to mongodb://parley:***@db:27017/parley?authSource=admin"
    assert (second["url"], second["api_key"], second["token"]) == ("amqp://u:***@mq/", MASK, MASK)
    assert "Authorization: ***" in third["message"]
    assert fourth["message"] == '{"password": "***", "peerId": "bob"}'.join(["payload ", ""])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqp://guest:guest@localhost:5672/%2F", "amqp://guest:***@localhost:5672/%2F"),
        ("amqps://user:p%40ss@mq.example.org/vhost", "amqps://user:***@mq.example.org/vhost"),
        ("mongodb+srv://admin:pw@cluster0.example.net/db", "mongodb+srv://admin:***@cluster0.example.net/db"),
        ("mongodb://onlytoken@host/db", "mongodb://***@host/db"),
        ("amqp://u:p@ss@mq/vhost", "amqp://u:***@mq/vhost"),
        ("http://minio:9000/recordings/a.mp4", "http://minio:9000/recordings/a.mp4"),
        ("/ws?roomId=r&peerId=p&token=abc", "/ws?roomId=r&peerId=p&token=***"),
        ("MINIO_SECRET_KEY=minio123 MINIO_BUCKET=recordings", "MINIO_SECRET_KEY=*** MINIO_BUCKET=recordings"),
        ("RABBITMQ_DEFAULT_PASS=x passive=true", "RABBITMQ_DEFAULT_PASS=*** passive=true"),
        ("{'accessKey': 'AKIA1', 'secretAccessKey': 'zz'}", "{'accessKey': '***', 'secretAccessKey': '***'}"),
        ("password: hunter2", "password: ***"),
        ("no secrets here, room=abc", "no secrets here, room=abc"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redact_structures_and_settings() -> None:
    data = {
        "MONGODB_URI": "mongodb://root:pw@db/x",
        "MINIO_ACCESS_KEY": "AKIA",
        "minio_secret_key": "zz",
        "auth": {"token": "abc", "user": "bob"},
        "tags": ["amqp://a:b@c/"],
        "unset_password": None,
        "port": 3000,
    }
    assert redact(data) == {
        "MONGODB_URI": "mongodb://root:***@db/x",
        "MINIO_ACCESS_KEY": MASK,
        "minio_secret_key": MASK,
        "auth": {"token": MASK, "user": "bob"},
        "tags": ["amqp://a:***@c/"],
        "unset_password": None,
        "port": 3000,
    }
    s = Settings(
        _env_file=None,
        rabbitmq_url="amqp://u:pw123@mq/",
        minio_endpoint="minio:9000",
        minio_access_key="AKIA",
        minio_secret_key="verysecret",
    )
    out = io.StringIO()
    setup_logging("INFO", "json", sink=out)
    logger.info("configuration: {}", json.dumps(s.redacted(), default=str))
    logger.info("settings object: {!r}", s)
    assert "pw123" not in out.getvalue() and "verysecret" not in out.getvalue()
    assert "AKIA" not in out.getvalue()


def test_unset_secrets_stay_visibly_unset(json_out: io.StringIO) -> None:
    s = Settings(_env_file=None)
    logger.info("configuration: {}", json.dumps(s.redacted(), default=str))
    (rec,) = records(json_out)
    assert '"MINIO_SECRET_KEY": null' in rec["message"]
    assert redact_text("password=None token: null") == "password=None token: null"

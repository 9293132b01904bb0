"""The event bus against RabbitMQ, with both outbox backends (SQLite and MongoDB).

- the outbox contract, the same on SQLite and MongoDB;
- recording.completed published and consumed from the durable AI queue, every field;
- RabbitMQ stopped while 100 events are published, then restarted: all 100 delivered;
- connections cut (proxy) during 100 publishes: all delivered, publisher reconnected;
- a publishing process killed with events in its outbox: delivered after its restart;
- outbox-only mode (no RABBITMQ_URL) keeps and shows the same events, and delivers
  them once a broker is configured;
- GET /api/events/outbox (its access: tests/integration/test_auth_rest.py); no credentials in logs; graceful
  shutdown flushes with a bounded wait; the example consumer.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pika
import pytest
from aiohttp import web
from loguru import logger

from control import auth
from control import events as events_subsystem
from control import storage as storage_subsystem
from control.config import Settings, load_settings
from control.events import (
    DEFAULT_AI_QUEUE,
    EXCHANGE,
    RECORDING_COMPLETED,
    BrokerAuthError,
    EventBus,
    MongoOutbox,
    Outbox,
    OutboxEntry,
    RabbitPublisher,
    SQLiteOutbox,
)
from control.events import routes as events_routes
from control.http import error_middleware
from control.keys import EVENTS, OBJECTS, SETTINGS, UPLOADS
from control.logging import setup_logging
from control.storage import LocalStorage, recording_key
from tests.integration.tcp_proxy import TcpProxy
from tests.services import free_ports

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]
SECRET_TOKEN = "ntn_s3cr3t-" + secrets.token_hex(8)


# --------------------------------------------------------------------------- helpers


def now() -> datetime:
    return datetime.now(UTC)


def recording_data(meeting_id: str, i: int = 0) -> dict[str, Any]:
    started = now() - timedelta(minutes=30)
    return {
        "meetingId": meeting_id,
        "roomId": "room-1",
        "object": {
            "storage": "s3",
            "bucket": "recordings",
            "key": f"recordings/room-1/rec-{i}.mp4",
            "size": 123456789,
            "contentType": "video/mp4",
            "duration": 1800.5,
            "etag": "abc-3",
            "sha256": "0" * 64,
        },
        "startedAt": started,
        "endedAt": now(),
        "participants": [
            {
                "peerId": "peer-a",
                "displayName": "Ada",
                "email": "ada@example.org",
                "aiSettings": {"summary": True, "language": "fr"},
                "integrations": {
                    "notion": {"token": SECRET_TOKEN, "pageId": "p-1"},
                    "slack": {"webhookUrl": "https://hooks.example/T/B/xyz"},
                },
            },
            {"peerId": "peer-b", "displayName": "Bob", "email": None, "aiSettings": {}, "integrations": {}},
        ],
    }


def other_events(meeting_id: str) -> list[tuple[str, dict[str, Any]]]:
    t = now()
    base = {"meetingId": meeting_id, "roomId": "room-1"}
    return [
        ("meeting.started", {**base, "startedAt": t, "title": "Weekly"}),
        (
            "participant.joined",
            {**base, "peerId": "peer-a", "displayName": "Ada", "email": "ada@example.org", "joinedAt": t},
        ),
        ("participant.left", {**base, "peerId": "peer-a", "displayName": "Ada", "leftAt": t, "reason": "hangup"}),
        ("meeting.ended", {**base, "startedAt": t, "endedAt": t, "participantCount": 2}),
    ]


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


class Broker:
    """Test-side AMQP helper: names to clean up, queues to read."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def names(self) -> tuple[str, str]:
        exchange, queue = unique("test-meetings"), unique("test-ai")
        self.exchanges.append(exchange)
        self.queues.append(queue)
        return exchange, queue

    def _conn(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.url))

    def bind_all(self, exchange: str) -> str:
        """A queue bound to every event type (``#``)."""
        queue = unique("test-all")
        self.queues.append(queue)
        conn = self._conn()
        ch = conn.channel()
        ch.exchange_declare(exchange, exchange_type="topic", durable=True)
        ch.queue_declare(queue, durable=True)
        ch.queue_bind(queue, exchange, routing_key="#")
        conn.close()
        return queue

    def read(
        self, queue: str, expect: int, timeout: float = 30.0, settle: float = 0.5
    ) -> list[tuple[pika.BasicProperties, dict[str, Any]]]:
        """Consume (ack) until ``expect`` messages, then ``settle`` s more for extras."""
        conn = self._conn()
        ch = conn.channel()
        out: list[tuple[pika.BasicProperties, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        extra_until: float | None = None
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is not None:
                out.append((props, json.loads(body)))
                continue
            if len(out) >= expect:
                extra_until = extra_until or time.monotonic() + settle
                if time.monotonic() > extra_until:
                    break
            elif time.monotonic() > deadline:
                break
            conn.process_data_events(time_limit=0.05)
        conn.close()
        return out

    def cleanup(self) -> None:
        try:
            conn = self._conn()
        except Exception:
            return
        for q in self.queues:
            try:
                conn.channel().queue_delete(q)
            except Exception:
                pass
        for x in self.exchanges:
            try:
                conn.channel().exchange_delete(x)
            except Exception:
                pass
        conn.close()


@pytest.fixture
def broker(rabbitmq) -> Iterator[Broker]:
    b = Broker(rabbitmq.url)
    yield b
    b.cleanup()


@pytest.fixture
def owned_broker(rabbitmq_owned) -> Iterator[Broker]:
    b = Broker(rabbitmq_owned.url)
    yield b
    b.cleanup()


def make_outbox(kind: str, tmp_path: Path, request) -> tuple[Outbox, Any]:
    """(outbox, cleanup) for 'sqlite' (a tmp file) or 'mongo' (a unique collection)."""
    if kind == "sqlite":
        return SQLiteOutbox(tmp_path / "parley.sqlite3"), None
    mongo = request.getfixturevalue("mongo")
    collection = unique("event_outbox")
    return MongoOutbox(mongo.uri, collection=collection), (mongo, collection)


async def drop_collection(cleanup: Any) -> None:
    if cleanup is None:
        return
    mongo, collection = cleanup
    client = mongo.async_client()
    try:
        await client.get_default_database("parley")[collection].drop()
    finally:
        await client.close()


@pytest.fixture(params=["sqlite", "mongo"])
async def outbox_kind(request) -> str:
    return request.param


@pytest.fixture
async def outbox(outbox_kind: str, tmp_path: Path, request) -> AsyncIterator[Outbox]:
    box, cleanup = make_outbox(outbox_kind, tmp_path, request)
    await box.open()
    try:
        yield box
    finally:
        await box.close()
        await drop_collection(cleanup)


def closed_port_url() -> str:
    (port,) = free_ports(1)
    return f"amqp://guest:guest@127.0.0.1:{port}/%2F"


# --------------------------------------------------------------------------- outbox contract


async def test_outbox_contract(outbox: Outbox, outbox_kind: str, tmp_path: Path, request) -> None:
    entries = [
        OutboxEntry(event_id=str(uuid.uuid4()), routing_key=f"t.{i}", body=json.dumps({"i": i}), created_at=time.time())
        for i in range(5)
    ]
    for e in entries:
        assert await outbox.add(e) is True
    assert await outbox.add(entries[0]) is False  # one entry per event id
    assert await outbox.count() == 5
    oldest = await outbox.oldest(3)
    assert [e.event_id for e in oldest] == [e.event_id for e in entries[:3]]  # insertion order
    assert oldest[0].body == entries[0].body and oldest[0].routing_key == "t.0"
    await outbox.record_failure([entries[0].event_id, entries[1].event_id], "broker down")
    await outbox.record_failure([entries[0].event_id], "still down")
    first = (await outbox.oldest(1))[0]
    assert first.attempts == 2 and first.last_error == "still down" and first.last_attempt_at
    assert await outbox.remove([entries[1].event_id, entries[3].event_id, "unknown"]) == 2
    assert [e.event_id for e in await outbox.oldest(10)] == [entries[i].event_id for i in (0, 2, 4)]
    # durable: another connection (a restarted process) sees the same entries
    if outbox_kind == "sqlite":
        again: Outbox = SQLiteOutbox(outbox.path)  # type: ignore[attr-defined]
    else:
        again = MongoOutbox(outbox.uri, collection=outbox.collection_name)  # type: ignore[attr-defined]
    await again.open()
    try:
        kept = await again.oldest(10)
        assert [e.event_id for e in kept] == [entries[i].event_id for i in (0, 2, 4)]
        assert kept[0].attempts == 2
    finally:
        await again.close()


# --------------------------------------------------------------------------- RabbitMQ


async def test_recording_completed_consumed_from_the_durable_queue(broker: Broker, outbox: Outbox) -> None:
    exchange, queue = broker.names()
    all_queue = broker.bind_all(exchange)
    bus = EventBus(outbox, RabbitPublisher(broker.url, exchange=exchange, queue=queue))
    await bus.start()  # declares the exchange, the AI queue and its binding
    try:
        meeting = unique("m")
        data = recording_data(meeting)
        envelope = await bus.publish(RECORDING_COMPLETED, data)
        for event_type, payload in other_events(meeting):
            await bus.publish(event_type, payload)
        assert await bus.flush(20)
    finally:
        await bus.close()
    # no consumer existed when it was published: it waited in the durable queue
    ((props, body),) = await asyncio.to_thread(broker.read, queue, 1)
    assert body == envelope
    assert body["schemaVersion"] == 1 and body["type"] == "recording.completed"
    uuid.UUID(body["eventId"])
    assert datetime.fromisoformat(body["occurredAt"]).tzinfo is not None
    d = body["data"]
    assert d["meetingId"] == meeting and d["roomId"] == "room-1"
    assert d["object"] == {
        "storage": "s3",
        "bucket": "recordings",
        "key": "recordings/room-1/rec-0.mp4",
        "size": 123456789,
        "contentType": "video/mp4",
        "duration": 1800.5,
        "etag": "abc-3",
        "sha256": "0" * 64,
    }
    assert datetime.fromisoformat(d["startedAt"]) < datetime.fromisoformat(d["endedAt"])
    ada, bob = d["participants"]
    assert ada == {
        "peerId": "peer-a",
        "displayName": "Ada",
        "email": "ada@example.org",
        "aiSettings": {"summary": True, "language": "fr"},
        "integrations": {
            "notion": {"token": SECRET_TOKEN, "pageId": "p-1"},
            "slack": {"webhookUrl": "https://hooks.example/T/B/xyz"},
        },
    }
    assert bob["peerId"] == "peer-b" and bob["email"] is None
    assert props.delivery_mode == 2 and props.content_type == "application/json"
    assert props.message_id == body["eventId"] and props.type == "recording.completed"
    assert props.app_id == "parley" and props.headers == {"schema-version": 1} and props.timestamp
    # every type reaches a queue bound to '#', in publication order
    everything = await asyncio.to_thread(broker.read, all_queue, 5)
    assert [b["type"] for _, b in everything] == [
        "recording.completed",
        "meeting.started",
        "participant.joined",
        "participant.left",
        "meeting.ended",
    ]
    # the queue and exchange are durable: redeclaring them non-durable is refused
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="PRECONDITION_FAILED"):
            conn.channel().queue_declare(queue, durable=False)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="PRECONDITION_FAILED"):
            conn.channel().exchange_declare(exchange, exchange_type="topic", durable=False)
    finally:
        conn.close()


async def test_invalid_events_never_reach_the_outbox(tmp_path: Path) -> None:
    bus = EventBus(SQLiteOutbox(tmp_path / "o.sqlite3"))
    await bus.start()
    try:
        with pytest.raises(ValueError, match="unknown event type"):
            await bus.publish("recording.deleted", {})
        bad = recording_data("m")
        del bad["object"]["key"]
        with pytest.raises(ValueError, match="key"):
            await bus.publish(RECORDING_COMPLETED, bad)
        naive = recording_data("m") | {"startedAt": datetime(2026, 1, 1)}
        with pytest.raises(ValueError, match="timezone"):
            await bus.publish(RECORDING_COMPLETED, naive)
        assert await bus.outbox.count() == 0
    finally:
        await bus.close()


async def test_broker_stopped_while_publishing_100_events_none_lost(
    owned_broker: Broker, rabbitmq_owned, tmp_path: Path
) -> None:
    exchange, queue = owned_broker.names()
    publisher = RabbitPublisher(owned_broker.url, exchange=exchange, queue=queue)
    bus = EventBus(SQLiteOutbox(tmp_path / "parley.sqlite3"), publisher, retry_initial=0.2, retry_max=1.0)
    await bus.start()
    meeting = unique("m")
    ids: list[str] = []
    waiting_during_outage = 0
    try:
        for i in range(30):
            ids.append((await bus.publish(RECORDING_COMPLETED, recording_data(meeting, i)))["eventId"])
        assert await bus.flush(20)
        assert publisher.connects == 1
        stop = asyncio.create_task(asyncio.to_thread(rabbitmq_owned.stop))
        for i in range(30, 100):  # keep publishing while the broker goes down
            ids.append((await bus.publish(RECORDING_COMPLETED, recording_data(meeting, i)))["eventId"])
            await asyncio.sleep(0.02)
        await stop
        waiting_during_outage = await bus.outbox.count()
        assert waiting_during_outage > 0 and not publisher.connected
        view = await bus.outbox_view(5)
        assert view["events"][0]["attempts"] >= 1 and view["events"][0]["lastError"]
        await asyncio.to_thread(rabbitmq_owned.start)
        assert await bus.flush(60), f"{await bus.outbox.count()} events still in the outbox"
        assert publisher.connects >= 2  # it reconnected on its own
    finally:
        await bus.close()
    received = await asyncio.to_thread(owned_broker.read, queue, 100, 30)
    got = [b["eventId"] for _, b in received if b["data"]["meetingId"] == meeting]
    assert len(set(got)) == 100 and set(got) == set(ids), f"{len(set(got))} of 100 delivered"
    print(
        f"\n{waiting_during_outage} events waited in the outbox during the outage; "
        f"{len(got) - len(set(got))} duplicate(s); {publisher.connects} connections"
    )


async def test_connection_cut_while_publishing_100_events(broker: Broker, tmp_path: Path) -> None:
    host_port = broker.url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    proxy = TcpProxy(host, int(port))
    exchange, queue = broker.names()
    url = broker.url.replace(host_port, f"127.0.0.1:{proxy.port}")
    publisher = RabbitPublisher(url, exchange=exchange, queue=queue)
    bus = EventBus(SQLiteOutbox(tmp_path / "parley.sqlite3"), publisher, retry_initial=0.05, retry_max=0.3)
    await bus.start()
    meeting = unique("m")
    ids = []
    cuts = 0
    try:
        for i in range(100):
            ids.append((await bus.publish(RECORDING_COMPLETED, recording_data(meeting, i)))["eventId"])
            if i % 25 == 24:
                await asyncio.sleep(0.1)
                cuts += proxy.cut() > 0
        assert await bus.flush(30)
    finally:
        await bus.close()
        proxy.close()
    # Every cut severed a live connection of its own (so the publisher reconnected
    # after each cut but perhaps the last: after the last one nothing may be left to
    # send). Asking for cuts + 1 connections failed when the first cut came before the
    # first connect and the last after the final confirm.
    assert cuts >= 3 and publisher.connects >= cuts, (cuts, publisher.connects)
    received = await asyncio.to_thread(broker.read, queue, 100)
    got = {b["eventId"] for _, b in received if b["data"]["meetingId"] == meeting}
    assert got == set(ids)


PUBLISHER_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from datetime import datetime, timezone
    from control.events import EventBus, MongoOutbox, RabbitPublisher, SQLiteOutbox

    async def main(cfg):
        if cfg["outbox"] == "sqlite":
            outbox = SQLiteOutbox(cfg["sqlite"])
        else:
            outbox = MongoOutbox(cfg["mongo_uri"], collection=cfg["collection"])
        publisher = RabbitPublisher(cfg["url"], exchange=cfg["exchange"], queue=cfg["queue"])
        bus = EventBus(outbox, publisher, retry_initial=0.2, retry_max=1.0)
        await bus.start()
        ids = []
        t = datetime.now(timezone.utc).isoformat()
        for i in range(cfg["count"]):
            env = await bus.publish("participant.joined", {
                "meetingId": cfg["meeting"], "roomId": "room-1", "peerId": f"peer-{i}",
                "displayName": f"P{i}", "joinedAt": t})
            ids.append(env["eventId"])
        print(json.dumps({"published": ids}), flush=True)
        if cfg["mode"] == "hang":
            await asyncio.sleep(3600)
        ok = await bus.flush(60)
        await bus.close()
        print(json.dumps({"flushed": ok}), flush=True)

    asyncio.run(main(json.loads(sys.argv[1])))
""")


async def test_publisher_restart_with_events_in_the_outbox(
    broker: Broker, outbox_kind: str, tmp_path: Path, request
) -> None:
    exchange, queue = broker.names()
    all_queue = broker.bind_all(exchange)
    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER_SCRIPT)
    cfg: dict[str, Any] = {
        "outbox": outbox_kind,
        "sqlite": str(tmp_path / "parley.sqlite3"),
        "exchange": exchange,
        "queue": queue,
        "meeting": unique("m"),
    }
    cleanup = None
    if outbox_kind == "mongo":
        mongo = request.getfixturevalue("mongo")
        cleanup = (mongo, unique("event_outbox"))
        cfg |= {"mongo_uri": mongo.uri, "collection": cleanup[1]}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        # 1. the broker is unreachable: 25 events pile up in the outbox; the process is killed
        proc = subprocess.Popen(
            [sys.executable, str(script), json.dumps(cfg | {"url": closed_port_url(), "count": 25, "mode": "hang"})],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        with proc:  # closes the pipes
            try:
                assert proc.stdout is not None and proc.stderr is not None  # PIPE
                line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
                assert line, proc.stderr.read().decode()
                published = json.loads(line)["published"]
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        assert len(published) == 25
        box = (
            SQLiteOutbox(cfg["sqlite"])
            if outbox_kind == "sqlite"
            else MongoOutbox(cfg["mongo_uri"], collection=cfg["collection"])
        )
        await box.open()
        try:
            assert await box.count() == 25
        finally:
            await box.close()
        # 2. restarted with a reachable broker: it delivers what the outbox holds
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script), json.dumps(cfg | {"url": broker.url, "count": 0, "mode": "flush"})],
            capture_output=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout.decode().splitlines()[-1]) == {"flushed": True}
        received = await asyncio.to_thread(broker.read, all_queue, 25)
        got = [b["eventId"] for _, b in received]
        assert sorted(got) == sorted(published)
        assert got == published  # in publication order, too
    finally:
        await drop_collection(cleanup)


async def test_wrong_broker_credentials_stop_start_up(rabbitmq, tmp_path: Path) -> None:
    url = rabbitmq.url.replace("guest:guest@", "guest:wrong-password@")
    assert url != rabbitmq.url
    bus = EventBus(SQLiteOutbox(tmp_path / "o.sqlite3"), RabbitPublisher(url, exchange=unique("x"), queue=None))
    with pytest.raises(BrokerAuthError, match="RABBITMQ_URL") as info:
        await bus.start()
    assert "wrong-password" not in str(info.value)


async def test_shutdown_flushes_with_a_bounded_wait(broker: Broker, tmp_path: Path) -> None:
    exchange, queue = broker.names()
    # broker reachable: close() delivers what is waiting
    bus = EventBus(SQLiteOutbox(tmp_path / "a.sqlite3"), RabbitPublisher(broker.url, exchange=exchange, queue=queue))
    await bus.start()
    meeting = unique("m")
    for i in range(20):
        await bus.publish(RECORDING_COMPLETED, recording_data(meeting, i))
    await bus.close(flush_timeout=10)
    assert len(await asyncio.to_thread(broker.read, queue, 20)) == 20
    # broker unreachable: close() gives up after the timeout, the events stay
    bus = EventBus(
        SQLiteOutbox(tmp_path / "b.sqlite3"), RabbitPublisher(closed_port_url(), exchange=exchange, queue=queue)
    )
    await bus.start()
    for i in range(3):
        await bus.publish(RECORDING_COMPLETED, recording_data(meeting, i))
    began = time.monotonic()
    await bus.close(flush_timeout=1.0)
    assert time.monotonic() - began < 4
    box = SQLiteOutbox(tmp_path / "b.sqlite3")
    await box.open()
    assert await box.count() == 3
    await box.close()


# --------------------------------------------------------------------------- outbox-only mode


@pytest.mark.parametrize("mode", ["rabbitmq", "outbox-only"])
async def test_same_contract_with_and_without_a_broker(mode: str, broker: Broker, outbox: Outbox) -> None:
    """Published events are durable and observable in both modes; the outbox-only mode
    shows them at GET /api/events/outbox and delivers them once a broker is configured."""
    exchange, queue = broker.names()
    all_queue = broker.bind_all(exchange)
    publisher = RabbitPublisher(broker.url, exchange=exchange, queue=queue) if mode == "rabbitmq" else None
    bus = EventBus(outbox, publisher)
    await bus.start()
    meeting = unique("m")
    published = [await bus.publish(RECORDING_COMPLETED, recording_data(meeting))]
    for event_type, payload in other_events(meeting):
        published.append(await bus.publish(event_type, payload))
    ids = [e["eventId"] for e in published]
    app = web.Application()
    auth.setup(app, load_settings(_env_file=None, host="127.0.0.1"))  # dev mode: the route is open
    app[EVENTS] = bus
    app.add_routes(events_routes.routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        flushed = await bus.flush(20)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/api/events/outbox") as resp,
        ):
            assert resp.status == 200
            view = await resp.json()
    finally:
        await runner.cleanup()
        await bus.close()
    assert view["broker"]["configured"] is (mode == "rabbitmq")
    assert view["backend"] == outbox.backend
    if mode == "rabbitmq":
        assert flushed and view["pending"] == 0 and view["events"] == []
        received = [b for _, b in await asyncio.to_thread(broker.read, all_queue, 5)]
    else:
        assert not flushed and view["pending"] == 5
        assert [e["eventId"] for e in view["events"]] == ids
        shown = view["events"][0]["event"]
        assert shown["data"]["participants"][0]["integrations"] == {
            "notion": {"token": "***", "pageId": "***"},
            "slack": {"webhookUrl": "***"},
        }
        assert SECRET_TOKEN not in json.dumps(view)
        assert shown["data"]["object"] == published[0]["data"]["object"]
        # later, with RABBITMQ_URL set, the same outbox is delivered
        later = EventBus(
            type(outbox)(**_outbox_args(outbox)), RabbitPublisher(broker.url, exchange=exchange, queue=queue)
        )
        await later.start()
        try:
            assert await later.flush(20)
        finally:
            await later.close()
        received = [b for _, b in await asyncio.to_thread(broker.read, all_queue, 5)]
    assert received == published  # the same envelopes, in order, credentials intact


def _outbox_args(outbox: Outbox) -> dict[str, Any]:
    if isinstance(outbox, SQLiteOutbox):
        return {"path": outbox.path}
    assert isinstance(outbox, MongoOutbox)
    return {"uri": outbox.uri, "collection": outbox.collection_name}


# --------------------------------------------------------------------------- app, admin, logs


async def test_app_wiring_upload_publishes_recording_completed(broker: Broker, tmp_path: Path) -> None:
    """The events and storage setups as create_app wires them: the AI queue declared at
    start-up, a queued recording upload publishing recording.completed with the
    object reference, GET /api/events/outbox, shutdown flushing."""
    queue = unique("test-ai")
    broker.queues.append(queue)
    settings = Settings(
        _env_file=None, data_dir=tmp_path / "data", rabbitmq_url=broker.url, rabbitmq_ai_queue=queue, host="127.0.0.1"
    )
    app = web.Application(middlewares=[error_middleware])
    auth.setup(app, settings)
    app[SETTINGS] = settings
    events_subsystem.setup(app, settings=SETTINGS)
    storage_subsystem.setup(app, settings=SETTINGS, events=EVENTS)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        bus, store, uploads = app[EVENTS], app[OBJECTS], app[UPLOADS]
        assert isinstance(store, LocalStorage) and bus.publisher is not None
        assert bus.publisher.exchange == EXCHANGE and settings.sqlite_path.exists()
        assert DEFAULT_AI_QUEUE == "ai.recording.completed"
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        conn.channel().queue_declare(queue, passive=True)  # declared at start-up
        conn.close()
        rec = tmp_path / "rec.mp4"
        rec.write_bytes(os.urandom(100_000))
        context = recording_data(unique("m"))
        del context["object"]
        context = json.loads(json.dumps(context, default=str))
        job = await uploads.submit(
            rec,
            recording_key("room-1", "rec.mp4"),
            content_type="video/mp4",
            duration=12.0,
            delete_local=True,
            kind="recording.completed",
            context=context,
        )
        ref = await uploads.wait(job, timeout=30)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/api/events/outbox?limit=5") as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["broker"]["queue"] == queue
    finally:
        await runner.cleanup()  # flushes the outbox
    received = await asyncio.to_thread(broker.read, queue, 1)
    bodies = [b for _, b in received if b["data"]["meetingId"] == context["meetingId"]]
    assert len(bodies) == 1
    event = bodies[0]
    assert event["eventId"] == str(uuid.UUID(job.id))  # stable: a re-run handler dedups
    assert event["data"]["object"] == {
        "storage": "local",
        "bucket": "recordings",
        "key": "recordings/room-1/rec.mp4",
        "size": 100_000,
        "contentType": "video/mp4",
        "duration": 12.0,
        "etag": ref.etag,
        "sha256": ref.sha256,
    }
    assert event["data"]["participants"][0]["integrations"]["notion"]["token"] == SECRET_TOKEN


async def test_no_credentials_in_logs(broker: Broker, tmp_path: Path) -> None:
    exchange, queue = broker.names()
    sink = io.StringIO()
    setup_logging("TRACE", "text", sink)
    try:
        url = broker.url.replace("guest:guest@", "guest:guest@")  # password "guest" is masked
        bus = EventBus(SQLiteOutbox(tmp_path / "o.sqlite3"), RabbitPublisher(url, exchange=exchange, queue=queue))
        await bus.start()
        await bus.publish(RECORDING_COMPLETED, recording_data(unique("m")))
        assert await bus.flush(10)
        await bus.outbox_view()
        await bus.close()
        bad = EventBus(
            SQLiteOutbox(tmp_path / "p.sqlite3"),
            RabbitPublisher(url.replace("guest:guest@", f"guest:{SECRET_TOKEN}@"), exchange=exchange, queue=None),
        )
        with pytest.raises(BrokerAuthError):
            await bad.start()
    finally:
        logger.remove()
        setup_logging("INFO", "text")
    logs = sink.getvalue()
    assert "RabbitMQ connected" in logs and "recording.completed" in logs
    assert SECRET_TOKEN not in logs and "guest:guest@" not in logs
    assert "hooks.example" not in logs and "ada@example.org" not in logs  # no event bodies


async def test_example_consumer_prints_events(broker: Broker, tmp_path: Path) -> None:
    exchange, queue = broker.names()
    bus = EventBus(SQLiteOutbox(tmp_path / "o.sqlite3"), RabbitPublisher(broker.url, exchange=exchange, queue=queue))
    await bus.start()
    envelope = await bus.publish(RECORDING_COMPLETED, recording_data(unique("m")))
    await bus.close()
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "control.events.consume",
            "--url",
            broker.url,
            "--queue",
            queue,
            "--exchange",
            exchange,
            "--peek",
            "-n",
            "1",
            "--timeout",
            "20",
        ],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr.decode()
    (line,) = done.stdout.decode().splitlines()
    printed = json.loads(line)
    assert printed["eventId"] == envelope["eventId"]
    assert printed["data"]["participants"][0]["integrations"]["notion"]["token"] == "***"
    assert SECRET_TOKEN not in done.stdout.decode() + done.stderr.decode()
    # --peek left it in the queue
    assert len(await asyncio.to_thread(broker.read, queue, 1)) == 1

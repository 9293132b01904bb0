"""The event bus: outbox first, then a relay that delivers to RabbitMQ.

``await bus.publish(type, data)`` validates the event, writes it to the durable
outbox (:mod:`control.events.outbox`) and returns its envelope; nothing more
happens on the caller's path. A relay task takes the oldest entries in order,
publishes them (persistent, confirmed) and deletes each one only after the
broker's confirm. When the broker is down the entries stay; the relay retries
with exponential backoff (``retry_initial`` doubling up to ``retry_max``) and,
when idle, keeps the connection alive or re-establishes it. After a broker
outage or a process restart every stored event is delivered, at least once.

Without ``RABBITMQ_URL`` there is no publisher: events stay in the outbox
(``GET /api/events/outbox`` shows them) until a broker is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loguru import logger
from pydantic import BaseModel

from control.events.outbox import Outbox, OutboxEntry, open_outbox
from control.events.publisher import BrokerAuthError, PublishFailed, RabbitPublisher, describe_error
from control.events.schema import DEFAULT_AI_QUEUE, EXCHANGE, build_envelope, redact_event
from control.retry import backoff_delays

if TYPE_CHECKING:
    from control.config import Settings
    from control.storage.base import ObjectRef
    from control.storage.uploads import UploadJob

__all__ = ["EventBus"]


class EventBus:
    """``app[EVENTS]``. See the module docstring."""

    def __init__(
        self,
        outbox: Outbox,
        publisher: RabbitPublisher | None = None,
        *,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        batch_size: int = 100,
        idle_interval: float = 5.0,
    ) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.batch_size = batch_size
        self.idle_interval = idle_interval
        self.delivered = 0
        self._delays = backoff_delays(retry_initial, retry_max)
        self._retry_at = 0.0  # monotonic: no broker attempt before this
        self._failures = 0  # consecutive failed attempts
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = False

    @classmethod
    def from_settings(cls, settings: Settings, *, exchange: str = EXCHANGE, **options: Any) -> EventBus:
        """Outbox in the chat store's backend; a RabbitMQ publisher if ``RABBITMQ_URL``."""
        publisher = None
        if settings.rabbitmq_url:
            publisher = RabbitPublisher(
                settings.rabbitmq_url, exchange=exchange, queue=settings.rabbitmq_ai_queue or DEFAULT_AI_QUEUE
            )
        return cls(open_outbox(settings), publisher, **options)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, strict: bool = True) -> None:
        """Open the outbox; connect and declare the exchange and AI queue; start the relay.

        A refused login raises :class:`BrokerAuthError` when ``strict`` (a
        configuration error); an unreachable broker only warns (events wait).
        """
        await self.outbox.open()
        if self.publisher is not None:
            try:
                # pika also reports a connection dropped during the handshake as a
                # "probable authentication error": believe it after three refusals.
                for attempt in range(3):
                    try:
                        await self.publisher.connect()
                        break
                    except BrokerAuthError:
                        if attempt == 2:
                            raise
                        await asyncio.sleep(0.5)
            except BrokerAuthError:
                if strict:
                    await self.publisher.close()
                    await self.outbox.close()
                    raise
                logger.error("{}; events wait in the outbox", self.publisher.last_error)
                self._schedule_retry()
            except Exception as exc:  # noqa: BLE001 - down for now: the relay retries
                logger.warning(
                    "RabbitMQ not reachable at start-up, events wait in the outbox: {}",
                    self.publisher.last_error or describe_error(exc),
                )
                self._schedule_retry()
        try:
            pending: int | str = await self.outbox.count()
        except Exception as exc:  # noqa: BLE001 - a MongoDB outbox whose server is away: not fatal
            pending = "? (unreachable)"
            logger.warning("event outbox not reachable at start-up: {}", describe_error(exc))
        logger.info(
            "events: outbox {} ({} waiting), {}",
            self.outbox.describe(),
            pending,
            "RabbitMQ exchange " + self.publisher.exchange
            if self.publisher
            else "no RABBITMQ_URL: events stay in the outbox",
        )
        self._started = True
        if self.publisher is not None:  # outbox-only mode has nothing to relay
            self._task = asyncio.create_task(self._relay(), name="events-relay")
            self._wake.set()

    async def close(self, flush_timeout: float = 5.0) -> None:
        """Deliver what is waiting (at most ``flush_timeout`` s), stop, close. Events
        not delivered stay in the outbox for the next start."""
        if self._stopping:
            return
        if self._task is not None and self.publisher is not None and flush_timeout > 0:
            try:
                delivered = await self.flush(flush_timeout, force=True)
            except Exception as exc:  # noqa: BLE001
                logger.warning("flushing the event outbox failed: {}", exc)
                delivered = False
            if not delivered:
                with contextlib.suppress(Exception):
                    logger.warning(
                        "{} event(s) left in the outbox; delivered after the next start", await self.outbox.count()
                    )
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(10):
                    await asyncio.shield(self._task)
            except (TimeoutError, Exception):  # noqa: BLE001
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.close()
        await self.outbox.close()

    # ------------------------------------------------------------------ publishing

    async def publish(
        self, event_type: str, data: BaseModel | Mapping[str, Any], *, event_id: str | None = None
    ) -> dict[str, Any]:
        """Validate, store durably in the outbox, hand to the relay; return the envelope.

        ``event_id`` (a UUID) makes a retried publish idempotent: the outbox keeps
        one entry per id. Raises ``ValueError`` for an unknown type or invalid data.
        """
        envelope = build_envelope(event_type, data if isinstance(data, BaseModel) else dict(data), event_id=event_id)
        entry = OutboxEntry(
            event_id=envelope["eventId"],
            routing_key=event_type,
            body=json.dumps(envelope, separators=(",", ":"), ensure_ascii=False),
            created_at=time.time(),
        )
        added = await self.outbox.add(entry)
        logger.debug(
            "event {} {} {}", event_type, entry.event_id, "stored in the outbox" if added else "already in the outbox"
        )
        self._wake.set()
        return envelope

    async def publish_upload(self, job: UploadJob, ref: ObjectRef) -> None:
        """Upload-queue handler: publish ``job.kind`` (e.g. ``recording.completed``)
        with ``job.context`` as data plus ``object``; the event id is the job's, so a
        handler that runs twice (crash in between) yields one outbox entry."""
        assert job.kind is not None
        await self.publish(
            job.kind,
            {**job.context, "object": ref.to_event()},
            event_id=str(uuid.UUID(job.id)) if _is_uuid(job.id) else None,
        )

    async def flush(self, timeout: float = 5.0, *, force: bool = False) -> bool:  # noqa: ASYNC109 - the public API
        """Wait until the outbox is empty (True) or ``timeout`` passes (False).

        ``force``: try the broker now even during a backoff pause.
        """
        deadline = time.monotonic() + timeout
        if force:
            self._retry_at = 0.0
        self._wake.set()
        while True:
            if await self.outbox.count() == 0:
                return True
            if self.publisher is None or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ admin view

    def status(self) -> dict[str, Any]:
        broker = self.publisher.status() if self.publisher else {"configured": False}
        return {
            "outbox": self.outbox.describe(),
            "backend": self.outbox.backend,
            "broker": broker,
            "delivered": self.delivered,
            "consecutiveFailures": self._failures,
            "nextAttemptIn": max(0.0, round(self._retry_at - time.monotonic(), 2)),
        }

    async def outbox_view(self, limit: int = 100) -> dict[str, Any]:
        """The waiting events (oldest first), credentials masked."""
        entries = await self.outbox.oldest(limit)
        events = []
        for e in entries:
            try:
                body: Any = redact_event(json.loads(e.body))
            except ValueError:
                body = None
            events.append(
                {
                    "eventId": e.event_id,
                    "type": e.routing_key,
                    "createdAt": e.created_at,
                    "attempts": e.attempts,
                    "lastAttemptAt": e.last_attempt_at,
                    "lastError": e.last_error,
                    "event": body,
                }
            )
        return {**self.status(), "pending": await self.outbox.count(), "events": events}

    # ------------------------------------------------------------------ relay

    def _schedule_retry(self) -> float:
        delay = next(self._delays)
        self._retry_at = time.monotonic() + delay
        self._failures += 1
        return delay

    async def _relay(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            timeout = self.idle_interval
            if self._retry_at > now:
                timeout = min(timeout, self._retry_at - now)
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping or self.publisher is None:
                continue
            if time.monotonic() < self._retry_at:
                continue
            try:
                await self._relay_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the relay must survive anything
                delay = self._schedule_retry()
                logger.opt(exception=exc).error("event relay error, retrying in {:.1f}s", delay)

    async def _relay_once(self) -> None:
        assert self.publisher is not None
        batch = await self.outbox.oldest(self.batch_size)
        if not batch:
            # Idle: keep the connection alive, or re-establish it after an outage.
            try:
                await self.publisher.tick(reconnect=self._failures > 0 or not self.publisher.connected)
            except Exception as exc:  # noqa: BLE001
                self.publisher.last_error = self.publisher.last_error or describe_error(exc)
                delay = self._schedule_retry()
                logger.debug("RabbitMQ still unreachable, next attempt in {:.1f}s", delay)
            else:
                self._recovered()
            return
        try:
            delivered = await self.publisher.publish(batch)
            failure: PublishFailed | None = None
        except PublishFailed as exc:
            delivered, failure = exc.delivered, exc
        if delivered:
            await self.outbox.remove(delivered)
            self.delivered += len(delivered)
        if failure is None:
            self._recovered()
            self._wake.set()  # more may be waiting
            return
        done = set(delivered)
        await self.outbox.record_failure([e.event_id for e in batch if e.event_id not in done], str(failure))
        delay = self._schedule_retry()
        log = logger.warning if self._failures == 1 or self._failures % 20 == 0 else logger.debug
        log(
            "event delivery failed ({} delivered in this batch, {} waiting), retrying in {:.1f}s: {}",
            len(delivered),
            len(batch) - len(delivered),
            delay,
            failure,
        )

    def _recovered(self) -> None:
        if self._failures:
            logger.info("RabbitMQ reachable again after {} failed attempt(s)", self._failures)
        self._failures = 0
        self._retry_at = 0.0
        self._delays = backoff_delays(self.retry_initial, self.retry_max)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True

"""Publishing to RabbitMQ with pika, on a dedicated thread.

Why a dedicated thread with a ``BlockingConnection`` rather than pika's asyncio
adapter: with ``confirm_delivery()`` a blocking channel's ``basic_publish``
returns only once the broker confirmed the message (and raises on a nack), which
is exactly the "remove from the outbox only after the broker confirms" rule,
without hand-written confirm bookkeeping. All pika objects live on one thread
(pika is not thread-safe); the event loop only awaits futures. Heartbeats are
serviced by :meth:`RabbitPublisher.tick` (``process_data_events``), which the
relay calls when idle. A publish runs at most a batch, so a slow broker never
holds the loop.

Reconnection: any AMQP or socket error drops the connection; the next
``publish``/``tick`` connects again (the relay spaces attempts with backoff).
Each connection (re)declares, idempotently: the durable topic exchange
``meetings``, the durable AI queue (default ``ai.recording.completed``) and its
binding to ``recording.completed``, so events published before the AI service
first starts wait in that queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from loguru import logger

from control.events.outbox import OutboxEntry
from control.events.schema import DEFAULT_AI_QUEUE, EXCHANGE, RECORDING_COMPLETED, SCHEMA_VERSION
from control.logging import redact_text

__all__ = ["BrokerAuthError", "PublishFailed", "RabbitPublisher"]

# pika logs every failed connection attempt as 6-7 ERROR lines and a traceback;
# the relay logs one line per outage (and the broker's state is in the admin view).
for _name in (
    "pika.adapters.utils.connection_workflow",
    "pika.adapters.utils.io_services_utils",
    "pika.adapters.blocking_connection",
    "pika.adapters.base_connection",
):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for pika's exceptions, whose ``str()`` is often empty; redacted."""
    text = str(exc).strip()
    if not text and exc.args:
        text = "; ".join(repr(a) if not str(a) else str(a) for a in exc.args)
    return f"{type(exc).__name__}: {redact_text(text) or 'connection failed'}"


class PublishFailed(Exception):
    """A batch stopped at a failure; ``delivered`` holds the ids confirmed before it."""

    def __init__(self, delivered: list[str], cause: BaseException) -> None:
        super().__init__(describe_error(cause))
        self.delivered = delivered
        self.cause = cause


class BrokerAuthError(Exception):
    """The broker refused the login or the virtual host: a configuration error."""


class RabbitPublisher:
    """Confirmed, persistent publishing to a topic exchange; reconnects on demand."""

    def __init__(
        self,
        url: str,
        *,
        exchange: str = EXCHANGE,
        queue: str | None = DEFAULT_AI_QUEUE,
        queue_binding: str = RECORDING_COMPLETED,
        heartbeat: int = 15,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.queue = queue
        self.queue_binding = queue_binding
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.connects = 0  # successful connections so far (reconnects = connects - 1)
        self.published = 0
        self.last_error: str | None = None
        self._conn: Any = None
        self._channel: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-amqp")
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open

    def status(self) -> dict[str, Any]:
        return {
            "configured": True,
            "url": redact_text(self.url),
            "exchange": self.exchange,
            "queue": self.queue,
            "connected": self.connected,
            "connects": self.connects,
            "published": self.published,
            "lastError": self.last_error,
        }

    # ---------------------------------------------------------------- thread side

    def _parameters(self) -> Any:
        import pika

        params = pika.URLParameters(self.url)
        params.connection_attempts = 1
        params.retry_delay = 0
        params.socket_timeout = self.connect_timeout
        params.stack_timeout = self.connect_timeout * 2
        if params.blocked_connection_timeout is None:
            params.blocked_connection_timeout = 30
        if "heartbeat=" not in self.url:
            params.heartbeat = self.heartbeat
        params.client_properties = {"connection_name": f"parley-events {socket.gethostname()}:{os.getpid()}"}
        return params

    def _connect_sync(self) -> None:
        import pika
        from pika import exceptions as pex

        self._drop_sync()
        try:
            conn = pika.BlockingConnection(self._parameters())
        except (pex.ProbableAuthenticationError, pex.ProbableAccessDeniedError, pex.AuthenticationError) as exc:
            self.last_error = (
                f"RabbitMQ at {redact_text(self.url)} refused the connection: "
                f"{describe_error(exc)}; check RABBITMQ_URL's user, password and "
                "virtual host"
            )
            raise BrokerAuthError(self.last_error) from None
        except Exception as exc:
            self.last_error = describe_error(exc)
            raise
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
            if self.queue:
                channel.queue_declare(self.queue, durable=True)
                channel.queue_bind(self.queue, self.exchange, routing_key=self.queue_binding)
        except BaseException:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            raise
        self._conn, self._channel = conn, channel
        self.connects += 1
        self.last_error = None
        if self.connects == 1:
            logger.info(
                "RabbitMQ connected ({}), exchange {}, queue {}", redact_text(self.url), self.exchange, self.queue
            )
        else:
            logger.info("RabbitMQ reconnected ({} connections so far)", self.connects)

    def _drop_sync(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - the connection is gone anyway
                pass

    def _publish_sync(self, entries: Sequence[OutboxEntry]) -> list[str]:
        import pika

        delivered: list[str] = []
        try:
            if not self.connected:
                self._connect_sync()
            for entry in entries:
                props = pika.BasicProperties(
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=entry.event_id,
                    type=entry.routing_key,
                    timestamp=int(entry.created_at),
                    app_id="parley",
                    headers={"schema-version": SCHEMA_VERSION},
                )
                # Returns once the broker confirmed it (confirm_delivery); raises on nack.
                # mandatory=False: an event type nobody is bound to is not an error.
                self._channel.basic_publish(self.exchange, entry.routing_key, entry.body.encode(), properties=props)
                delivered.append(entry.event_id)
                self.published += 1
        except BrokerAuthError as exc:
            self.last_error = str(exc)
            raise PublishFailed(delivered, exc) from None
        except Exception as exc:  # noqa: BLE001 - any AMQP/socket error: reconnect next time
            self.last_error = describe_error(exc)
            self._drop_sync()
            raise PublishFailed(delivered, exc) from None
        return delivered

    def _tick_sync(self, reconnect: bool) -> None:
        if self.connected:
            try:
                self._conn.process_data_events(time_limit=0)  # heartbeats, broker closes
                return
            except Exception as exc:  # noqa: BLE001
                self.last_error = describe_error(exc)
                self._drop_sync()
                logger.warning("RabbitMQ connection lost: {}", self.last_error)
        if reconnect:
            self._connect_sync()

    # ---------------------------------------------------------------- loop side

    async def _call(self, func: Any, *args: Any) -> Any:
        if self._closed:
            raise RuntimeError("publisher closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def connect(self) -> None:
        """Connect now and declare the topology; raises on failure."""
        await self._call(self._connect_sync)

    async def publish(self, entries: Sequence[OutboxEntry]) -> list[str]:
        """Publish in order; all confirmed ids, or :class:`PublishFailed`."""
        return await self._call(self._publish_sync, list(entries))

    async def tick(self, *, reconnect: bool = False) -> None:
        """Service heartbeats; with ``reconnect``, connect if disconnected (may raise)."""
        await self._call(self._tick_sync, reconnect)

    async def close(self) -> None:
        if self._closed:
            return
        await self._call(self._drop_sync)
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, True)

"""Running the event bus in the app (``app[EVENTS]``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from loguru import logger

from control.events.bus import EventBus
from control.keys import EVENTS, SETTINGS

__all__ = ["EVENTS_FLUSH_TIMEOUT", "events_ctx"]

#: How long shutdown waits for the outbox to drain to RabbitMQ.
EVENTS_FLUSH_TIMEOUT = 5.0


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: outbox + publisher + relay; on exit, flush (bounded) and close.

    A RabbitMQ that refuses the login stops start-up (configuration error); an
    unreachable one only warns: events wait in the outbox.
    """
    bus = EventBus.from_settings(app[SETTINGS])
    await bus.start()
    app[EVENTS] = bus
    try:
        yield
    finally:
        await bus.close(flush_timeout=EVENTS_FLUSH_TIMEOUT)
        logger.info("event bus closed")

"""Running the event bus in the app (``app[EVENTS]``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web
from loguru import logger

from control.config import Settings
from control.events.bus import EventBus
from control.keys import EVENTS

__all__ = ["EVENTS_FLUSH_TIMEOUT", "events_ctx"]

#: How long shutdown waits for the outbox to drain to RabbitMQ.
EVENTS_FLUSH_TIMEOUT = 5.0


def events_ctx(*, settings: web.AppKey[Settings]) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup_ctx: outbox + publisher + relay (``app[EVENTS]``); on exit, flush
    (bounded) and close.

    A RabbitMQ that refuses the login stops start-up (configuration error); an
    unreachable one only warns: events wait in the outbox.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        bus = EventBus.from_settings(app[settings])
        await bus.start()
        app[EVENTS] = bus
        try:
            yield
        finally:
            await bus.close(flush_timeout=EVENTS_FLUSH_TIMEOUT)
            logger.info("event bus closed")

    return ctx

"""Event emitters for mediasoup entities.

mediasoup's ``EnhancedEventEmitter`` adds ``safeEmit``: a listener that raises
must not break the entity emitting the event (a ``close`` cascading through
routers and transports must reach every child). pyee's synchronous emitter
re-raises listener errors, so ``safe_emit`` catches and logs them.
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from pyee import EventEmitter


class EnhancedEventEmitter(EventEmitter):
    def safe_emit(self, event: str, *args: Any) -> bool:
        try:
            return self.emit(event, *args)
        except Exception:
            logger.exception("event listener threw an error [event:{}]", event)
            return bool(self.listeners(event))

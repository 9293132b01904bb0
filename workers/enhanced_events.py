"""Event emitters for mediasoup entities.

mediasoup's ``EnhancedEventEmitter`` adds ``safeEmit``: a listener that raises
must not break the entity emitting the event (a ``close`` cascading through
routers and transports must reach every child). pyee's synchronous emitter
re-raises listener errors, so ``safe_emit`` catches and logs them.

Every entity has two emitters (itself and its ``observer``), registers a few
internal ``@...`` listeners on its children and emits on every state change,
mostly with nobody listening. pyee pays for generality on each of those calls
(a ``new_listener`` emit per registration, an ``OrderedDict`` and a lock per
emit, ~5 us each), so the hot methods are overridden here with the same
behaviour and the same data structure (``_events``: event -> {key: handler}),
so the rest of pyee's API (``listeners``, ``remove_listener``,
``remove_all_listeners``, ``event_names``, decorators) works unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loguru import logger
from pyee import EventEmitter

Listener = Callable[..., Any]
"""Any callable: entities' events carry their own argument shapes."""


class EnhancedEventEmitter(EventEmitter):
    def _add_event_handler(self, event: str, k: Listener, v: Listener) -> None:
        # As pyee: 'new_listener' fires before the listener is added (here only
        # when someone listens to it, which is all that emitting it would do).
        if "new_listener" in self._events:
            self.emit("new_listener", event, k)
        with self._lock:
            handlers: dict[Listener, Listener] | None = self._events.get(event)
            if handlers is None:
                # A plain dict (insertion-ordered, cheaper to build) where pyee puts an
                # OrderedDict: pyee reads it only through the dict API (get, pop, keys, values).
                handlers = self._events[event] = {}  # type: ignore[assignment]
            handlers[k] = v

    def once(self, event: str, f: Listener | None = None) -> Listener:
        """As pyee's ``once``: the listener is removed before its first call."""

        def register(listener: Listener) -> Listener:
            def call_once(*args: Any, **kwargs: Any) -> Any:
                with self._lock:
                    handlers = self._events.get(event)
                    if handlers is None or listener not in handlers:
                        return None
                    self._remove_listener(event, listener)
                return listener(*args, **kwargs)

            self._add_event_handler(event, listener, call_once)
            return listener

        return register if f is None else register(f)

    def emit(self, event: str, *args: Any, **kwargs: Any) -> bool:
        """As pyee's ``emit``, with no work when nobody listens (the common case)."""
        handlers = self._events.get(event)
        if not handlers:
            if event == "error":
                self._emit_handle_potential_error(event, args[0] if args else None)
            return False
        with self._lock:
            funcs = list(handlers.values())
        for f in funcs:
            self._emit_run(f, args, kwargs)
        return True

    def safe_emit(self, event: str, *args: Any) -> bool:
        try:
            return self.emit(event, *args)
        except Exception:  # noqa: BLE001  (the point of safe_emit: a listener cannot break the emitter)
            logger.exception("event listener threw an error [event:{}]", event)
            return bool(self.listeners(event))

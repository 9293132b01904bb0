"""The behaviour of ``EnhancedEventEmitter`` that workers/ relies on.

``workers/enhanced_events.py`` overrides pyee's private ``_add_event_handler``
and its ``once``/``emit`` (for speed) while the rest of pyee's API (``on``,
``listeners``, ``remove_listener``, ``remove_all_listeners``, ``event_names``)
keeps working on the same ``_events`` structure. These tests pin that contract
so that a pyee upgrade which renames or reshapes those internals fails here,
loudly, rather than in a room at run time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger
from pyee import EventEmitter, PyeeError

from workers.enhanced_events import EnhancedEventEmitter


@pytest.fixture
def emitter() -> EnhancedEventEmitter:
    return EnhancedEventEmitter()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """What loguru logs while the test runs (message and exception)."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG", format="{message}\n{exception}")
    try:
        yield lines
    finally:
        logger.remove(sink)


# -- the pyee internals the overrides use -----------------------------------------------


def test_pyee_still_has_the_internals_the_overrides_use() -> None:
    stock = EventEmitter()
    assert isinstance(stock._events, dict)
    assert hasattr(stock._lock, "__enter__")
    for name in ("_add_event_handler", "_emit_run", "_emit_handle_potential_error", "_remove_listener"):
        assert callable(getattr(stock, name)), name


def test_listeners_are_stored_where_pyee_reads_them(emitter: EnhancedEventEmitter) -> None:
    def listener() -> None:
        pass

    emitter.on("x", listener)
    assert emitter._events["x"] == {listener: listener}
    assert emitter.listeners("x") == [listener]
    assert emitter.event_names() == {"x"}


# -- on / emit --------------------------------------------------------------------------


def test_emit_passes_args_and_kwargs_and_says_whether_anyone_listened(emitter: EnhancedEventEmitter) -> None:
    calls: list[tuple[Any, ...]] = []
    emitter.on("x", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert emitter.emit("x", 1, "two", three=3) is True
    assert calls == [((1, "two"), {"three": 3})]
    assert emitter.emit("nobody") is False


def test_listeners_run_in_registration_order_once_or_not(emitter: EnhancedEventEmitter) -> None:
    order: list[str] = []
    emitter.on("x", lambda: order.append("a"))
    emitter.once("x", lambda: order.append("b"))
    emitter.add_listener("x", lambda: order.append("c"))

    @emitter.on("x")
    def decorated() -> None:
        order.append("d")

    emitter.emit("x")
    emitter.emit("x")
    assert order == ["a", "b", "c", "d", "a", "c", "d"]


def test_the_same_function_registered_twice_is_one_listener(emitter: EnhancedEventEmitter) -> None:
    calls: list[int] = []

    def listener() -> None:
        calls.append(1)

    emitter.on("x", listener)
    emitter.on("x", listener)
    emitter.emit("x")
    assert calls == [1]


def test_emit_runs_the_listeners_there_were_when_it_started(emitter: EnhancedEventEmitter) -> None:
    calls: list[str] = []

    def late() -> None:
        calls.append("late")

    def second() -> None:
        calls.append("second")

    def first() -> None:
        calls.append("first")
        if late not in emitter.listeners("x"):
            emitter.remove_listener("x", second)  # removed during the emit: still called this time
            emitter.on("x", late)  # added during the emit: called from the next one

    emitter.on("x", first)
    emitter.on("x", second)
    emitter.emit("x")
    assert calls == ["first", "second"]
    calls.clear()
    emitter.emit("x")
    assert calls == ["first", "late"]


def test_a_listener_error_propagates_out_of_emit(emitter: EnhancedEventEmitter) -> None:
    calls: list[str] = []

    def bad() -> None:
        raise ValueError("boom")

    emitter.on("x", bad)
    emitter.on("x", lambda: calls.append("after"))
    with pytest.raises(ValueError, match="boom"):
        emitter.emit("x")
    assert calls == []  # as pyee: the emit stops at the error


# -- the "error" event ------------------------------------------------------------------


def test_an_unheard_error_event_raises_its_exception(emitter: EnhancedEventEmitter) -> None:
    with pytest.raises(KeyError):
        emitter.emit("error", KeyError("k"))


def test_an_unheard_error_event_without_an_exception_raises_pyee_error(emitter: EnhancedEventEmitter) -> None:
    with pytest.raises(PyeeError):
        emitter.emit("error", "not an exception")
    with pytest.raises(PyeeError):
        emitter.emit("error")


def test_a_heard_error_event_goes_to_its_listener(emitter: EnhancedEventEmitter) -> None:
    errors: list[BaseException] = []
    emitter.on("error", errors.append)
    error = RuntimeError("x")
    assert emitter.emit("error", error) is True
    assert errors == [error]


def test_an_error_event_with_all_listeners_removed_raises_again(emitter: EnhancedEventEmitter) -> None:
    emitter.on("error", lambda error: None)
    emitter.remove_all_listeners("error")  # pyee leaves an empty mapping behind
    with pytest.raises(RuntimeError):
        emitter.emit("error", RuntimeError("x"))


# -- once -------------------------------------------------------------------------------


def test_once_runs_once_and_is_removed_before_it_runs(emitter: EnhancedEventEmitter) -> None:
    seen: list[list[Any]] = []

    def listener(value: int) -> None:
        seen.append([value, emitter.listeners("x")])

    emitter.once("x", listener)
    assert emitter.listeners("x") == [listener]  # listed as itself, not as its wrapper
    assert emitter.emit("x", 1) is True
    assert emitter.emit("x", 2) is False
    assert seen == [[1, []]]
    assert "x" not in emitter.event_names()


def test_once_is_not_reentered_by_an_emit_from_inside_it(emitter: EnhancedEventEmitter) -> None:
    calls: list[int] = []

    def listener(depth: int) -> None:
        calls.append(depth)
        emitter.emit("x", depth + 1)

    emitter.once("x", listener)
    emitter.emit("x", 0)
    assert calls == [0]


def test_once_as_a_decorator_returns_the_function(emitter: EnhancedEventEmitter) -> None:
    calls: list[str] = []

    @emitter.once("x")
    def listener(value: str) -> str:
        calls.append(value)
        return value

    assert listener("direct") == "direct"  # still the plain function
    emitter.emit("x", "emitted")
    emitter.emit("x", "again")
    assert calls == ["direct", "emitted"]


def test_once_removed_by_its_own_function_never_runs(emitter: EnhancedEventEmitter) -> None:
    calls: list[int] = []

    def listener() -> None:
        calls.append(1)

    emitter.once("x", listener)
    emitter.remove_listener("x", listener)
    assert emitter.emit("x") is False
    assert calls == []


def test_once_removed_during_the_emit_that_would_call_it_does_not_run(emitter: EnhancedEventEmitter) -> None:
    calls: list[str] = []

    def later() -> None:
        calls.append("later")

    emitter.on("x", lambda: emitter.remove_listener("x", later))
    emitter.once("x", later)
    emitter.emit("x")
    assert calls == []


def test_once_returns_what_its_listener_returns(emitter: EnhancedEventEmitter) -> None:
    results: list[Any] = []
    emitter.once("x", lambda: "value")
    wrapper = next(iter(emitter._events["x"].values()))
    results.append(wrapper())
    results.append(wrapper())  # already removed: nothing runs
    assert results == ["value", None]


# -- new_listener -----------------------------------------------------------------------


def test_new_listener_fires_before_the_listener_is_added(emitter: EnhancedEventEmitter) -> None:
    seen: list[tuple[str, Any, list[Any]]] = []
    emitter.on("new_listener", lambda event, f: seen.append((event, f, emitter.listeners(event))))

    def on_listener() -> None:
        pass

    def once_listener() -> None:
        pass

    emitter.on("x", on_listener)
    emitter.once("x", once_listener)
    assert seen == [("x", on_listener, []), ("x", once_listener, [on_listener])]


# -- removal ----------------------------------------------------------------------------


def test_remove_listener_and_remove_all_listeners(emitter: EnhancedEventEmitter) -> None:
    calls: list[str] = []

    def a() -> None:
        calls.append("a")

    def b() -> None:
        calls.append("b")

    emitter.on("x", a)
    emitter.on("x", b)
    emitter.on("y", a)
    emitter.remove_listener("x", a)
    emitter.emit("x")
    assert calls == ["b"]

    emitter.remove_all_listeners("x")
    assert emitter.emit("x") is False
    assert emitter.listeners("x") == []
    assert emitter.listeners("y") == [a]

    emitter.remove_all_listeners()
    assert emitter.event_names() == set()
    assert emitter.emit("y") is False


def test_removing_the_last_listener_forgets_the_event(emitter: EnhancedEventEmitter) -> None:
    def listener() -> None:
        pass

    emitter.on("x", listener)
    emitter.remove_listener("x", listener)
    assert "x" not in emitter._events
    emitter.on("x", listener)  # and it can be added again
    assert emitter.listeners("x") == [listener]


def test_removing_an_unknown_listener_raises_key_error(emitter: EnhancedEventEmitter) -> None:
    emitter.on("x", lambda: None)
    with pytest.raises(KeyError):
        emitter.remove_listener("x", lambda: None)


# -- safe_emit --------------------------------------------------------------------------


def test_safe_emit_swallows_and_logs_a_listener_error(emitter: EnhancedEventEmitter, log_lines: list[str]) -> None:
    def bad(value: int) -> None:
        raise ValueError(f"bad {value}")

    emitter.on("close", bad)
    assert emitter.safe_emit("close", 7) is True
    text = "".join(log_lines)
    assert "event listener threw an error [event:close]" in text
    assert "ValueError: bad 7" in text  # with its traceback


def test_safe_emit_stops_at_the_failing_listener_like_mediasoup(emitter: EnhancedEventEmitter) -> None:
    calls: list[str] = []
    emitter.on("x", lambda: calls.append("before"))
    emitter.on("x", lambda: 1 / 0)
    emitter.on("x", lambda: calls.append("after"))
    emitter.safe_emit("x")
    assert calls == ["before"]


def test_safe_emit_answers_false_when_the_failing_listener_was_a_once(emitter: EnhancedEventEmitter) -> None:
    def bad() -> None:
        raise RuntimeError("once")

    emitter.once("x", bad)
    assert emitter.safe_emit("x") is False  # removed before it ran: nobody listens any more
    assert emitter.listeners("x") == []


def test_safe_emit_without_listeners(emitter: EnhancedEventEmitter, log_lines: list[str]) -> None:
    assert emitter.safe_emit("x", 1) is False
    assert log_lines == []


def test_safe_emit_of_an_unheard_error_logs_instead_of_raising(
    emitter: EnhancedEventEmitter, log_lines: list[str]
) -> None:
    assert emitter.safe_emit("error", RuntimeError("unheard")) is False
    assert "RuntimeError: unheard" in "".join(log_lines)


def test_safe_emit_does_not_swallow_base_exceptions(emitter: EnhancedEventEmitter) -> None:
    def cancelled() -> None:
        raise KeyboardInterrupt

    emitter.on("x", cancelled)
    with pytest.raises(KeyboardInterrupt):
        emitter.safe_emit("x")


# -- instances are independent ----------------------------------------------------------


def test_emitters_do_not_share_listeners() -> None:
    a, b = EnhancedEventEmitter(), EnhancedEventEmitter()
    calls: list[str] = []
    a.on("x", lambda: calls.append("a"))
    assert b.emit("x") is False
    assert a.emit("x") is True
    assert calls == ["a"]

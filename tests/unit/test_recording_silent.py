"""A video that stops sending is left out of the layout, and comes back: the session's
packet-counter watch on fake producers (no worker)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from recording import session as session_module
from recording.manifest import Manifest
from recording.session import RecordingSession


class FakeProducer:
    def __init__(self, producer_id: str) -> None:
        self.id = producer_id
        self.closed = False
        self.packets = 0

    async def get_stats(self) -> list[dict[str, Any]]:
        return [{"type": "inbound-rtp", "packetCount": self.packets}]


class FakeRouter:
    def __init__(self, *producers: FakeProducer) -> None:
        self.producers = {p.id: p for p in producers}


def _session(tmp_path: Path) -> RecordingSession:
    manifest = Manifest(tmp_path, "rec", "room", "", "rec.mp4", 0.0)

    async def snapshot() -> Any:
        raise AssertionError("not looked at")

    return RecordingSession(manifest, snapshot)


async def test_a_still_counter_is_silent_then_sends_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "SILENT_AFTER", 0.1)
    session = _session(tmp_path)
    lively, still = FakeProducer("a"), FakeProducer("b")
    router: Any = FakeRouter(lively, still)
    ids = ["a", "b"]

    assert await session._look_at_counters(router, ids) == []  # first look: both counted now
    lively.packets += 5
    await asyncio.sleep(0.15)
    lively.packets += 5
    assert await session._look_at_counters(router, ids) == [("b", True)]
    assert session.silent == {"b"}
    assert await session._look_at_counters(router, ids) == []  # said once

    still.packets += 1
    assert await session._look_at_counters(router, ids) == [("b", False)]
    assert session.silent == set()


async def test_a_producer_no_longer_shown_is_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "SILENT_AFTER", 0.0)
    session = _session(tmp_path)
    router: Any = FakeRouter(FakeProducer("a"))
    await session._look_at_counters(router, ["a"])
    assert await session._look_at_counters(router, ["a"]) == [("a", True)]
    assert await session._look_at_counters(router, []) == []  # paused or closed since
    assert session.silent == set() and session._counters == {}

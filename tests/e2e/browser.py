"""Real Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright, for the meeting page.

``async with chromium(tmp_path) as browser`` starts one headless Chromium with a fresh
profile and fake camera/microphone (a test pattern and a beep, granted without a
prompt); ``await MeetingTab.open(browser, server, room, name)`` opens a tab on the
page's automation contract (``/r/<room>?name=<name>&autojoin=1``) and waits until it
has joined. Nothing is downloaded: Playwright's bundled browsers are never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from control.web import DEFAULT_WEB_DIR
from tests.e2e.harness import Server

CHROMIUM = os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Tabs in one window must not throttle each other's timers and media.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
#: Where artefacts (screenshots) go: TEST_ARTIFACTS_DIR, else tests/artifacts.
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", Path(__file__).resolve().parents[1] / "artifacts"))


def require_browser() -> None:
    """Fail (never skip) with what is missing: Chromium, Playwright or the built page."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: `make setup` installs Debian's chromium (apt-get install chromium)")
    if not (DEFAULT_WEB_DIR / "index.html").is_file():
        pytest.fail(f"the meeting page is not built ({DEFAULT_WEB_DIR}): `make setup` runs npm ci + build in web/")


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path, **context_options: Any) -> AsyncIterator[Any]:
    """A headless Chromium context (fresh user-data-dir under ``tmp_path``)."""
    require_browser()
    # The first import of Playwright is ~100 ms of CPU: in a thread, off the loop that
    # serves the meeting (the slow-callback check in conftest.py found it).
    await asyncio.to_thread(importlib.import_module, "playwright.async_api")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport=context_options.pop("viewport", {"width": 960, "height": 600}),
            **context_options,
        )
        try:
            yield context
        finally:
            await context.close()


@dataclass
class MeetingTab:
    """One browser tab on the meeting page, joined to a room."""

    page: Any
    name: str
    console: list[str] = field(default_factory=list)
    #: The peerId it joined as (the identity of its token).
    peer_id: str = ""

    @classmethod
    async def open(
        cls, browser: Any, server: Server, room: str, name: str, *, timeout: float = 20.0, **query: str
    ) -> MeetingTab:
        page = await browser.new_page()
        tab = cls(page, name)
        page.on("console", lambda message: tab.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: tab.console.append(f"pageerror: {error}"))
        await tab.goto(server, room, **query)
        await tab.wait_joined(timeout)
        return tab

    async def goto(self, server: Server, room: str, **query: str) -> None:
        url = f"{server.base_url}/r/{room}?{urlencode({'name': self.name, 'autojoin': '1', **query})}"
        await self.page.goto(url)

    async def wait_joined(self, timeout: float = 20.0) -> None:
        try:
            await self.page.wait_for_function("() => window.parley?.client?.state === 'joined'", timeout=timeout * 1000)
        except Exception as error:
            raise AssertionError(f"{self.name} did not join: {error}\n" + "\n".join(self.console[-20:])) from None
        self.peer_id = await self.page.evaluate("() => window.parley.client.peerId")

    async def stats(self) -> list[dict[str, Any]]:
        """Per remote consumer, from RTCPeerConnection.getStats (inbound-rtp)."""
        rows: list[dict[str, Any]] = await self.page.evaluate("() => window.parley.client.inboundStats()")
        return rows

    async def timings(self) -> dict[str, Any]:
        timings: dict[str, Any] = await self.page.evaluate("() => window.parley.timings")
        return timings

    async def wait_video_from(self, peer_ids: list[str], frames: int = 10, timeout: float = 30.0) -> None:
        """Until this tab has decoded ``frames`` video frames from each of ``peer_ids``."""
        deadline = time.monotonic() + timeout
        decoded: dict[str, int] = {}
        while time.monotonic() < deadline:
            decoded = {}
            for row in await self.stats():
                if row["kind"] == "video":
                    decoded[row["peerId"]] = decoded.get(row["peerId"], 0) + row["framesDecoded"]
            if all(decoded.get(p, 0) >= frames for p in peer_ids):
                return
            await asyncio.sleep(0.25)
        raise AssertionError(f"{self.name}: frames decoded {decoded}, wanted {frames} from {peer_ids}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.page.close()

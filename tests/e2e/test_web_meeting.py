"""The meeting page in real Chromium (headless, fake camera and microphone).

Tabs join through the page's automation contract (``/r/<room>?name=&autojoin=1``, a
token from ``GET /api/token``) on a server bound to loopback that announces
127.0.0.1. Media is checked from ``getStats`` (frames decoded), not from the DOM.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import ARTIFACTS, MeetingTab, chromium
from tests.e2e.harness import Server, running_server
from tests.e2e.media_peer import MediaPeer
from tests.e2e.recording_helpers import _pixels, codecs_and_duration
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)

SETTINGS: dict[str, Any] = {"mediasoup_announced_address": "127.0.0.1", "mediasoup_num_workers": 1}


async def _join_all(browser: Any, server: Server, room: str, names: list[str]) -> list[MeetingTab]:
    return [await MeetingTab.open(browser, server, room, name) for name in names]


async def _first_frame_delays(tabs: list[MeetingTab]) -> list[float]:
    """For each (receiver, sender) pair: ms from the later of the two joins to the
    receiver's first decoded frame of the sender (the page's own marks)."""
    ids = [tab.peer_id for tab in tabs]
    for tab in tabs:
        others = [i for i in ids if i != tab.peer_id]
        await tab.page.wait_for_function(
            "ids => ids.every(id => window.parley.timings.firstFrameFrom?.[id])", arg=others, timeout=10_000
        )
    timings = [await tab.timings() for tab in tabs]
    delays = []
    for receiver in timings:
        for sender, sender_id in zip(timings, ids, strict=True):
            if sender is receiver:
                continue
            first = receiver["firstFrameFrom"][sender_id]
            delays.append(first - max(receiver["joinedAt"], sender["joinedAt"]))
    return delays


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _producers(server: Server, peer_id: str) -> set[str]:
    return set(server.rooms.rooms["trio"].peers[peer_id].producers)


async def test_two_tabs_decode_each_other(tmp_path: Path) -> None:
    async with running_server(tmp_path, **SETTINGS) as server, chromium(tmp_path) as browser:
        tabs = await _join_all(browser, server, "pair", ["Ada", "Bob"])
        ada, bob = (tab.peer_id for tab in tabs)
        await tabs[0].wait_video_from([bob])
        await tabs[1].wait_video_from([ada])
        delays = await _first_frame_delays(tabs)
        loads = [(await tab.timings())["joined"] for tab in tabs]
        print(
            f"\n2 tabs: page load to joined p50 {statistics.median(loads):.0f} ms; "
            f"join to first remote frame p50 {statistics.median(delays):.0f} ms (pairs: {[round(d) for d in delays]})"
        )


async def test_three_tabs_meeting_screenshot_and_figures(tmp_path: Path) -> None:
    async with running_server(tmp_path, **SETTINGS) as server, chromium(tmp_path) as browser:
        tabs = await _join_all(browser, server, "trio", ["Ada Lovelace", "Bob", "Carol"])
        ids = [tab.peer_id for tab in tabs]
        for tab, own in zip(tabs, ids, strict=True):
            await tab.wait_video_from([i for i in ids if i != own])
        delays = await _first_frame_delays(tabs)
        # Webcams are simulcast; each viewer asked for the layer its tile fits (a 2x2 grid
        # in 960x600: the middle layer).
        for tab in tabs:
            video = [r for r in await tab.stats() if r["kind"] == "video"]
            assert [(r["type"], r["preferredLayer"]) for r in video] == [("simulcast", 1)] * 2, video
        # A tile out of view receives nothing (paused on both sides); back in view, it resumes.
        bob_tile = f'.tile[data-peer-id="{ids[1]}"][data-slot="cam"]'
        await tabs[0].page.eval_on_selector(bob_tile, "el => { el.style.display = 'none'; }")
        consumers = server.rooms.rooms["trio"].peers[ids[0]].consumers.values()
        bob_video = next(c for c in consumers if c.kind == "video" and c.producer_id in _producers(server, ids[1]))
        await eventually(lambda: bob_video.paused, timeout=10, what="bob's video paused")
        await tabs[0].page.eval_on_selector(bob_tile, "el => { el.style.display = ''; }")
        await eventually(lambda: not bob_video.paused, timeout=10, what="bob's video resumed")
        # The fake microphone beeps: a remote tile shows an audio level.
        await tabs[0].page.wait_for_function(
            "() => [...document.querySelectorAll('.tile:not(.local)')].some("
            "t => parseFloat(t.style.getPropertyValue('--level')) > 0)",
            timeout=10_000,
        )
        # Every tile is on every page, with its name.
        for tab in tabs:
            names = await tab.page.locator(".tile .name").all_text_contents()
            assert sorted(n.removesuffix(" (you)") for n in names) == ["Ada Lovelace", "Bob", "Carol"]
        # CPU of the server (this process: the control plane; and its worker) during the call.
        pids = [os.getpid(), *(w.pid for w in server.pool.workers)]
        before, start = _cpu_seconds(pids), time.monotonic()
        await asyncio.sleep(5)
        cpu = (_cpu_seconds(pids) - before) / (time.monotonic() - start) * 100
        # The artefact: the meeting as a person sees it, chat open.
        await tabs[1].page.click("#chat-toggle")
        await tabs[1].page.fill("#chat-input", "Hello from Bob")
        await tabs[1].page.press("#chat-input", "Enter")
        await tabs[0].page.locator("#messages .text", has_text="Hello from Bob").wait_for(state="attached")
        await tabs[0].page.click("#chat-toggle")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "web-meeting-3-people.png"
        await tabs[0].page.screenshot(path=str(shot))
        print(
            f"\n3 tabs: join to first remote frame p50 {statistics.median(delays):.0f} ms "
            f"(6 pairs: {[round(d) for d in delays]}); server CPU (control plane + worker, "
            f"this test process includes the Playwright client) {cpu:.0f}% of one core; screenshot {shot}"
        )


async def test_chat_both_ways_and_history_after_reload(tmp_path: Path) -> None:
    async with running_server(tmp_path, **SETTINGS) as server, chromium(tmp_path) as browser:
        ada, bob = await _join_all(browser, server, "talk", ["Ada", "Bob"])

        async def say(tab: MeetingTab, text: str) -> None:
            if await tab.page.locator("#side").is_hidden():
                await tab.page.click("#chat-toggle")
            await tab.page.fill("#chat-input", text)
            await tab.page.press("#chat-input", "Enter")

        def texts(tab: MeetingTab) -> Any:
            return tab.page.locator("#messages .message:not(.system) .text").all_text_contents()

        await say(ada, "hello Bob")
        await bob.page.locator("#messages .text", has_text="hello Bob").wait_for(state="attached")
        await say(bob, "hi Ada")
        await ada.page.locator("#messages .text", has_text="hi Ada").wait_for(state="attached")
        assert await texts(ada) == ["hello Bob", "hi Ada"]
        # A reload joins again and shows the history, oldest first, with system messages.
        await bob.page.reload()
        await bob.wait_joined()
        await bob.page.locator("#messages .text", has_text="hi Ada").wait_for(state="attached")
        assert await texts(bob) == ["hello Bob", "hi Ada"]
        system = await bob.page.locator("#messages .message.system").all_text_contents()
        assert any("joined" in line for line in system), system
        # Past a page (30) of history: the older ones come with "Load earlier messages".
        await ada.page.evaluate(
            "async () => { for (let i = 0; i < 40; i++) await window.parley.client.sendChat(`n${i}`); }"
        )
        await bob.page.reload()
        await bob.wait_joined()
        await bob.page.locator("#messages .text", has_text="n39").wait_for(state="attached")
        assert "hello Bob" not in await texts(bob)
        await bob.page.click("#chat-toggle")
        await bob.page.click("button.more")
        await bob.page.locator("#messages .text", has_text="hello Bob").wait_for(state="attached")
        assert await texts(bob) == ["hello Bob", "hi Ada", *(f"n{i}" for i in range(40))]


async def test_mute_shows_name_card_and_leave_removes_tile(tmp_path: Path) -> None:
    async with running_server(tmp_path, **SETTINGS) as server, chromium(tmp_path) as browser:
        ada, bob = await _join_all(browser, server, "mute", ["Ada", "Bob"])
        ada_id = ada.peer_id
        await bob.wait_video_from([ada_id])
        tile = bob.page.locator(f'.tile[data-peer-id="{ada_id}"][data-slot="cam"]')
        assert await tile.locator(".namecard").is_hidden()
        # Camera off: Bob sees Ada's name card instead of her video.
        await ada.page.click("#cam")
        await tile.locator(".namecard").wait_for(state="visible", timeout=10_000)
        assert await tile.locator(".namecard").inner_text() == "AD"
        # Microphone off: the muted mark on her tile.
        await ada.page.click("#mic")
        await tile.locator(".muted-icon").wait_for(state="visible", timeout=10_000)
        # Both back on.
        await ada.page.click("#cam")
        await ada.page.click("#mic")
        await tile.locator(".namecard").wait_for(state="hidden", timeout=10_000)
        await tile.locator(".muted-icon").wait_for(state="hidden", timeout=10_000)
        # Leave: Ada's page says so and her tile goes from Bob's page.
        await ada.page.click("#leave")
        await ada.page.locator("#left").wait_for()
        await tile.wait_for(state="detached", timeout=10_000)
        assert await bob.page.locator(".tile").count() == 1


async def test_browser_and_aiortc_peer_see_each_other(tmp_path: Path) -> None:
    async with running_server(tmp_path, **SETTINGS) as server, chromium(tmp_path) as browser:
        bot = MediaPeer(server.ws_url("mixed", "bot"), "bot", display_name="aiortc bot")
        try:
            await bot.join()
            tab = await MeetingTab.open(browser, server, "mixed", "Ada")
            ada_id = tab.peer_id
            await tab.wait_video_from(["bot"])
            await bot.wait_media(ada_id, video_frames=10, timeout=30)
            await tab.page.locator('.tile[data-peer-id="bot"] .name', has_text="aiortc bot").wait_for()
        finally:
            await bot.close()


async def test_screen_share_appears_and_goes(tmp_path: Path) -> None:
    async with running_server(tmp_path, **SETTINGS) as server, chromium(tmp_path) as browser:
        ada, bob = await _join_all(browser, server, "share", ["Ada", "Bob"])
        share = bob.page.locator(f'.tile[data-peer-id="{ada.peer_id}"][data-slot="share"]')
        await ada.page.click("#share")  # the fake UI picks a screen without asking
        await share.wait_for(timeout=10_000)
        assert await share.locator(".name").inner_text() == "Ada (screen)"
        deadline = time.monotonic() + 20
        while True:
            shared = [r for r in await bob.stats() if r["source"] == "share" and r["framesDecoded"] >= 5]
            if shared:
                break
            assert time.monotonic() < deadline, await bob.stats()
            await asyncio.sleep(0.25)
        assert await ada.page.get_attribute("#share", "aria-pressed") == "true"
        await ada.page.click("#share")
        await share.wait_for(state="detached", timeout=10_000)
        assert not [r for r in await bob.stats() if r["source"] == "share"]


async def test_recording_by_a_participant_with_the_grant(tmp_path: Path) -> None:
    keys = {"api_key": "webtest", "api_secret": "s" * 40}
    async with running_server(tmp_path, **SETTINGS, **keys) as server, chromium(tmp_path) as browser:
        ada = await MeetingTab.open(browser, server, "rec", "Ada", token=server.token("rec", "ada", room_record=True))
        bob = await MeetingTab.open(browser, server, "rec", "Bob", token=server.token("rec", "bob"))
        await ada.wait_video_from(["bob"])
        await bob.wait_video_from(["ada"])
        # Only the grant shows the control; everyone sees the indicator.
        assert await ada.page.locator("#record").is_visible()
        assert await bob.page.locator("#record").is_hidden()
        await ada.page.click("#record")
        for tab in (ada, bob):
            await tab.page.locator("#rec-indicator").wait_for(state="visible", timeout=15_000)
        await asyncio.sleep(4)
        await ada.page.click("#record")
        for tab in (ada, bob):
            await tab.page.locator("#rec-indicator").wait_for(state="hidden", timeout=20_000)
        files: list[Path] = []
        deadline = time.monotonic() + 30
        while not files and time.monotonic() < deadline:
            files = list((tmp_path / "data" / "recordings").rglob("*.mp4"))
            await asyncio.sleep(0.2)
        assert len(files) == 1, files
    codecs, duration = await asyncio.to_thread(codecs_and_duration, files[0])
    assert codecs == ["aac", "h264"] and duration > 2.5
    # Two tiles side by side, each a browser's fake camera (a green picture).
    for x in (40, 360):
        r, g, b = (await asyncio.to_thread(_pixels, files[0], duration - 1.0, [(x, 180)]))[0]
        assert g > 100 and r < 90 and b < 90, (x, (r, g, b))


async def test_lobby_by_keyboard_then_reconnect_and_ice_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path, **SETTINGS) as server, chromium(tmp_path) as browser:
        (ada,) = await _join_all(browser, server, "lobby", ["Ada"])
        # The lobby: preview from the default camera, device pickers, name; Enter joins.
        page = await browser.new_page()
        await page.goto(f"{server.base_url}/r/lobby")
        await page.wait_for_function("() => document.querySelector('video.preview')?.readyState >= 2")
        assert await page.locator("#camera option").count() >= 1
        assert await page.locator("#microphone option").count() >= 1
        await page.uncheck("#cam-on")
        await page.fill("#name", "Dora")
        await page.press("#name", "Enter")
        dora = MeetingTab(page, "Dora")
        await dora.wait_joined()
        # She joined with her camera off: Ada sees her name card.
        card = ada.page.locator(f'.tile[data-peer-id="{dora.peer_id}"] .namecard')
        await card.wait_for(state="visible", timeout=10_000)
        assert await card.inner_text() == "DO"
        await dora.wait_video_from([ada.peer_id])
        # The signaling socket drops: "reconnecting", then joined again, media back.
        await page.evaluate("() => window.parley.client.protoo._transport._ws.close()")
        await page.wait_for_function(
            "() => window.parley.timings.states.includes('reconnecting') && window.parley.client.state === 'joined'"
        )
        await dora.wait_video_from([ada.peer_id])
        await ada.page.locator(f'.tile[data-peer-id="{dora.peer_id}"]').wait_for()
        # Her camera, produced again on the new connection, still works.
        await page.click("#cam")
        await ada.wait_video_from([dora.peer_id])
        await card.wait_for(state="hidden")
        # An ICE restart on the receiving transport keeps the media flowing.
        before = sum(r["framesDecoded"] for r in await dora.stats() if r["kind"] == "video")
        await page.evaluate("() => window.parley.client.restartIce(window.parley.client.recvTransport, 'failed')")
        await dora.wait_video_from([ada.peer_id], frames=before + 10)


async def test_errors_are_shown_in_words(tmp_path: Path) -> None:
    keys = {"api_key": "webtest", "api_secret": "s" * 40}
    async with running_server(tmp_path, **SETTINGS, **keys) as server, chromium(tmp_path) as browser:
        page = await browser.new_page()
        base = f"{server.base_url}/r/guarded?name=Eve&autojoin=1"
        expired = server.token("guarded", "eve", now=time.time() - 7200)
        await page.goto(f"{base}&token={expired}")
        assert "expired" in await page.locator("[role=alert]").inner_text()
        await page.goto(base)  # no token, tokens required, nobody signed in
        assert "Sign in to join" in await page.locator("[role=alert]").inner_text()
        await page.goto(f"{base}&token={server.token('elsewhere', 'eve')}")
        await page.locator("#left").wait_for(timeout=15_000)
        assert "refused the connection" in await page.locator("#left h1").inner_text()

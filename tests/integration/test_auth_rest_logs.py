"""No secret reaches a log line of the real app (``create_app`` with API keys and sign-in):
a full keyed run (sign-in with the session cookie, a token from ``/api/token``, a WebSocket
join with it, REST calls with bearer tokens, refusals, a presigned upload and download)
with loguru capturing everything from TRACE (so DEBUG too) and aiohttp's access log
printing the ``Authorization`` and ``Cookie`` headers and the full request line."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp
import pytest
from aiohttp import web

from control.app import create_app
from control.auth import ACCESS, grants_from_names, mint
from control.keys import OBJECTS
from control.logging import setup_logging
from control.storage import presign_chat_upload
from tests.e2e.harness import server_settings
from tests.e2e.protoo_client import ProtooClient
from tests.integration.signaling.conftest import setup_peer
from tests.plugin_workers import require_worker_binary

from .test_auth_oidc import CLIENT_ID, CLIENT_SECRET, add_user, authorize, issuer, provider

__all__ = ["issuer", "provider"]  # fixtures used here

pytestmark = pytest.mark.timeout(120)

KEY, SECRET = "APIlogs", "L" * 44
SESSION_SECRET = "session-secret-" + "s" * 30
ACCESS_LOG = '%a "%r" %s Authorization=%{Authorization}i Cookie=%{Cookie}i'


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    setup_logging("TRACE", "text", sink=lambda message: lines.append(str(message)), colorize=False)
    try:
        yield lines
    finally:
        setup_logging("INFO", "text")


def on_port(url: str, port: int) -> str:
    """A presigned URL of the local store, pointed at the test server's port."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))


async def test_no_secret_in_the_logs_of_a_keyed_run(
    tmp_path: Path, log_lines: list[str], issuer: str, provider: aiohttp.ClientSession
) -> None:
    require_worker_binary()
    settings = server_settings(
        tmp_path,
        api_key=KEY,
        api_secret=SECRET,
        google_client_id=CLIENT_ID,
        google_client_secret=CLIENT_SECRET,
        oidc_issuer=issuer,
        session_secret=SESSION_SECRET,
        log_level="TRACE",
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log_format=ACCESS_LOG, shutdown_timeout=5)
    await runner.setup()
    secrets: list[str] = [SECRET, CLIENT_SECRET, SESSION_SECRET]
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        from loguru import logger

        logger.debug("configuration: {}", json.dumps(settings.redacted(), default=str))
        async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            # Sign in: the session cookie, then a Parley token for room r1.
            await add_user(provider, "alice-sub", "alice@example.org")
            async with http.get("/auth/login", allow_redirects=False) as r:
                location = r.headers["Location"]
            query = parse_qs(urlsplit(location).query)
            secrets += [query["state"][0], query["nonce"][0], query["code_challenge"][0]]
            redirect = await authorize(provider, location, "alice-sub")
            secrets.append(redirect["code"])
            async with http.get("/auth/callback", params=redirect, allow_redirects=False) as r:
                assert r.status == 302
                secrets.append(r.cookies["parley_session"].value)
            async with http.get("/api/token", params={"room": "r1"}) as r:
                user_token = (await r.json())["token"]
            secrets.append(user_token)

            # Join with it over WebSocket, chat, look at the history.
            peer = await ProtooClient.connect(f"ws://127.0.0.1:{port}/?roomId=r1&peerId=alice-sub&token={user_token}")
            await setup_peer(peer, produce=False, consume=False, display_name="Alice")
            await peer.request("chatMessage", {"text": "hello"})
            with pytest.raises(aiohttp.WSServerHandshakeError):
                refused = await ProtooClient.connect(f"ws://127.0.0.1:{port}/?roomId=r1&peerId=x&token={SECRET}")
                await refused.close()

            # REST with bearer tokens: an admin's, a participant's, a forged one.
            admin = mint(app[ACCESS].keys, identity="ops", grants=grants_from_names(["admin", "list"]))
            forged = admin[:-6] + "AAAAAA"
            secrets += [admin, forged]
            for path, token, status in (
                ("/api/rooms", admin, 200),
                ("/api/rooms/r1", admin, 200),
                ("/api/rooms/r1/meetings", admin, 200),
                ("/api/events/outbox", admin, 200),
                ("/api/rooms/r1/messages", user_token, 200),
                ("/api/rooms", user_token, 403),
                ("/api/rooms", forged, 401),
                ("/rooms/r1", user_token, 200),
            ):
                async with http.get(path, headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == status, (path, await r.text())
            async with http.get(f"/api/rooms?token={admin}") as r:  # a token in a REST URL: refused, not logged
                assert r.status == 401

            # A presigned upload and download (the local store's signed URLs).
            objects = app[OBJECTS]
            put = await presign_chat_upload(objects, "r1", "notes.txt", content_type="text/plain", size=5)
            get_url = await objects.presigned_get_url(put.key, filename="notes.txt")
            for url in (put.url, get_url):
                secrets.append(parse_qs(urlsplit(url).query)["signature"][0])
            async with http.put(on_port(put.url, port), data=b"hello", headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 200, await r.text()
            async with http.get(on_port(get_url, port)) as r:
                assert r.status == 200 and await r.read() == b"hello"
            async with http.get(on_port(get_url, port).replace("signature=", "signature=0")) as r:
                assert r.status == 403
            await peer.close()
            async with http.post("/auth/logout") as r:
                assert r.status == 204
    finally:
        await runner.cleanup()

    # The app's own files that hold participants' integrations: the outbox (and chat) database.
    database = settings.sqlite_path
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700

    text = "\n".join(log_lines)
    # the access log ran, with the headers it was told to print
    assert '"GET /api/rooms/r1 HTTP/1.1" 200 Authorization=' in text and "Cookie=" in text
    assert "PUT /api/storage/objects/chat/r1/" in text and "GET /api/storage/objects/chat/r1/" in text
    assert "GET /api/rooms?token=" in text  # the refused URL is logged, its token masked
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:6]}...) reached the logs"
        assert secret[:24] not in text

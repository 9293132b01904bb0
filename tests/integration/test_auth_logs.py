"""No secret reaches a log line: a full run (sign-in, token minting, joins, refusals)
with every log line captured at TRACE, the access log carrying Authorization and Cookie."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from control.logging import setup_logging

from .auth_app import SECRET, make_app, settings_for
from .test_auth_oidc import CLIENT_ID, CLIENT_SECRET, add_user, authorize, id_token_for, issuer, provider

__all__ = ["issuer", "provider"]  # fixtures used here

SESSION_SECRET = "session-secret-" + "z" * 30
ACCESS_LOG = '%a "%r" %s Authorization=%{Authorization}i Cookie=%{Cookie}i'


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    setup_logging("TRACE", "text", sink=lambda message: lines.append(str(message)), colorize=False)
    try:
        yield lines
    finally:
        setup_logging("INFO", "text")


async def test_no_secret_in_any_log_line(log_lines: list[str], issuer: str, provider: aiohttp.ClientSession) -> None:
    settings = settings_for(
        google_client_id=CLIENT_ID,
        google_client_secret=CLIENT_SECRET,
        oidc_issuer=issuer,
        session_secret=SESSION_SECRET,
    )
    server = TestServer(make_app(settings), host="127.0.0.1")
    await server.start_server(access_log_format=ACCESS_LOG)
    client = TestClient(server)
    secrets: list[str] = [SECRET, CLIENT_SECRET, SESSION_SECRET]
    try:
        from loguru import logger

        logger.debug("configuration: {}", json.dumps(settings.redacted(), default=str))
        await add_user(provider, "alice-sub", "alice@example.org")
        r = await client.get("/auth/login", allow_redirects=False)
        location = r.headers["Location"]
        query = parse_qs(urlsplit(location).query)
        secrets += [query["state"][0], query["nonce"][0], query["code_challenge"][0]]
        redirect = await authorize(provider, location, "alice-sub")
        secrets.append(redirect["code"])
        r = await client.get("/auth/callback", params=redirect, allow_redirects=False)
        assert r.status == 302
        cookie = r.cookies["parley_session"].value
        secrets.append(cookie)

        r = await client.get("/api/token", params={"room": "r1"})
        token = (await r.json())["token"]
        secrets.append(token)
        ws = await client.ws_connect("/", params={"roomId": "r1", "peerId": "alice-sub", "token": token})
        await ws.receive_json()
        await ws.close()
        await client.get("/api/whoami", headers={"Authorization": f"Bearer {token}"})
        await client.get("/api/whoami", headers={"Authorization": f"Bearer {token[:-3]}xyz"})  # refused
        refused_ws = {"roomId": "r2", "peerId": "alice-sub", "token": token}
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await client.ws_connect("/", params=refused_ws)

        credential = await id_token_for(provider, CLIENT_ID, "alice-sub")
        secrets.append(credential)
        assert (await client.post("/auth/google", json={"credential": credential})).status == 200
        wrong = await id_token_for(provider, "another-client", "alice-sub")
        secrets.append(wrong)
        assert (await client.post("/auth/google", json={"credential": wrong})).status == 401
        await client.post("/auth/logout")
    finally:
        await client.close()

    text = "\n".join(log_lines)
    assert "GET /api/whoami" in text and "Authorization=" in text and "Cookie=" in text  # the access log ran
    assert "sign-in: alice-sub signed in" in text
    assert "alice@example.org" not in text  # e-mails stay out of logs
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:6]}...) reached the logs"
        assert secret[:24] not in text

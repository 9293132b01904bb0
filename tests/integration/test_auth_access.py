"""The one access check over real HTTP and WebSocket on loopback: tokens, modes, grants."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from livekit.api import AccessToken
from livekit.api import VideoGrants as LkVideoGrants
from pydantic import SecretStr

from control.auth import ACCESS, VideoGrants, mint
from control.auth.keys import KeyRing
from control.config import ConfigError

from .auth_app import KEY, SECRET, settings_for, start

KEYS = KeyRing({KEY: SecretStr(SECRET)})


def token(identity: str = "ann", room: str = "r1", **video: object) -> str:
    grants = VideoGrants.model_validate({"room": room, "roomJoin": True, **video})
    return mint(KEYS, identity=identity, grants=grants, name=identity.title())


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    c = await start(settings_for())
    try:
        yield c
    finally:
        await c.close()


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str]:
    body = await response.json()
    return response.status, body["error"]["code"]


# -- REST -------------------------------------------------------------------------


async def test_public_routes_need_nothing(client: TestClient) -> None:
    r = await client.get("/api/health")
    assert r.status == 200 and (await r.json()) == {"ok": True, "authenticated": False}
    r = await client.get("/")
    assert r.status == 200 and "meeting page" in await r.text()


async def test_rest_refusals(client: TestClient) -> None:
    assert await error_of(await client.get("/api/whoami")) == (401, "token_missing")
    r = await client.get("/api/whoami")
    assert r.headers.get("WWW-Authenticate") == "Bearer"
    assert await error_of(await client.get("/api/whoami", headers=bearer("nope"))) == (401, "token_invalid")
    assert await error_of(await client.get("/api/whoami", headers={"Authorization": "Basic eDp5"})) == (
        401,
        "token_invalid",
    )
    expired = mint(
        KEYS,
        identity="ann",
        grants=VideoGrants(room="r1", room_join=True),
        ttl=timedelta(minutes=1),
        now=time.time() - 3600,
    )
    assert await error_of(await client.get("/api/whoami", headers=bearer(expired))) == (401, "token_expired")
    foreign = jwt.encode({"iss": "other", "sub": "x", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert await error_of(await client.get("/api/whoami", headers=bearer(foreign))) == (401, "unknown_key")
    # ?token= is for WebSocket upgrades only.
    assert await error_of(await client.get("/api/whoami", params={"token": token()})) == (401, "token_invalid")


async def test_rest_with_token(client: TestClient) -> None:
    r = await client.get("/api/whoami", headers=bearer(token()))
    assert r.status == 200 and (await r.json())["identity"] == "ann"


async def test_no_loopback_exception_when_keys_are_configured(client: TestClient) -> None:
    # The test client is on 127.0.0.1: still refused without a token, on every protected route.
    for path in ("/api/rooms", "/api/rooms/r1/meetings", "/api/rooms/r1/messages"):
        assert (await client.get(path)).status == 401
    assert (await client.post("/rooms/r1/broadcasters")).status == 401


async def test_room_admin_routes(client: TestClient) -> None:
    path = "/api/rooms/r1/meetings"
    assert await error_of(await client.get(path, headers=bearer(token()))) == (403, "missing_grant")
    assert (await client.get(path, headers=bearer(token(roomAdmin=True)))).status == 200
    assert await error_of(await client.get(path, headers=bearer(token(room="r2", roomAdmin=True)))) == (
        403,
        "wrong_room",
    )
    roomless = mint(KEYS, identity="ops", grants=VideoGrants(room_admin=True))
    assert (await client.get(path, headers=bearer(roomless))).status == 200


async def test_chat_history_route(client: TestClient) -> None:
    path = "/api/rooms/r1/messages"
    assert (await client.get(path, headers=bearer(token()))).status == 200
    assert (await client.get(path, headers=bearer(token(room="r2")))).status == 403
    assert (await client.get(path, headers=bearer(token(roomJoin=False)))).status == 403


async def test_global_routes(client: TestClient) -> None:
    assert (await client.get("/api/rooms", headers=bearer(token(roomAdmin=True)))).status == 403
    lister = mint(KEYS, identity="ops", grants=VideoGrants(room_list=True))
    assert (await client.get("/api/rooms", headers=bearer(lister))).status == 200


async def test_broadcaster_routes(client: TestClient) -> None:
    path = "/rooms/r1/broadcasters"
    assert (await client.post(path, headers=bearer(token()))).status == 200
    assert (await client.post(path, headers=bearer(token(canPublish=False)))).status == 403
    assert (await client.post(path, headers=bearer(token(room="r2")))).status == 403
    ingress = mint(KEYS, identity="ingest", grants=VideoGrants(ingress_admin=True))
    assert (await client.post(path, headers=bearer(ingress))).status == 200


async def test_livekit_token_works_over_rest(client: TestClient) -> None:
    lk = AccessToken(KEY, SECRET).with_identity("lk").with_grants(LkVideoGrants(room="r1", room_admin=True)).to_jwt()
    assert (await client.get("/api/rooms/r1/meetings", headers=bearer(lk))).status == 200


# -- WebSocket upgrade ----------------------------------------------------------------


async def ws_refusal(client: TestClient, **params: str) -> tuple[int, str]:
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect("/", params=params, protocols=("protoo",))
    return err.value.status, err.value.message


async def test_ws_join_with_query_token(client: TestClient) -> None:
    ws = await client.ws_connect("/", params={"roomId": "r1", "peerId": "ann", "token": token()}, protocols=("protoo",))
    hello = await ws.receive_json()
    assert hello["identity"] == "ann" and hello["room"] == "r1" and hello["method"] == "token"
    await ws.close()


async def test_ws_join_with_bearer_header(client: TestClient) -> None:
    ws = await client.ws_connect("/", params={"roomId": "r1", "peerId": "ann"}, headers=bearer(token()))
    assert (await ws.receive_json())["identity"] == "ann"
    await ws.close()


async def test_ws_refusals(client: TestClient) -> None:
    base = {"roomId": "r1", "peerId": "ann"}
    assert (await ws_refusal(client, **base))[0] == 401
    assert (await ws_refusal(client, **base, token="garbage"))[0] == 401
    expired = mint(KEYS, identity="ann", grants=VideoGrants(room="r1", room_join=True), now=time.time() - 7 * 3600)
    assert (await ws_refusal(client, **base, token=expired))[0] == 401
    assert (await ws_refusal(client, **base, token=token(room="r2")))[0] == 403
    assert (await ws_refusal(client, **base, token=token(identity="bob")))[0] == 403  # takeover attempt
    assert (await ws_refusal(client, **base, token=token(roomJoin=False)))[0] == 403
    bad_sig = token()[:-4] + ("AAAA" if not token().endswith("AAAA") else "BBBB")
    assert (await ws_refusal(client, **base, token=bad_sig))[0] == 401


# -- modes --------------------------------------------------------------------------------


async def test_dev_mode_is_open_on_loopback() -> None:
    client = await start(settings_for(api_key=None, api_secret=None))
    try:
        assert isinstance(client.server, TestServer) and client.server.app[ACCESS].policy.dev
        r = await client.get("/api/rooms")
        assert r.status == 200
        ws = await client.ws_connect("/", params={"roomId": "any", "peerId": "p1"})
        assert (await ws.receive_json())["method"] == "dev"
        await ws.close()
        # /api/token mints for a given identity, and the token verifies here.
        r = await client.get("/api/token", params={"room": "r9", "identity": "me", "name": "Me"})
        minted = (await r.json())["token"]
        assert r.headers["Cache-Control"] == "no-store"
        ws = await client.ws_connect("/", params={"roomId": "r9", "peerId": "me", "token": minted})
        assert (await ws.receive_json())["method"] == "token"
        await ws.close()
        assert (await client.get("/api/whoami", headers=bearer("bad"))).status == 401  # a bad token is still bad
    finally:
        await client.close()


async def test_open_join_with_keys() -> None:
    client = await start(settings_for(auth_open_join=True, host="0.0.0.0"))
    try:
        ws = await client.ws_connect("/", params={"roomId": "r1", "peerId": "demo"})
        assert (await ws.receive_json())["method"] == "open"
        await ws.close()
        assert (await client.post("/rooms/r1/broadcasters")).status == 200  # broadcaster scripts
        assert (await client.get("/api/rooms/r1/meetings")).status == 403  # admin stays closed
        assert (await client.get("/api/rooms/r1/meetings", headers=bearer(token(roomAdmin=True)))).status == 200
        assert (await ws_refusal(client, roomId="r1", peerId="ann", token=token(identity="bob")))[0] == 403
    finally:
        await client.close()


async def test_token_route_needs_sign_in_when_keys_and_no_open_join(client: TestClient) -> None:
    assert await error_of(await client.get("/api/token", params={"room": "r1"})) == (401, "not_signed_in")
    assert await error_of(await client.get("/api/token", params={"room": "bad room"})) == (400, "invalid_request")


def test_public_host_without_keys_refuses() -> None:
    from aiohttp import web

    from control import auth

    with pytest.raises(ConfigError, match=r"HOST=0\.0\.0\.0"):
        auth.setup(web.Application(), settings_for(api_key=None, api_secret=None, host="0.0.0.0"))

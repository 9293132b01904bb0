"""Google/OIDC sign-in end to end against a real OpenID provider on loopback
(``oidc-provider-mock``: discovery, authorization, token endpoint, JWKS), then a
Parley token for the signed-in user used on the WebSocket."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import jwt
import oidc_provider_mock
import pytest
import werkzeug.serving
from aiohttp.test_utils import TestClient
from livekit.api import TokenVerifier

from control.auth.oidc import pkce_challenge

from .auth_app import KEY, SECRET, settings_for, start

CLIENT_ID, CLIENT_SECRET = "parley-web", "client-secret-" + "c" * 30


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    """A real OIDC provider (werkzeug server in a thread) on 127.0.0.1, nonce required."""
    server = werkzeug.serving.make_server("127.0.0.1", 0, oidc_provider_mock.app(require_nonce=True), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
async def provider(issuer: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=issuer) as session:
        yield session


@pytest.fixture
async def client(issuer: str) -> AsyncIterator[TestClient]:
    c = await start(
        settings_for(
            google_client_id=CLIENT_ID,
            google_client_secret=CLIENT_SECRET,
            oidc_issuer=issuer,
            google_allowed_domains="example.org",
            session_secret="s" * 40,
        )
    )
    try:
        yield c
    finally:
        await c.close()


async def add_user(provider: aiohttp.ClientSession, sub: str, email: str, verified: bool = True) -> None:
    claims = {"email": email, "email_verified": verified, "name": sub.title()}
    async with provider.put(f"/users/{sub}", json=claims) as r:
        assert r.status == 204


async def authorize(provider: aiohttp.ClientSession, url: str, sub: str) -> dict[str, str]:
    """The user picks ``sub`` on the provider's page: the redirect's query (code, state)."""
    async with provider.post(url, data={"sub": sub}, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        return {k: v[0] for k, v in parse_qs(urlsplit(r.headers["Location"]).query).items()}


def replace_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


async def start_login(client: TestClient) -> str:
    r = await client.get("/auth/login", params={"next": "/room/r1"}, allow_redirects=False)
    assert r.status == 302
    return r.headers["Location"]


async def sign_in(
    client: TestClient, provider: aiohttp.ClientSession, sub: str, email: str, verified: bool = True
) -> aiohttp.ClientResponse:
    await add_user(provider, sub, email, verified)
    redirect = await authorize(provider, await start_login(client), sub)
    return await client.get("/auth/callback", params=redirect, allow_redirects=False)


async def id_token_for(provider: aiohttp.ClientSession, client_id: str, sub: str, nonce: str = "n") -> str:
    """An ID token issued by the provider to another client (``client_id``)."""
    verifier = "v" * 50
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": "http://127.0.0.1/cb",
            "scope": "openid email profile",
            "state": "s",
            "nonce": nonce,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    code = (await authorize(provider, f"/oauth2/authorize?{query}", sub))["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "http://127.0.0.1/cb",
        "client_id": client_id,
        "client_secret": "x",
        "code_verifier": verifier,
    }
    async with provider.post("/oauth2/token", data=form) as r:
        body: dict[str, Any] = await r.json()
    return str(body["id_token"])


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str]:
    body = await response.json()
    return response.status, body["error"]["code"]


async def test_authorization_code_flow_end_to_end(client: TestClient, provider: aiohttp.ClientSession) -> None:
    url = await start_login(client)
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [f"http://127.0.0.1:{client.port}/auth/callback"]
    assert len(query["state"][0]) >= 32 and len(query["nonce"][0]) >= 32

    await add_user(provider, "alice-sub", "alice@example.org")
    r = await client.get("/auth/callback", params=await authorize(provider, url, "alice-sub"), allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/room/r1"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("parley_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; under TLS (or an https PUBLIC_URL) it is Secure

    me = await (await client.get("/auth/me")).json()
    assert me["signedIn"] and me["user"] == {"identity": "alice-sub", "name": "Alice-Sub", "email": "alice@example.org"}

    r = await client.get("/api/token", params={"room": "r1", "identity": "someone-else"})
    body = await r.json()
    assert body["identity"] == "alice-sub" and body["room"] == "r1"  # identity is the IdP's sub, not the query's
    claims = TokenVerifier(KEY, SECRET).verify(body["token"])
    assert claims.identity == "alice-sub" and claims.metadata == '{"email":"alice@example.org"}'
    assert claims.video is not None and claims.video.room == "r1" and claims.video.room_join
    assert not claims.video.room_admin and not claims.video.room_record

    ws = await client.ws_connect("/", params={"roomId": "r1", "peerId": "alice-sub", "token": body["token"]})
    assert (await ws.receive_json())["identity"] == "alice-sub"
    await ws.close()
    # The session cookie itself authenticates same-origin requests as the user (DEFAULT_GRANTS, any room).
    who = await (await client.get("/api/whoami")).json()
    assert who["identity"] == "alice-sub" and who["method"] == "session"
    r = await client.get("/api/whoami", headers={"Origin": "https://evil.example"})
    assert await error_of(r) == (403, "cross_origin")

    assert (await client.post("/auth/logout")).status == 204
    assert not (await (await client.get("/auth/me")).json())["signedIn"]
    assert await error_of(await client.get("/api/token", params={"room": "r1"})) == (401, "not_signed_in")


async def test_bad_state(client: TestClient, provider: aiohttp.ClientSession) -> None:
    await add_user(provider, "alice-sub", "alice@example.org")
    redirect = await authorize(provider, await start_login(client), "alice-sub")
    r = await client.get("/auth/callback", params={**redirect, "state": "forged"}, allow_redirects=False)
    assert await error_of(r) == (401, "oidc_state")
    # The pending sign-in is used up: replaying the right state now fails too.
    r = await client.get("/auth/callback", params=redirect, allow_redirects=False)
    assert await error_of(r) == (401, "oidc_state")
    assert not (await (await client.get("/auth/me")).json())["signedIn"]


async def test_callback_without_login(client: TestClient) -> None:
    r = await client.get("/auth/callback", params={"code": "x", "state": "y"}, allow_redirects=False)
    assert await error_of(r) == (401, "oidc_state")


async def test_bad_nonce(client: TestClient, provider: aiohttp.ClientSession) -> None:
    await add_user(provider, "alice-sub", "alice@example.org")
    url = replace_query(await start_login(client), nonce="another-nonce")
    r = await client.get("/auth/callback", params=await authorize(provider, url, "alice-sub"), allow_redirects=False)
    assert await error_of(r) == (401, "oidc_nonce")


async def test_code_replay_refused(client: TestClient, provider: aiohttp.ClientSession) -> None:
    await add_user(provider, "alice-sub", "alice@example.org")
    redirect = await authorize(provider, await start_login(client), "alice-sub")
    assert (await client.get("/auth/callback", params=redirect, allow_redirects=False)).status == 302
    await start_login(client)  # a new pending sign-in, but its state is not the old one
    r = await client.get("/auth/callback", params=redirect, allow_redirects=False)
    assert await error_of(r) == (401, "oidc_state")


async def test_disallowed_domain(client: TestClient, provider: aiohttp.ClientSession) -> None:
    r = await sign_in(client, provider, "bob-sub", "bob@elsewhere.org")
    assert await error_of(r) == (403, "oidc_domain_not_allowed")
    assert not (await (await client.get("/auth/me")).json())["signedIn"]


async def test_unverified_email(client: TestClient, provider: aiohttp.ClientSession) -> None:
    r = await sign_in(client, provider, "carol-sub", "carol@example.org", verified=False)
    assert await error_of(r) == (403, "oidc_email_unverified")


async def test_open_redirect_refused(client: TestClient, provider: aiohttp.ClientSession) -> None:
    await add_user(provider, "alice-sub", "alice@example.org")
    r = await client.get("/auth/login", params={"next": "//evil.example/x"}, allow_redirects=False)
    redirect = await authorize(provider, r.headers["Location"], "alice-sub")
    r = await client.get("/auth/callback", params=redirect, allow_redirects=False)
    assert r.headers["Location"] == "/"


async def test_google_identity_services_post(client: TestClient, provider: aiohttp.ClientSession) -> None:
    await add_user(provider, "dave-sub", "dave@example.org")
    credential = await id_token_for(provider, CLIENT_ID, "dave-sub")
    r = await client.post("/auth/google", json={"credential": credential})
    assert r.status == 200 and (await r.json())["identity"] == "dave-sub"
    assert (await (await client.get("/auth/me")).json())["signedIn"]


async def test_google_form_post_needs_matching_csrf(client: TestClient, provider: aiohttp.ClientSession) -> None:
    await add_user(provider, "dave-sub", "dave@example.org")
    credential = await id_token_for(provider, CLIENT_ID, "dave-sub")
    r = await client.post("/auth/google", data={"credential": credential})
    assert await error_of(r) == (401, "oidc_csrf")
    r = await client.post(
        "/auth/google", data={"credential": credential, "g_csrf_token": "abc"}, headers={"Cookie": "g_csrf_token=xyz"}
    )
    assert await error_of(r) == (401, "oidc_csrf")
    r = await client.post(
        "/auth/google", data={"credential": credential, "g_csrf_token": "abc"}, headers={"Cookie": "g_csrf_token=abc"}
    )
    assert r.status == 200


async def test_google_post_wrong_audience(client: TestClient, provider: aiohttp.ClientSession) -> None:
    await add_user(provider, "dave-sub", "dave@example.org")
    credential = await id_token_for(provider, "some-other-app", "dave-sub")
    assert await error_of(await client.post("/auth/google", json={"credential": credential})) == (401, "oidc_audience")


async def test_google_post_forged_tokens(client: TestClient, provider: aiohttp.ClientSession, issuer: str) -> None:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": CLIENT_ID,
        "sub": "eve",
        "email": "eve@example.org",
        "email_verified": True,
        "iat": now,
        "exp": now + 600,
    }
    for forged in (jwt.encode(claims, "", algorithm="none"), jwt.encode(claims, CLIENT_SECRET, algorithm="HS256")):
        assert await error_of(await client.post("/auth/google", json={"credential": forged})) == (401, "oidc_invalid")
    # A real token with its payload altered: the JWKS signature no longer verifies.
    await add_user(provider, "dave-sub", "dave@example.org")
    header, _payload, signature = (await id_token_for(provider, CLIENT_ID, "dave-sub")).split(".")
    other = jwt.utils.base64url_encode(jwt.utils.force_bytes('{"sub":"eve"}')).decode()
    r = await client.post("/auth/google", json={"credential": f"{header}.{other}.{signature}"})
    assert await error_of(r) == (401, "oidc_invalid")
    assert await error_of(await client.post("/auth/google", json={})) == (400, "invalid_request")


async def test_sign_in_disabled_without_client_id() -> None:
    c = await start(settings_for())
    try:
        assert await error_of(await c.get("/auth/login", allow_redirects=False)) == (404, "signin_disabled")
        assert (await (await c.get("/auth/me")).json())["signInEnabled"] is False
    finally:
        await c.close()


async def test_cookie_secure_behind_https_public_url(issuer: str) -> None:
    c = await start(
        settings_for(
            google_client_id=CLIENT_ID,
            google_client_secret=CLIENT_SECRET,
            oidc_issuer=issuer,
            public_url="https://meet.example.org",
        )
    )
    try:
        r = await c.get("/auth/login", allow_redirects=False)
        assert parse_qs(urlsplit(r.headers["Location"]).query)["redirect_uri"] == [
            "https://meet.example.org/auth/callback"
        ]
        cookie = r.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        # A Secure cookie never travels over plain HTTP: this client cannot finish the sign-in.
        r = await c.get("/auth/callback", params={"code": "c", "state": "s"}, allow_redirects=False)
        assert await error_of(r) == (401, "oidc_state")
    finally:
        await c.close()


async def test_tampered_or_foreign_session_cookie_is_no_sign_in(
    client: TestClient, provider: aiohttp.ClientSession, issuer: str
) -> None:
    r = await sign_in(client, provider, "alice-sub", "alice@example.org")
    cookie = r.cookies["parley_session"].value.strip('"')
    tampered = cookie[:-6] + ("AAAAAA" if not cookie.endswith("AAAAAA") else "BBBBBB")
    client.session.cookie_jar.clear()
    r = await client.get("/auth/me", headers={"Cookie": f"parley_session={tampered}"})
    assert not (await r.json())["signedIn"]
    assert (await client.get("/api/whoami", headers={"Cookie": f"parley_session={tampered}"})).status == 401
    # A cookie of another deployment (another SESSION_SECRET) does not open this one.
    other = await start(
        settings_for(
            google_client_id=CLIENT_ID,
            google_client_secret=CLIENT_SECRET,
            oidc_issuer=issuer,
            session_secret="another-" + "q" * 40,
        )
    )
    try:
        r = await other.get("/auth/me", headers={"Cookie": f"parley_session={cookie}"})
        assert not (await r.json())["signedIn"]
    finally:
        await other.close()

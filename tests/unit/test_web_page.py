"""control.web (the meeting page's routes) and control.netaddr (the announced address):
no worker, no browser. The page is a small built tree in tmp_path."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from control import web as web_page
from control.cli import tls_context
from control.config import Settings
from control.http import error_middleware
from control.keys import SETTINGS
from control.netaddr import announced_address, is_loopback, with_announced_address


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def _built(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir(parents=True)
    (tmp_path / "index.html").write_text("<!doctype html><title>Parley</title>")
    (tmp_path / "assets" / "main-ABC123.js").write_text("console.log('parley')")
    return tmp_path


async def _signaling(request: web.Request) -> web.StreamResponse:
    return web.Response(status=418, text="signaling")


async def _client(web_dir: Path) -> TestClient[web.Request, web.Application]:
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = _settings(web_dir=web_dir)
    web_page.setup(app, settings=SETTINGS, signaling=_signaling)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_page_at_root_and_room_paths_revalidated(tmp_path: Path) -> None:
    client = await _client(_built(tmp_path))
    try:
        for path in ("/", "/r/standup", "/r/not%20valid"):
            resp = await client.get(path)
            assert resp.status == 200, path
            assert resp.content_type == "text/html"
            assert resp.headers["Cache-Control"] == "no-cache"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
            assert "<title>Parley</title>" in await resp.text()
    finally:
        await client.close()


async def test_root_hands_upgrades_and_demo_queries_to_signaling(tmp_path: Path) -> None:
    client = await _client(_built(tmp_path))
    try:
        for path, headers in (
            ("/?roomId=r&peerId=p", {}),
            ("/?peerId=p", {}),
            ("/", {"Upgrade": "websocket", "Connection": "Upgrade"}),
        ):
            resp = await client.get(path, headers=headers)
            assert (resp.status, await resp.text()) == (418, "signaling"), path
    finally:
        await client.close()


async def test_assets_cached_for_a_year_and_unknown_ones_404(tmp_path: Path) -> None:
    client = await _client(_built(tmp_path))
    try:
        resp = await client.get("/assets/main-ABC123.js")
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert await resp.text() == "console.log('parley')"
        for name in ("missing-X.js", "..%2Findex.html", "main-ABC123.txt"):
            resp = await client.get(f"/assets/{name}")
            assert resp.status == 404, name
            assert (await resp.json())["error"]["code"] == "not_found"
    finally:
        await client.close()


async def test_unbuilt_page_is_503_saying_what_to_run(tmp_path: Path) -> None:
    client = await _client(tmp_path / "nothing")
    try:
        resp = await client.get("/")
        assert resp.status == 503
        assert "make setup" in (await resp.json())["error"]["message"]
    finally:
        await client.close()


def test_announced_address_derivation() -> None:
    def primary() -> str | None:
        return "192.0.2.10"

    def none() -> str | None:
        return None

    explicit = _settings(mediasoup_announced_address="media.example.org", host="0.0.0.0", auth_open_join=True)
    assert announced_address(explicit, primary)[0] == "media.example.org"
    assert announced_address(_settings(mediasoup_listen_ip="10.1.2.3"), primary)[0] is None
    assert announced_address(_settings(host="127.0.0.1"), primary)[0] == "127.0.0.1"
    assert announced_address(_settings(host="localhost", mediasoup_listen_ip="::"), primary)[0] == "::1"
    remote = _settings(host="0.0.0.0", auth_open_join=True)
    assert announced_address(remote, primary) == (
        "192.0.2.10",
        "the host's primary address (HOST=0.0.0.0); set MEDIASOUP_ANNOUNCED_ADDRESS to override",
    )
    assert announced_address(remote, none)[0] == "127.0.0.1"
    assert with_announced_address(remote, primary).mediasoup_announced_address == "192.0.2.10"
    assert remote.mediasoup_announced_address is None  # a copy: the app's settings stay as configured


def test_is_loopback() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.1", "example.org"))


def test_tls_files_must_come_together_and_exist(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ValidationError, match="TLS_CERT_FILE and TLS_KEY_FILE must be set together"):
        Settings(_env_file=None, tls_cert_file=cert)
    with pytest.raises(ValidationError, match="TLS_KEY_FILE: no such file"):
        Settings(_env_file=None, tls_cert_file=cert, tls_key_file=tmp_path / "missing.pem")
    assert tls_context(_settings()) is None


async def test_tls_serves_the_page_over_https(tmp_path: Path) -> None:
    """TLS_CERT_FILE/TLS_KEY_FILE: the context parley run listens with (a self-signed pair)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    settings = _settings(tls_cert_file=cert, tls_key_file=key, web_dir=_built(tmp_path / "web"))
    context = tls_context(settings)
    assert context is not None
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    web_page.setup(app, settings=SETTINGS, signaling=_signaling)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client_context = ssl.create_default_context(cafile=str(cert))
        client_context.check_hostname = False
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://127.0.0.1:{port}/r/x", ssl=client_context) as resp,
        ):
            assert resp.status == 200
            assert "<title>Parley</title>" in await resp.text()
    finally:
        await runner.cleanup()

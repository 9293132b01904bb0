"""A small aiohttp app with ``control.auth`` installed the way app.py will install it,
and stand-in routes that call the helpers the real handlers will call."""

from __future__ import annotations

from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from control import auth
from control.auth import PRINCIPAL, Principal
from control.config import Settings, load_settings
from control.http import error_middleware

KEY, SECRET = "APItest", "t" * 48


def settings_for(**values: Any) -> Settings:
    defaults: dict[str, Any] = {"api_key": KEY, "api_secret": SECRET, "host": "127.0.0.1"}
    return load_settings(_env_file=None, **{**defaults, **values})


def _describe(principal: Principal) -> dict[str, Any]:
    return {
        "identity": principal.identity,
        "room": principal.room,
        "method": principal.method.value,
        "name": principal.name,
        "metadata": principal.metadata,
    }


async def whoami(request: web.Request) -> web.Response:
    return web.json_response(_describe(request[PRINCIPAL]))


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "authenticated": PRINCIPAL in request})


async def room_meetings(request: web.Request) -> web.Response:
    auth.require_room_admin(request[PRINCIPAL], request.match_info["roomId"])
    return web.json_response({"meetings": []})


async def room_messages(request: web.Request) -> web.Response:
    auth.require_chat_read(request[PRINCIPAL], request.match_info["roomId"])
    return web.json_response({"messages": []})


async def rooms(request: web.Request) -> web.Response:
    auth.require_room_list(request[PRINCIPAL])
    return web.json_response({"rooms": []})


async def broadcasters(request: web.Request) -> web.Response:
    auth.require_ingress(request[PRINCIPAL], request.match_info["roomId"])
    return web.json_response({"ok": True})


async def signaling(request: web.Request) -> web.StreamResponse:
    room_id, peer_id = request.query.get("roomId", ""), request.query.get("peerId", "")
    auth.require_ws_join(request[PRINCIPAL], room_id, peer_id)  # refused before the upgrade
    ws = web.WebSocketResponse(protocols=("protoo",))
    await ws.prepare(request)
    await ws.send_json(_describe(request[PRINCIPAL]))
    async for message in ws:
        if message.type is WSMsgType.CLOSE:
            break
    return ws


async def index(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await signaling(request)
    return web.Response(text="<html>meeting page</html>", content_type="text/html")


def make_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    auth.setup(app, settings)
    app.router.add_get("/", index)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/whoami", whoami)
    app.router.add_get("/api/rooms", rooms)
    app.router.add_get("/api/rooms/{roomId}/meetings", room_meetings)
    app.router.add_get("/api/rooms/{roomId}/messages", room_messages)
    app.router.add_post("/rooms/{roomId}/broadcasters", broadcasters)
    return app


async def start(settings: Settings) -> TestClient:
    client = TestClient(TestServer(make_app(settings), host="127.0.0.1"))
    await client.start_server()
    return client

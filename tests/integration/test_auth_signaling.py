"""Access control on the signaling WebSocket (issue 14), against the real server with API keys.

Refusals before the upgrade (and before any room exists), the grants of every
request, ``canSubscribe`` for consumers, hidden participants, session takeovers,
and tokens that expire during a call. Tokens are minted with ``control.auth.mint``
(``server.token``) and with LiveKit's own ``livekit-api``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import jwt
import pytest
from livekit.api import AccessToken
from livekit.api import VideoGrants as LkVideoGrants
from pydantic import SecretStr

from control.auth import ACCESS, AuthMethod, TrackSource, VideoGrants, mint, open_principal
from control.auth.keys import KeyRing
from control.errors import Forbidden
from control.recording.service import RECORDINGS
from control.signaling.protoo import ProtooConnection
from tests.e2e.harness import Server, running_server
from tests.e2e.protoo_client import ProtooClient, ProtooClientError
from tests.integration.signaling.conftest import OPUS, VP8, setup_peer
from tests.polling import eventually

pytestmark = pytest.mark.timeout(90)

KEY, SECRET = "APIsignaling", "s" * 48
ROOM = "standup"

Connect = Callable[..., Awaitable[ProtooClient]]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path, api_key=KEY, api_secret=SECRET, mediasoup_num_workers=1) as srv:
        yield srv


async def _close_all(clients: list[ProtooClient]) -> None:
    for client in clients:
        if not client.closed.is_set():
            await client.close()
        elif client._own_session:
            await client.session.close()


@pytest.fixture
async def connect(server: Server) -> AsyncIterator[Connect]:
    """``await connect(peer, token=...)``: a protoo client of ``ROOM``, closed after the test."""
    clients: list[ProtooClient] = []

    async def _connect(peer_id: str, *, token: str | None = None, room: str = ROOM, **kwargs: Any) -> ProtooClient:
        query = {"token": token} if token is not None else {}
        client = await ProtooClient.connect(server.ws_url(room, peer_id, **query), **kwargs)
        clients.append(client)
        return client

    yield _connect
    await _close_all(clients)


async def refusal(
    server: Server, peer_id: str, token: str | None = None, *, room: str = ROOM, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """The answer to a WebSocket upgrade that is refused: its status and JSON body."""
    query = {"token": token} if token is not None else {}
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Protocol": "protoo",
        **(headers or {}),
    }
    url = server.ws_url(room, peer_id, **query).replace("ws://", "http://")
    async with aiohttp.ClientSession() as http, http.get(url, headers=upgrade) as response:
        assert response.status != 101, "the upgrade was accepted"
        assert response.content_type == "application/json"
        return response.status, await response.json()


def lk_token(identity: str, room: str = ROOM, *, named: bool = True, **grants: Any) -> str:
    """A token minted by LiveKit's own Python SDK (named ``identity.title()`` unless not ``named``)."""
    video = LkVideoGrants(room=room, room_join=True, **grants)
    token = AccessToken(KEY, SECRET).with_identity(identity).with_grants(video)
    return (token.with_name(identity.title()) if named else token).to_jwt()


def unsigned_token(identity: str) -> str:
    """``alg: none``: the claims of a good token, no signature."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"iss": KEY, "sub": identity, "nbf": int(time.time()), "exp": int(time.time()) + 3600}
    claims["video"] = {"room": ROOM, "roomJoin": True}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def without_sub() -> str:
    """A well-signed token that names no participant."""
    claims = {"iss": KEY, "nbf": int(time.time()), "exp": int(time.time()) + 3600}
    return jwt.encode({**claims, "video": {"room": ROOM, "roomJoin": True}}, SECRET, algorithm="HS256")


def peer_of(server: Server, peer_id: str, room: str = ROOM) -> Any:
    return server.rooms.rooms[room].peers[peer_id]


async def produce(client: ProtooClient, transport: dict[str, Any], kind: str = "audio", **app_data: Any) -> Any:
    rtp = OPUS if kind == "audio" else VP8
    return await client.request(
        "produce", {"transportId": transport["id"], "kind": kind, "rtpParameters": rtp, "appData": app_data}
    )


async def refused(client: ProtooClient, method: str, data: dict[str, Any] | None = None) -> str:
    """The reason of the 403 that ``method`` gets."""
    with pytest.raises(ProtooClientError) as err:
        await client.request(method, data or {})
    assert err.value.code == 403, (method, err.value.code, err.value.reason)
    return err.value.reason


# -- the upgrade --------------------------------------------------------------------------


async def test_refused_before_the_upgrade_and_no_room_is_created(server: Server) -> None:
    now = time.time()
    other_keys = KeyRing({"APIother": SecretStr("o" * 48)})
    good = server.token(ROOM, "ann")
    cases: list[tuple[str, str | None, int, str]] = [
        ("missing", None, 401, "token_missing"),
        ("garbage", "not-a-jwt", 401, "token_invalid"),
        ("bad signature", good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB"), 401, "token_invalid"),
        ("alg none", unsigned_token("ann"), 401, "token_invalid"),
        ("expired", server.token(ROOM, "ann", now=now - 7200), 401, "token_expired"),
        ("not yet valid", server.token(ROOM, "ann", now=now + 3600), 401, "token_not_yet_valid"),
        (
            "unknown key",
            mint(other_keys, identity="ann", grants=VideoGrants(room=ROOM, room_join=True)),
            401,
            "unknown_key",
        ),
        ("wrong room", server.token("elsewhere", "ann"), 403, "wrong_room"),
        ("wrong identity", server.token(ROOM, "bob"), 403, "wrong_identity"),
        ("roomJoin false", server.token(ROOM, "ann", room_join=False), 403, "missing_grant"),
        ("no sub", without_sub(), 403, "wrong_identity"),
    ]
    for what, token, status, code in cases:
        got_status, body = await refusal(server, "ann", token)
        assert (got_status, body["error"]["code"]) == (status, code), what
        assert set(body["error"]) <= {"code", "message", "field"} and body["error"]["message"], what
        assert SECRET not in json.dumps(body) and (token is None or token not in json.dumps(body)), what
        assert server.rooms.rooms == {}, what  # nothing was created for it
    # Over a real WebSocket client: the handshake fails the same way.
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await ProtooClient.connect(server.ws_url(ROOM, "ann"))
    assert err.value.status == 401
    assert server.rooms.rooms == {}


async def test_bearer_header_and_livekit_tokens_are_accepted(server: Server, connect: Connect) -> None:
    headers = {"Authorization": f"Bearer {server.token(ROOM, 'ann')}"}
    ann = await connect("ann", headers=headers)
    bob = await connect("bob", token=lk_token("bob"))
    await setup_peer(ann, display_name="Ann")
    await setup_peer(bob, display_name="Bob")
    assert peer_of(server, "ann").principal.identity == "ann"
    assert peer_of(server, "bob").principal.method is AuthMethod.TOKEN


# -- publishing and consuming with tokens ---------------------------------------------------


async def test_two_peers_with_tokens_publish_and_consume(server: Server, connect: Connect) -> None:
    alice = await connect("alice", token=server.token(ROOM, "alice"))
    bob = await connect("bob", token=lk_token("bob"))
    a = await setup_peer(alice, display_name="Alice")
    b = await setup_peer(bob, display_name="Bob")
    assert [p["id"] for p in b["join"]["peers"]] == ["alice"]
    await alice.wait_for("newPeer", lambda d: d["id"] == "bob")
    audio = await produce(alice, a["send"])
    video = await produce(bob, b["send"], "video", source="webcam")
    got = await bob.wait_for("newConsumer", lambda d: d["producerId"] == audio["id"], kind="request")
    assert got["peerId"] == "alice"
    got = await alice.wait_for("newConsumer", lambda d: d["producerId"] == video["id"], kind="request")
    assert got["peerId"] == "bob"


async def test_each_missing_grant_is_refused_and_nothing_is_created(server: Server, connect: Connect) -> None:
    nobody = server.token(ROOM, "nobody", can_publish=False, can_publish_data=False, can_subscribe=False)
    client = await connect("nobody", token=nobody)
    setup = await setup_peer(client, sctp=True)
    peer = peer_of(server, "nobody")

    assert "canPublish" in await refused(client, "produce", {"transportId": setup["send"]["id"], "kind": "audio"})
    assert "canPublish" in await refused(
        client, "produce", {"transportId": setup["send"]["id"], "kind": "audio", "rtpParameters": OPUS}
    )
    data = {"transportId": setup["send"]["id"], "sctpStreamParameters": {"streamId": 0, "ordered": True}}
    assert "canPublishData" in await refused(client, "produceData", {**data, "label": "chat"})
    assert "canPublishData" in await refused(client, "chatMessage", {"text": "hello"})
    assert "roomRecord" in await refused(client, "startRecording")
    assert "roomRecord" in await refused(client, "stopRecording")
    assert "canSubscribe" in await refused(client, "resumeConsumer", {"consumerId": "c"})
    assert "canPublish" in await refused(client, "pauseProducer", {"producerId": "p"})
    assert peer.producers == {} and peer.data_producers == {}
    history = (await client.request("getChatHistory", {}))["messages"]
    assert all(m["type"] == "system" for m in history), history  # nothing of this peer's was stored
    assert server.app[RECORDINGS].active == {}
    # The session goes on: what the token grants still works.
    assert "codecs" in await client.request("getRouterRtpCapabilities")


async def test_publish_sources_are_checked(server: Server, connect: Connect) -> None:
    token = server.token(ROOM, "mic", can_publish_sources=(TrackSource.MICROPHONE,))
    client = await connect("mic", token=token)
    setup = await setup_peer(client)
    assert (await produce(client, setup["send"], "audio", source="mic"))["id"]
    assert "camera" in await refused(
        client, "produce", {"transportId": setup["send"]["id"], "kind": "video", "rtpParameters": VP8}
    )
    assert "screen_share" in await refused(
        client,
        "produce",
        {"transportId": setup["send"]["id"], "kind": "video", "rtpParameters": VP8, "appData": {"source": "share"}},
    )
    assert len(peer_of(server, "mic").producers) == 1
    # LiveKit's own token with the same restriction.
    cam = await connect("cam", token=lk_token("cam", can_publish_sources=["camera"]))
    cam_setup = await setup_peer(cam)
    assert (await produce(cam, cam_setup["send"], "video", source="webcam"))["id"]
    assert "microphone" in await refused(
        cam, "produce", {"transportId": cam_setup["send"]["id"], "kind": "audio", "rtpParameters": OPUS}
    )


async def test_record_grant_allows_recording_requests(server: Server, connect: Connect) -> None:
    host = await connect("host", token=server.token(ROOM, "host", room_record=True))
    await setup_peer(host)
    with pytest.raises(ProtooClientError) as err:
        await host.request("stopRecording", {})
    assert err.value.code != 403 and "not_recording" in err.value.reason  # past the access check


async def test_a_peer_without_can_subscribe_gets_no_consumer(server: Server, connect: Connect) -> None:
    alice = await connect("alice", token=server.token(ROOM, "alice"))
    viewer = await connect("viewer", token=lk_token("viewer", can_subscribe=False, can_publish=False))
    watcher = await connect("watcher", token=server.token(ROOM, "watcher"))
    a = await setup_peer(alice, sctp=True)
    await setup_peer(viewer, sctp=True)  # it may still create its receiving transport
    await setup_peer(watcher, sctp=True)
    audio = await produce(alice, a["send"])
    data = await alice.request(
        "produceData",
        {"transportId": a["send"]["id"], "sctpStreamParameters": {"streamId": 0, "ordered": True}, "label": "chat"},
    )
    await watcher.wait_for("newConsumer", lambda d: d["producerId"] == audio["id"], kind="request")
    await watcher.wait_for("newDataConsumer", lambda d: d["dataProducerId"] == data["id"], kind="request")
    await asyncio.sleep(0.3)
    assert viewer.count("newConsumer", kind="request") == 0
    assert viewer.count("newDataConsumer", kind="request") == 0
    assert peer_of(server, "viewer").consumers == {} and peer_of(server, "viewer").data_consumers == {}
    # It still sees who is there.
    assert {d["id"] for m, d in viewer.notifications if m == "newPeer"} == {"watcher"}


async def test_hidden_participants_are_not_announced(server: Server, connect: Connect) -> None:
    alice = await connect("alice", token=server.token(ROOM, "alice"))
    a = await setup_peer(alice, display_name="Alice")
    audio = await produce(alice, a["send"])

    bot = await connect("recorder", token=lk_token("recorder", named=False, hidden=True))  # may rename itself
    joined = await setup_peer(bot, display_name="Recorder")
    assert [p["id"] for p in joined["join"]["peers"]] == ["alice"]  # it sees the others
    await bot.wait_for("newConsumer", lambda d: d["producerId"] == audio["id"], kind="request")  # and consumes
    assert "hidden" in await refused(bot, "produce", {"transportId": joined["send"]["id"], "kind": "audio"})
    assert "hidden" in await refused(bot, "chatMessage", {"text": "I am here"})
    await bot.request("changeDisplayName", {"displayName": "Still hidden"})

    bob = await connect("bob", token=server.token(ROOM, "bob"))
    b = await setup_peer(bob, display_name="Bob")
    assert [p["id"] for p in b["join"]["peers"]] == ["alice"]  # not the hidden one
    await alice.wait_for("newPeer", lambda d: d["id"] == "bob")
    await bot.close()
    await eventually(lambda: "recorder" not in server.rooms.rooms[ROOM].peers)
    await asyncio.sleep(0.2)
    for other in (alice, bob):
        assert all(d.get("id") != "recorder" for m, d in other.notifications if m == "newPeer")
        assert all(d.get("peerId") != "recorder" for m, d in other.notifications if m == "peerClosed")
        assert all(d.get("peerId") != "recorder" for m, d in other.notifications if m == "peerDisplayNameChanged")
    history = (await alice.request("getChatHistory", {}))["messages"]
    assert not any("Recorder" in (m.get("text") or "") for m in history), history  # no "joined"/"left"


async def test_the_token_name_and_email_win_over_join(server: Server, connect: Connect) -> None:
    alice = await connect("alice", token=lk_token("alice", named=False))
    await setup_peer(alice, display_name="Alice")
    metadata = json.dumps({"email": "carol@example.org"})
    grants = VideoGrants(room=ROOM, room_join=True)
    token = mint(server.app[ACCESS].keys, identity="carol", name="Carol\x1b[31m Doe", metadata=metadata, grants=grants)
    carol = await connect("carol", token=token)
    joined = await setup_peer(carol, display_name="The Boss", email="boss@example.org")
    # The token's name (its control characters dropped, the one display name rule) is
    # what the others see; the client's displayName and e-mail are not used.
    announced = await alice.wait_for("newPeer", lambda d: d["id"] == "carol")
    assert announced["displayName"] == "Carol[31m Doe"
    assert peer_of(server, "carol").metadata.email == "carol@example.org"
    assert [p["displayName"] for p in joined["join"]["peers"]] == ["Alice"]
    reason = await refused(carol, "changeDisplayName", {"displayName": "The Boss"})
    assert "token" in reason
    assert peer_of(server, "carol").display_name == "Carol[31m Doe"
    # LiveKit's own token with a name; and without one the client names itself.
    dave = await connect("dave", token=lk_token("dave"))
    await setup_peer(dave, display_name="Someone Else")
    assert (await alice.wait_for("newPeer", lambda d: d["id"] == "dave"))["displayName"] == "Dave"
    assert await alice.request("changeDisplayName", {"displayName": "Alice B."}) == {}
    renamed = await carol.wait_for("peerDisplayNameChanged", lambda d: d["peerId"] == "alice")
    assert renamed["displayName"] == "Alice B."
    # LiveKit's canUpdateOwnMetadata lets a token-named participant rename itself.
    erin = await connect("erin", token=lk_token("erin", can_update_own_metadata=True))
    await setup_peer(erin, display_name="Ignored")
    assert (await alice.wait_for("newPeer", lambda d: d["id"] == "erin"))["displayName"] == "Erin"
    assert await erin.request("changeDisplayName", {"displayName": "Erin E."}) == {}
    renamed = await alice.wait_for("peerDisplayNameChanged", lambda d: d["peerId"] == "erin")
    assert renamed["displayName"] == "Erin E." and peer_of(server, "erin").display_name == "Erin E."


# -- takeovers and expiry -------------------------------------------------------------------


async def _live_alice(server: Server, connect: Connect, token: str | None = None) -> tuple[ProtooClient, Any]:
    alice = await connect("alice", token=token or server.token(ROOM, "alice"))
    setup = await setup_peer(alice, display_name="Alice")
    producer = await produce(alice, setup["send"])
    return alice, {"setup": setup, "producer": producer}


def _untouched(server: Server, alice: ProtooClient, state: dict[str, Any]) -> None:
    peer = peer_of(server, "alice")
    assert not alice.closed.is_set()
    assert peer.connected and peer.principal.identity == "alice"
    assert set(peer.transports) == {state["setup"]["send"]["id"], state["setup"]["recv"]["id"]}
    assert set(peer.producers) == {state["producer"]["id"]}


async def test_nobody_else_takes_a_session_over(server: Server, connect: Connect) -> None:
    alice, state = await _live_alice(server, connect)
    attempts = [
        (server.token(ROOM, "mallory"), 403, "wrong_identity"),  # another identity's token
        (lk_token("mallory"), 403, "wrong_identity"),
        (None, 401, "token_missing"),  # no token on a keyed server
        (server.token(ROOM, "alice", now=time.time() - 7200), 401, "token_expired"),
        (server.token(ROOM, "alice", hidden=True), 403, "hidden_changed"),
    ]
    for token, status, code in attempts:
        got, body = await refusal(server, "alice", token)
        assert (got, body["error"]["code"]) == (status, code), token
        _untouched(server, alice, state)
    # A connection that passed the upgrade cannot take it over either (a race): nothing changes.
    room = server.rooms.rooms[ROOM]
    with pytest.raises(Forbidden):
        room.attach("alice", cast(ProtooConnection, _NeverUsed()), open_principal(admin=False))
    _untouched(server, alice, state)
    assert await alice.request("pauseProducer", {"producerId": state["producer"]["id"]}) == {}

    # The same identity with a valid token does: the old socket is closed with 4000.
    again = await connect("alice", token=lk_token("alice"))
    await asyncio.wait_for(alice.closed.wait(), 5)
    assert alice.close_code == 4000
    assert await again.request("resumeProducer", {"producerId": state["producer"]["id"]}) == {}


class _NeverUsed:
    """A connection that must not be touched (the attach is refused before)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"connection.{name} used")


async def test_token_less_client_cannot_take_over_a_token_peer_in_open_join(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, api_key=KEY, api_secret=SECRET, auth_open_join=True, mediasoup_num_workers=1
    ) as server:
        clients: list[ProtooClient] = []
        try:
            alice = await ProtooClient.connect(server.ws_url(ROOM, "alice", token=server.token(ROOM, "alice")))
            clients.append(alice)
            await setup_peer(alice, display_name="Alice")
            status, body = await refusal(server, "alice")
            assert (status, body["error"]["code"]) == (403, "wrong_identity")
            assert not alice.closed.is_set() and peer_of(server, "alice").connected
            # Token-less peers are open participants, and replace each other (the open mode).
            guest = await ProtooClient.connect(server.ws_url(ROOM, "guest"))
            clients.append(guest)
            g = await setup_peer(guest, display_name="Guest")
            assert await produce(guest, g["send"])
            assert peer_of(server, "guest").principal.method is AuthMethod.OPEN
            guest2 = await ProtooClient.connect(server.ws_url(ROOM, "guest"))
            clients.append(guest2)
            await asyncio.wait_for(guest.closed.wait(), 5)
        finally:
            await _close_all(clients)


async def test_expiry_during_the_call_does_not_cut_it(server: Server, connect: Connect) -> None:
    # Valid now only thanks to the verifier's leeway (30 s): expired a few seconds from now.
    issued = time.time() - 26
    token = server.token(ROOM, "alice", ttl=timedelta(0), now=issued)
    alice, state = await _live_alice(server, connect, token)
    bob = await connect("bob", token=server.token(ROOM, "bob"))
    await setup_peer(bob)
    while time.time() < issued + 31:
        await asyncio.sleep(0.25)
    # The live call goes on: requests, new producers, consumers.
    assert await alice.request("pauseProducer", {"producerId": state["producer"]["id"]}) == {}
    video = await produce(alice, state["setup"]["send"], "video")
    await bob.wait_for("newConsumer", lambda d: d["producerId"] == video["id"], kind="request")
    # A reconnect needs a fresh token.
    status, body = await refusal(server, "alice", token)
    assert (status, body["error"]["code"]) == (401, "token_expired")
    assert not alice.closed.is_set() and peer_of(server, "alice").connected
    fresh = await connect("alice", token=server.token(ROOM, "alice"))
    await asyncio.wait_for(alice.closed.wait(), 5)
    assert "codecs" in await fresh.request("getRouterRtpCapabilities")

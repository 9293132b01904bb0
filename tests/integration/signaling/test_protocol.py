"""mediasoup-demo's protoo protocol over a raw WebSocket: every request, its
success and error answers, the server's requests and notifications, and bad
input (malformed, unknown, oversize, out of order) that must not affect the room."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.e2e.harness import Server
from tests.e2e.protoo_client import ProtooClient, ProtooClientError
from tests.integration.signaling.conftest import DTLS, OPUS, SCTP_CAPS, VP8, Connect, setup_peer
from tests.polling import eventually

pytestmark = pytest.mark.timeout(60)


async def expect_error(client: ProtooClient, method: str, data: dict, code: int, reason: str = "") -> str:
    with pytest.raises(ProtooClientError) as info:
        await client.request(method, data)
    assert info.value.code == code, info.value
    assert reason in info.value.reason, info.value.reason
    return info.value.reason


# -- connection -----------------------------------------------------------------------


@pytest.mark.parametrize("query", ["?peerId=p", "?roomId=r", "", "?roomId=&peerId=p"])
async def test_connection_without_room_or_peer_id_is_400(server: Server, query: str) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(f"ws://127.0.0.1:{server.port}/{query}", protocols=("protoo",))
        assert info.value.status == 400
        async with session.get(f"{server.base_url}/{query}") as resp:
            if query:
                assert resp.status == 400
                assert "roomId" in await resp.text()
            else:  # a plain GET / (no upgrade, no ids) is the meeting page (issue 16)
                assert resp.status == 200
                assert resp.content_type == "text/html"
    assert server.rooms.rooms == {}


async def test_connection_needs_the_protoo_subprotocol(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(server.ws_url("r", "p"))
        assert info.value.status == 400


async def test_connect_notifies_mediasoup_version_and_creates_the_room(server: Server, connect: Connect) -> None:
    client = await connect(
        "room1",
        "alice",
    )
    assert client.ws.protocol == "protoo"
    data = await client.wait_for("mediasoup-version")
    assert data == {"version": "3.27.1"}
    assert list(server.rooms.rooms) == ["room1"]
    # /ws is the same endpoint
    other = await ProtooClient.connect(server.ws_url("room1", "bob", path="/ws"))
    try:
        await other.wait_for("mediasoup-version")
        assert set(server.rooms.rooms["room1"].peers) == {"alice", "bob"}
    finally:
        await other.close()


# -- requests before join ---------------------------------------------------------------


async def test_capabilities_and_transports_before_join(server: Server, connect: Connect) -> None:
    client = await connect("r", "alice")
    caps = await client.request("getRouterRtpCapabilities")
    mimes = {codec["mimeType"] for codec in caps["codecs"]}
    assert {"audio/opus", "video/VP8", "video/VP9", "video/H264", "video/rtx"} <= mimes
    assert caps["headerExtensions"]

    transport = await client.request(
        "createWebRtcTransport",
        {"forceTcp": False, "producing": True, "consuming": False, "sctpCapabilities": SCTP_CAPS},
    )
    assert set(transport) == {"id", "iceParameters", "iceCandidates", "dtlsParameters", "sctpParameters"}
    assert transport["iceParameters"]["iceLite"] is True
    protocols = {c["protocol"] for c in transport["iceCandidates"]}
    assert protocols == {"udp", "tcp"}
    assert all(c["address"] == "127.0.0.1" for c in transport["iceCandidates"])
    assert transport["sctpParameters"]["port"] == 5000
    assert transport["dtlsParameters"]["fingerprints"]

    tcp = await client.request("createWebRtcTransport", {"forceTcp": True, "producing": False, "consuming": True})
    assert {c["protocol"] for c in tcp["iceCandidates"]} == {"tcp"}
    assert tcp["sctpParameters"] is None

    # Both WebRtcServer ports are shared by every transport of the worker.
    room = server.rooms.rooms["r"]
    server_ports = {(c["protocol"], c["port"]) for c in transport["iceCandidates"]}
    assert {("tcp", c["port"]) for c in tcp["iceCandidates"]} <= server_ports
    assert room.primary.worker.pid in {w.pid for w in server.pool.workers}

    assert (
        await client.request("connectWebRtcTransport", {"transportId": transport["id"], "dtlsParameters": DTLS}) == {}
    )
    reason = await expect_error(
        client, "connectWebRtcTransport", {"transportId": transport["id"], "dtlsParameters": DTLS}, 400
    )
    assert "connect" in reason
    ice = await client.request("restartIce", {"transportId": transport["id"]})
    assert set(ice) >= {"usernameFragment", "password", "iceLite"}
    assert ice["usernameFragment"] != transport["iceParameters"]["usernameFragment"]
    stats = await client.request("getTransportStats", {"transportId": transport["id"]})
    assert isinstance(stats, list) and stats[0]["type"] == "webrtc-transport"
    assert stats[0]["transportId"] == transport["id"]
    assert stats[0]["dtlsState"] in ("new", "connecting")


@pytest.mark.parametrize(
    "method,data",
    [
        ("produce", {"transportId": "t", "kind": "audio", "rtpParameters": OPUS}),
        ("closeProducer", {"producerId": "x"}),
        ("pauseProducer", {"producerId": "x"}),
        ("resumeProducer", {"producerId": "x"}),
        ("pauseConsumer", {"consumerId": "x"}),
        ("resumeConsumer", {"consumerId": "x"}),
        ("requestConsumerKeyFrame", {"consumerId": "x"}),
        ("setConsumerPreferredLayers", {"consumerId": "x", "spatialLayer": 0}),
        ("setConsumerPriority", {"consumerId": "x", "priority": 1}),
        ("produceData", {"transportId": "t", "sctpStreamParameters": {"streamId": 0}}),
        ("changeDisplayName", {"displayName": "x"}),
        ("getProducerStats", {"producerId": "x"}),
        ("getConsumerStats", {"consumerId": "x"}),
        ("getDataProducerStats", {"dataProducerId": "x"}),
        ("getDataConsumerStats", {"dataConsumerId": "x"}),
    ],
)
async def test_media_requests_before_join_are_refused(
    server: Server, connect: Connect, method: str, data: dict
) -> None:
    client = await connect("r", "alice")
    send = await client.request(
        "createWebRtcTransport", {"producing": True, "consuming": False, "sctpCapabilities": SCTP_CAPS}
    )
    if "transportId" in data:
        data = {**data, "transportId": send["id"]}
    await expect_error(client, method, data, 403, "not yet joined")
    room = server.rooms.rooms["r"]
    assert not room.peers["alice"].producers and not room.peers["alice"].data_producers


# -- join, peers, producers and consumers -----------------------------------------------


async def test_join_answers_with_the_other_peers_and_announces_the_new_one(server: Server, connect: Connect) -> None:
    alice = await connect("r", "alice")
    got = await setup_peer(
        alice,
        display_name="Alice",
        email="alice@example.org",
        aiSettings={"summary": True},
        integrations={"slack": {"token": "xoxb-SECRET-1"}},
    )
    assert got["join"] == {"peers": []}
    await expect_error(alice, "join", {"displayName": "again"}, 409, "already joined")

    bob = await connect("r", "bob")
    got = await setup_peer(bob, display_name="Bob")
    assert got["join"] == {"peers": [{"id": "alice", "displayName": "Alice", "device": {"name": "test"}}]}
    new_peer = await alice.wait_for("newPeer")
    assert new_peer == {"id": "bob", "displayName": "Bob", "device": {"name": "test"}}

    # The metadata stays on the server: kept for the room's services, never sent to peers.
    participant = server.rooms.rooms["r"].get_participant("alice")
    assert participant.metadata.email == "alice@example.org"
    assert participant.metadata.integrations == {"slack": {"token": "xoxb-SECRET-1"}}
    assert participant.metadata.ai_settings == {"summary": True}
    assert "SECRET" not in repr(participant) and "SECRET" not in repr(participant.metadata)
    everything = json.dumps([bob.notifications, bob.server_requests, got])
    assert "alice@example.org" not in everything and "SECRET" not in everything and "summary" not in everything


async def test_produce_is_consumed_by_joined_peers_with_the_demo_handshake(server: Server, connect: Connect) -> None:
    alice, bob = await connect("r", "alice"), await connect("r", "bob")
    a = await setup_peer(alice, display_name="Alice")
    audio = await alice.request(
        "produce",
        {"transportId": a["send"]["id"], "kind": "audio", "rtpParameters": OPUS, "appData": {"source": "mic"}},
    )
    assert set(audio) == {"id"}
    # Bob joins after: a consumer of Alice's existing producer.
    await setup_peer(bob, display_name="Bob")
    request = await bob.wait_for("newConsumer", kind="request")
    assert set(request) == {"peerId", "producerId", "id", "kind", "rtpParameters", "type", "appData", "producerPaused"}
    assert request["peerId"] == "alice" and request["producerId"] == audio["id"]
    assert request["kind"] == "audio" and request["type"] == "simple" and request["producerPaused"] is False
    assert request["appData"] == {"source": "mic", "peerId": "alice"}
    assert request["rtpParameters"]["codecs"][0]["mimeType"] == "audio/opus"
    # Accepted: resumed, and the score follows.
    score = await bob.wait_for("consumerScore", lambda d: d["consumerId"] == request["id"])
    assert set(score["score"]) >= {"score", "producerScore"}
    room = server.rooms.rooms["r"]
    consumer = room.peers["bob"].consumers[request["id"]]
    assert consumer.paused is False

    # Alice's new video producer is consumed by Bob at once.
    video = await alice.request("produce", {"transportId": a["send"]["id"], "kind": "video", "rtpParameters": VP8})
    vreq = await bob.wait_for("newConsumer", lambda d: d["producerId"] == video["id"], kind="request")
    assert vreq["kind"] == "video" and vreq["peerId"] == "alice"
    await bob.wait_for("consumerScore", lambda d: d["consumerId"] == vreq["id"])

    # Producer pause/resume reach the consumer side.
    assert await alice.request("pauseProducer", {"producerId": video["id"]}) == {}
    assert await bob.wait_for("consumerPaused") == {"consumerId": vreq["id"]}
    assert await alice.request("resumeProducer", {"producerId": video["id"]}) == {}
    assert await bob.wait_for("consumerResumed") == {"consumerId": vreq["id"]}

    # Consumer requests.
    for method, data in [
        ("pauseConsumer", {"consumerId": vreq["id"]}),
        ("resumeConsumer", {"consumerId": vreq["id"]}),
        ("requestConsumerKeyFrame", {"consumerId": vreq["id"]}),
        ("setConsumerPreferredLayers", {"consumerId": vreq["id"], "spatialLayer": 0, "temporalLayer": 0}),
        ("setConsumerPriority", {"consumerId": vreq["id"], "priority": 2}),
    ]:
        assert await bob.request(method, data) == {}, method
    assert room.peers["bob"].consumers[vreq["id"]].priority == 2
    stats = await bob.request("getConsumerStats", {"consumerId": vreq["id"]})
    assert isinstance(stats, list) and stats and stats[0]["type"] == "outbound-rtp"
    assert isinstance(await alice.request("getProducerStats", {"producerId": video["id"]}), list)

    # Someone else's ids are not yours.
    await expect_error(bob, "pauseProducer", {"producerId": video["id"]}, 404, "not found")
    await expect_error(alice, "pauseConsumer", {"consumerId": vreq["id"]}, 404, "not found")

    # Closing the producer closes Bob's consumer.
    assert await alice.request("closeProducer", {"producerId": video["id"]}) == {}
    assert await bob.wait_for("consumerClosed", lambda d: d["consumerId"] == vreq["id"])
    await eventually(lambda: vreq["id"] not in room.peers["bob"].consumers)
    await expect_error(alice, "closeProducer", {"producerId": video["id"]}, 404)


async def test_new_producer_is_consumed_by_every_other_joined_peer(server: Server, connect: Connect) -> None:
    clients = [await connect("r", name) for name in ("a", "b", "c", "d")]
    setups = [await setup_peer(client, display_name=name) for client, name in zip(clients[:3], "abc", strict=False)]
    await setup_peer(clients[3], join=False)  # connected, not joined: gets nothing
    produced = await clients[2].request(
        "produce", {"transportId": setups[2]["send"]["id"], "kind": "audio", "rtpParameters": OPUS}
    )
    for client in clients[:2]:
        request = await client.wait_for("newConsumer", kind="request")
        assert request["producerId"] == produced["id"] and request["peerId"] == "c"
    await asyncio.sleep(0.3)
    assert clients[2].count("newConsumer", kind="request") == 0  # not its own
    assert clients[3].count("newConsumer", kind="request") == 0
    assert clients[3].count("newPeer") == 0


async def test_a_consumer_the_client_refuses_is_closed(server: Server, connect: Connect) -> None:
    alice, bob = await connect("r", "alice"), await connect("r", "bob")

    async def refuse(method: str, data: dict) -> dict:
        raise ProtooClientError(500, "cannot consume")

    bob.on_request = refuse
    a = await setup_peer(alice)
    await setup_peer(bob)
    await alice.request("produce", {"transportId": a["send"]["id"], "kind": "audio", "rtpParameters": OPUS})
    request = await bob.wait_for("newConsumer", kind="request")
    await bob.wait_for("consumerClosed", lambda d: d["consumerId"] == request["id"])
    assert server.rooms.rooms["r"].peers["bob"].consumers == {}


async def test_no_consumer_without_a_consuming_transport_or_capabilities(server: Server, connect: Connect) -> None:
    alice, bob, carol = await connect("r", "alice"), await connect("r", "bob"), await connect("r", "carol")
    a = await setup_peer(alice)
    await setup_peer(bob, consume=False)  # no recv transport
    await carol.request("join", {"displayName": "Carol"})  # no rtpCapabilities
    await alice.request("produce", {"transportId": a["send"]["id"], "kind": "audio", "rtpParameters": OPUS})
    await asyncio.sleep(0.3)
    assert bob.count("newConsumer", kind="request") == 0 and carol.count("newConsumer", kind="request") == 0


async def test_data_producers_and_consumers(server: Server, connect: Connect) -> None:
    alice, bob = await connect("r", "alice"), await connect("r", "bob")
    a = await setup_peer(alice, sctp=True)
    produced = await alice.request(
        "produceData",
        {
            "transportId": a["send"]["id"],
            "sctpStreamParameters": {"streamId": 0, "ordered": True},
            "label": "chat",
            "protocol": "",
            "appData": {"info": "my-chat"},
        },
    )
    b = await setup_peer(bob, sctp=True)
    request = await bob.wait_for("newDataConsumer", kind="request")
    assert set(request) == {"peerId", "dataProducerId", "id", "sctpStreamParameters", "label", "protocol", "appData"}
    assert request["peerId"] == "alice" and request["dataProducerId"] == produced["id"]
    assert request["label"] == "chat" and request["appData"] == {"info": "my-chat", "peerId": "alice"}
    assert request["sctpStreamParameters"]["streamId"] >= 0

    # Bob's new data producer is consumed by Alice.
    bob_dp = await bob.request(
        "produceData",
        {
            "transportId": b["send"]["id"],
            "sctpStreamParameters": {"streamId": 1, "ordered": False, "maxRetransmits": 1},
            "label": "chat",
        },
    )
    areq = await alice.wait_for("newDataConsumer", kind="request")
    assert areq["dataProducerId"] == bob_dp["id"] and areq["sctpStreamParameters"]["ordered"] is False

    stats = await alice.request("getDataProducerStats", {"dataProducerId": produced["id"]})
    assert stats[0]["type"] == "data-producer"
    stats = await bob.request("getDataConsumerStats", {"dataConsumerId": request["id"]})
    assert stats[0]["type"] == "data-consumer"

    # Alice leaves: Bob's consumers of her close.
    await alice.close()
    assert await bob.wait_for("peerClosed") == {"peerId": "alice"}
    await bob.wait_for("dataConsumerClosed", lambda d: d["dataConsumerId"] == request["id"])


async def test_change_display_name(server: Server, connect: Connect) -> None:
    alice, bob = await connect("r", "alice"), await connect("r", "bob")
    await setup_peer(alice, display_name="Alice")
    await setup_peer(bob, display_name="Bob")
    assert await alice.request("changeDisplayName", {"displayName": "Alice B."}) == {}
    assert await bob.wait_for("peerDisplayNameChanged") == {
        "peerId": "alice",
        "displayName": "Alice B.",
        "oldDisplayName": "Alice",
    }
    await expect_error(alice, "changeDisplayName", {"displayName": "x" * 1000}, 400, "displayName")


async def test_leaving_closes_consumers_at_the_others_and_the_last_closes_the_room(
    server: Server, connect: Connect
) -> None:
    alice, bob = await connect("r", "alice"), await connect("r", "bob")
    a = await setup_peer(alice)
    await setup_peer(bob)
    await alice.request("produce", {"transportId": a["send"]["id"], "kind": "audio", "rtpParameters": OPUS})
    request = await bob.wait_for("newConsumer", kind="request")
    room = server.rooms.rooms["r"]
    await alice.close()
    assert await bob.wait_for("peerClosed") == {"peerId": "alice"}
    await bob.wait_for("consumerClosed", lambda d: d["consumerId"] == request["id"])
    await eventually(lambda: not room.peers["bob"].consumers)
    assert "alice" not in room.peers
    await bob.close()
    await eventually(lambda: room.closed and server.rooms.rooms == {})
    assert all(router.closed for router in room.routers)


async def test_concurrent_first_connections_create_one_room(server: Server, connect: Connect) -> None:
    clients = await asyncio.gather(*(connect("busy", f"p{i}") for i in range(8)))
    answers = await asyncio.gather(*(c.request("join", {"displayName": f"p{i}"}) for i, c in enumerate(clients)))
    assert list(server.rooms.rooms) == ["busy"]
    assert len(server.rooms.rooms["busy"].peers) == 8
    assert max(len(a["peers"]) for a in answers) == 7


# -- errors and bad input -----------------------------------------------------------------


async def test_unknown_method_is_an_error_and_the_connection_goes_on(server: Server, connect: Connect) -> None:
    client = await connect("r", "alice")
    await expect_error(client, "fooBar", {}, 404, 'unknown request.method "fooBar"')
    await expect_error(client, "applyNetworkThrottle", {"secret": "x"}, 404)
    assert "codecs" in await client.request("getRouterRtpCapabilities")


@pytest.mark.parametrize(
    "method,data,field",
    [
        ("join", {"rtpCapabilities": {"codecs": "nope"}}, "rtpCapabilities"),
        ("join", {"displayName": 5}, "displayName"),
        ("join", {"device": "phone"}, "device"),
        ("join", {"email": "not-an-email"}, "email"),
        ("join", {"integrations": {"k": "v" * 20000}}, "integrations"),
        ("join", {"aiSettings": ["a"]}, "aiSettings"),
        ("join", {"integrations": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}}, "integrations"),
        ("join", {"sctpCapabilities": {"numStreams": {"OS": "x"}}}, "sctpCapabilities"),
        ("createWebRtcTransport", {"sctpCapabilities": {"nope": 1}}, "sctpCapabilities"),
        ("createWebRtcTransport", {"producing": "perhaps"}, "producing"),
        ("connectWebRtcTransport", {"transportId": "t"}, "dtlsParameters"),
        ("connectWebRtcTransport", {"transportId": "t", "dtlsParameters": {"fingerprints": []}}, "fingerprints"),
        (
            "connectWebRtcTransport",
            {"transportId": "t", "dtlsParameters": {"fingerprints": [{"algorithm": "md5", "value": "x"}]}},
            "algorithm",
        ),
        ("restartIce", {}, "transportId"),
        ("getTransportStats", {"transportId": ""}, "transportId"),
    ],
)
async def test_invalid_payloads_get_400_naming_the_field(
    server: Server, connect: Connect, method: str, data: dict, field: str
) -> None:
    client = await connect("r", "alice")
    reason = await expect_error(client, method, data, 400, field)
    assert "v" * 100 not in reason  # values are not echoed
    peer = server.rooms.rooms["r"].peers["alice"]
    assert not peer.joined and not peer.transports


async def test_invalid_rtp_parameters_get_400_and_leave_the_room_untouched(server: Server, connect: Connect) -> None:
    alice, bob = await connect("r", "alice"), await connect("r", "bob")
    a = await setup_peer(alice)
    await setup_peer(bob)
    send = a["send"]["id"]
    bad = [
        ({**OPUS, "codecs": [{"payloadType": 111, "clockRate": 48000}]}, "mimeType"),
        ({**OPUS, "codecs": "opus"}, "codecs"),
        ({**OPUS, "encodings": [{"ssrc": "one"}]}, "ssrc"),
        ({**OPUS, "codecs": [{"mimeType": "audio/G722", "payloadType": 9, "clockRate": 8000}]}, "codec"),
    ]
    for params, word in bad:
        reason = await expect_error(
            alice, "produce", {"transportId": send, "kind": "audio", "rtpParameters": params}, 400
        )
        assert word.lower() in reason.lower(), reason
    await expect_error(alice, "produce", {"transportId": send, "kind": "data", "rtpParameters": OPUS}, 400, "kind")
    await expect_error(alice, "produce", {"transportId": "nope", "kind": "audio", "rtpParameters": OPUS}, 404)
    await expect_error(
        alice,
        "produce",
        {"transportId": send, "kind": "audio", "rtpParameters": OPUS, "appData": {"x": "y" * 5000}},
        400,
        "appData",
    )
    await expect_error(
        alice, "produceData", {"transportId": send, "sctpStreamParameters": {"ordered": True}}, 400, "streamId"
    )
    await expect_error(
        alice, "produceData", {"transportId": send, "sctpStreamParameters": {"streamId": 1}}, 400, "SCTP"
    )  # the transport has no SCTP
    await expect_error(alice, "setConsumerPriority", {"consumerId": "c", "priority": 0}, 400, "priority")
    await expect_error(alice, "setConsumerPreferredLayers", {"consumerId": "c"}, 400, "spatialLayer")
    room = server.rooms.rooms["r"]
    assert room.peers["alice"].producers == {} and room.peers["alice"].data_producers == {}
    assert bob.count("newConsumer", kind="request") == 0
    # ...and the same connection still produces fine.
    ok = await alice.request("produce", {"transportId": send, "kind": "audio", "rtpParameters": OPUS})
    assert (await bob.wait_for("newConsumer", kind="request"))["producerId"] == ok["id"]


async def test_malformed_messages(server: Server, connect: Connect) -> None:
    client = await connect("r", "alice")
    # Valid JSON, not a valid request: an error answer when there is an id to answer.
    rid = client.next_id()
    await client.send_raw(json.dumps({"request": True, "id": rid, "method": "join", "data": [1, 2]}))
    response = await client.wait_response(rid)
    assert response["ok"] is False and response["errorCode"] == 400 and "data" in response["errorReason"]
    rid = client.next_id()
    await client.send_raw(json.dumps({"request": True, "id": rid, "data": {}}))
    response = await client.wait_response(rid)
    assert response["errorCode"] == 400 and "method" in response["errorReason"]
    # No id, not protoo, a response nobody asked for, a notification: ignored.
    for raw in [
        '{"request": true, "method": "join"}',
        "[1, 2, 3]",
        '"hello"',
        '{"foo": 1}',
        '{"response": true, "id": 424242, "ok": true, "data": {}}',
        '{"notification": true, "method": "whatever", "data": {}}',
    ]:
        await client.send_raw(raw)
    assert "codecs" in await client.request("getRouterRtpCapabilities")
    peer = server.rooms.rooms["r"].peers["alice"]
    assert not peer.joined and not peer.closed

    # Not JSON at all: a clean close (1007).
    await client.send_raw("{this is not json")
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.close_code == 1007


async def test_binary_frames_close_the_connection(server: Server, connect: Connect) -> None:
    client = await connect("r", "alice")
    await client.send_raw(b"\x00\x01binary")
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.close_code == 1003


async def test_oversize_messages(tmp_path) -> None:
    from tests.e2e.harness import running_server

    async with running_server(tmp_path, signaling_max_frame_bytes=16384) as srv:
        client = await ProtooClient.connect(srv.ws_url("r", "alice"))
        try:
            other = await ProtooClient.connect(srv.ws_url("r", "bob"))
            await setup_peer(other)
            rid = client.next_id()
            big = {"request": True, "id": rid, "method": "join", "data": {"displayName": "x", "pad": "y" * 20000}}
            await client.send_raw(json.dumps(big))
            response = await client.wait_response(rid)
            assert response["ok"] is False and response["errorCode"] == 413
            assert "16384" in response["errorReason"]
            assert not srv.rooms.rooms["r"].peers["alice"].joined
            assert "codecs" in await client.request("getRouterRtpCapabilities")  # still usable
            # Beyond 4x the limit the socket is closed (1009), the room goes on.
            await client.send_raw(json.dumps({**big, "data": {"pad": "y" * 70000}}))
            await asyncio.wait_for(client.closed.wait(), 5)
            assert client.close_code == 1009
            assert await other.request("getRouterRtpCapabilities")
            await other.close()
        finally:
            if not client.closed.is_set():
                await client.close()
            else:
                await client.session.close()


async def test_out_of_order_requests(server: Server, connect: Connect) -> None:
    client = await connect("r", "alice")
    await expect_error(client, "connectWebRtcTransport", {"transportId": "nope", "dtlsParameters": DTLS}, 404)
    await expect_error(client, "restartIce", {"transportId": "nope"}, 404)
    await expect_error(client, "getTransportStats", {"transportId": "nope"}, 404)
    await setup_peer(client)
    for method, data in [
        ("closeProducer", {"producerId": "nope"}),
        ("resumeConsumer", {"consumerId": "nope"}),
        ("getConsumerStats", {"consumerId": "nope"}),
        ("getDataProducerStats", {"dataProducerId": "nope"}),
        ("getDataConsumerStats", {"dataConsumerId": "nope"}),
    ]:
        await expect_error(client, method, data, 404, "not found")


async def test_announced_address_is_what_clients_are_given(tmp_path) -> None:
    from tests.e2e.harness import running_server

    async with running_server(tmp_path, mediasoup_announced_address="media.example.org") as srv:
        client = await ProtooClient.connect(srv.ws_url("r", "alice"))
        try:
            transport = await client.request("createWebRtcTransport", {"producing": True, "consuming": False})
            assert {c["address"] for c in transport["iceCandidates"]} == {"media.example.org"}
            await client.request("join", {"displayName": "A"})
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{srv.base_url}/rooms/r/broadcasters",
                    json={"id": "b", "displayName": "B", "device": {"name": "ffmpeg"}},
                ) as resp:
                    assert resp.status == 200
                async with http.post(
                    f"{srv.base_url}/rooms/r/broadcasters/b/transports", json={"type": "plain"}
                ) as resp:
                    assert (await resp.json())["ip"] == "media.example.org"
        finally:
            await client.close()

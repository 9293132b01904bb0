"""Request dispatch of a room with a fake host: refusals before join, extra methods,
closed peers, unknown and invalid requests, and the worker errors' mapping."""

from __future__ import annotations

from typing import Any

import pytest

from control.errors import BadRequest, Forbidden, Gone, NotFound, ParleyError, Unavailable, UpstreamTimeout
from control.rooms.errors import worker_errors
from control.rooms.handlers import HANDLERS
from control.rooms.peer import Peer
from control.rooms.room import Room
from control.signaling import messages as m
from tests.unit.room_fakes import FakeConnection, make_room
from workers.errors import (
    ChannelTimeoutError,
    InvalidStateError,
    MediasoupError,
    MediasoupTypeError,
    NotFoundError,
    UnsupportedError,
)


def test_every_signaling_method_has_one_handler() -> None:
    assert set(HANDLERS) == set(m.REQUESTS)


async def test_before_join_only_capabilities_transports_and_stats() -> None:
    room, _ = await make_room()
    peer = room.attach("alice", FakeConnection().as_protoo())
    caps = await room.handle_request(peer, "getRouterRtpCapabilities", {})
    assert caps == room.primary.rtp_capabilities
    for method, data in [
        ("pauseProducer", {"producerId": "p"}),
        ("resumeConsumer", {"consumerId": "c"}),
        ("changeDisplayName", {"displayName": "x"}),
        ("getDataProducerStats", {"dataProducerId": "d"}),
    ]:
        with pytest.raises(Forbidden) as refused:
            await room.handle_request(peer, method, data)
        assert (refused.value.status, refused.value.message) == (403, "Peer not yet joined")
    with pytest.raises(NotFound):  # allowed before join: it looks for the transport
        await room.handle_request(peer, "getTransportStats", {"transportId": "t"})


async def test_unknown_and_invalid_requests() -> None:
    room, _ = await make_room()
    peer = room.attach("alice", FakeConnection().as_protoo())
    with pytest.raises(NotFound) as unknown:
        await room.handle_request(peer, "fly", {})
    assert unknown.value.message == 'unknown request.method "fly"'
    with pytest.raises(BadRequest) as invalid:
        await room.handle_request(peer, "join", {"displayName": 42})
    assert invalid.value.message.startswith("invalid join request: displayName")


async def test_extra_methods_of_other_services() -> None:
    room, host = await make_room()
    calls: list[tuple[Room, Peer, dict[str, Any]]] = []

    async def shout(room: Room, peer: Peer, data: dict[str, Any]) -> Any:
        calls.append((room, peer, data))
        return {"ok": True}

    host.methods["shout"] = (shout, False)
    host.methods["history"] = (shout, True)
    peer = room.attach("alice", FakeConnection().as_protoo())
    with pytest.raises(Forbidden):
        await room.handle_request(peer, "shout", {})
    assert await room.handle_request(peer, "history", {"a": 1}) == {"ok": True}
    await room.handle_request(peer, "join", {})
    assert await room.handle_request(peer, "shout", {}) == {"ok": True}
    assert [c[2] for c in calls] == [{"a": 1}, {}]


async def test_a_closed_peer_or_room_is_gone() -> None:
    room, _ = await make_room()
    alice = room.attach("alice", FakeConnection().as_protoo())
    bob = room.attach("bob", FakeConnection().as_protoo())
    room.leave(bob)
    with pytest.raises(Gone) as gone:
        await room.handle_request(bob, "getRouterRtpCapabilities", {})
    assert (gone.value.status, gone.value.message) == (410, "peer closed")
    room.close()
    with pytest.raises(Gone):
        await room.handle_request(alice, "getRouterRtpCapabilities", {})


async def test_requests_on_what_the_peer_does_not_have() -> None:
    room, _ = await make_room()
    peer = room.attach("alice", FakeConnection().as_protoo())
    await room.handle_request(peer, "join", {})
    with pytest.raises(NotFound) as missing:
        await room.handle_request(peer, "closeProducer", {"producerId": "p1"})
    assert missing.value.message == 'producer with id "p1" not found'
    with pytest.raises(NotFound) as missing:
        await room.handle_request(
            peer,
            "connectWebRtcTransport",
            {
                "transportId": "t1",
                "dtlsParameters": {
                    "role": "client",
                    "fingerprints": [{"algorithm": "sha-256", "value": ":".join(["AB"] * 32)}],
                },
            },
        )
    assert missing.value.message == 'transport with id "t1" not found'


@pytest.mark.parametrize(
    ("raised", "expected", "status"),
    [
        (MediasoupTypeError("bad"), BadRequest, 400),
        (UnsupportedError("no codec"), BadRequest, 400),
        (NotFoundError("gone"), NotFound, 404),
        (ChannelTimeoutError("slow"), UpstreamTimeout, 504),
        (InvalidStateError("closed"), Unavailable, 503),
        (MediasoupError("refused"), BadRequest, 400),
    ],
)
def test_worker_errors_become_domain_errors(raised: Exception, expected: type[ParleyError], status: int) -> None:
    with pytest.raises(expected) as error, worker_errors("produce"):
        raise raised
    assert error.value.status == status and error.value.message.startswith("produce: ")


def test_domain_errors_pass_through_worker_errors() -> None:
    with pytest.raises(Gone), worker_errors("produce"):
        raise Gone("peer closed")

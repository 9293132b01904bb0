"""The front door's reading of a connection's first bytes (control.cluster.front): only a
plain, complete signaling upgrade is one; anything unusual is served by aiohttp."""

from __future__ import annotations

import pytest

from control.cluster.front import parse_upgrade

HEAD = (
    b"GET /?roomId=r1&peerId=p1 HTTP/1.1\r\nHost: 127.0.0.1:4443\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: protoo\r\n"
)


def test_a_plain_upgrade_is_one() -> None:
    upgrade = parse_upgrade(HEAD + b"\r\n" + b"\x81\x80frame")
    assert upgrade is not None
    assert upgrade.head == HEAD and upgrade.tail == b"\x81\x80frame"
    assert (upgrade.room_id, upgrade.peer_id) == ("r1", "p1")
    ws = parse_upgrade(HEAD.replace(b"GET /?", b"GET /ws?").replace(b"r1", b"r%20x") + b"\r\n")
    assert ws is not None and ws.room_id == "r x" and ws.tail == b""


@pytest.mark.parametrize(
    "data",
    [
        HEAD,  # the head not complete yet
        HEAD.replace(b"GET ", b"POST ") + b"\r\n",
        HEAD.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n",
        HEAD.replace(b"GET /?", b"GET /api/rooms?") + b"\r\n",
        HEAD.replace(b"GET /?", b"GET  /?") + b"\r\n",
        HEAD.replace(b"roomId=r1&", b"") + b"\r\n",  # no room
        HEAD.replace(b"roomId=r1", b"roomId=") + b"\r\n",
        HEAD.replace(b"Upgrade: websocket", b"Upgrade: h2c") + b"\r\n",
        HEAD.replace(b"Upgrade: websocket\r\n", b"") + b"\r\n",
        HEAD + b"X-Parley-Relay: forged\r\n\r\n",  # only nodes write those
        HEAD + b"x-parley-handover: 1\r\n\r\n",
        HEAD + b"X-PARLEY-PLACEMENT: remembered\r\n\r\n",
        HEAD + b"Content-Length: 5\r\n\r\nhello",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n",
        HEAD + b"Foo: bar\nX-Parley-Relay: forged\r\n\r\n",  # a bare LF
        HEAD + b"Foo: bar\rX-Parley-Relay: forged\r\n\r\n",  # a bare CR
        HEAD + b" X-Parley-Relay: folded\r\n\r\n",  # obs-fold
        HEAD + b"X-Parley-Relay : spaced\r\n\r\n",
        HEAD + b"Bad Name: x\r\n\r\n",
        HEAD + b"NoColon\r\n\r\n",
        HEAD.replace(b"peerId=p1", "peerId=\u00e9".encode()) + b"\r\n",  # not ASCII
    ],
)
def test_anything_unusual_is_not_one(data: bytes) -> None:
    assert parse_upgrade(data) is None

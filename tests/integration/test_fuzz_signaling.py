"""A seeded signaling fuzzer (issue 15): hostile and broken clients against the real app.

Over 10,000 messages in the issue's categories (malformed and non-object JSON,
protoo shape errors, wrong types in every field of every request, injection
strings in every string field, out-of-order and unknown methods, duplicate ids,
oversize frames, deep nesting, binary frames, floods, join/leave churn, idle
sockets, aborted upgrades, junk answers to the server's own requests). Then:
the process and its workers live, nothing was answered 500, no traceback was
logged, every room the fuzzer made is gone (from the manager and the workers),
and a legitimate two-peer call still works. It prints
``fuzz: N messages, C crashes, R rooms leaked, T tracebacks``.

``FUZZ_SEED`` (env) replays a run; ``FUZZ_MESSAGES`` raises the count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from loguru import logger

from control.signaling import messages as m
from tests.e2e.harness import Server, running_server
from tests.e2e.protoo_client import ProtooClient
from tests.integration.signaling.conftest import DTLS, OPUS, SCTP_CAPS, VP8, setup_peer
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)

SEED = int(os.environ.get("FUZZ_SEED", "1515"))
MESSAGES = int(os.environ.get("FUZZ_MESSAGES", "10000"))
MAX_FRAME = 16 * 1024

#: Values of every JSON type, edge numbers (NaN and Infinity are emitted as JSON literals,
#: which Python's parser reads), and strings built to break the next parser.
INJECTIONS = [
    "",
    " ",
    "a\r\nb",
    "\r\na=candidate:1 1 udp 1 6.6.6.6 9 typ host\r\n",
    "\x00",
    "nul\x00byte",
    "\x1b[31mred\x1b[0m",
    "\u202eevil\u202c",
    "\u2066iso\u2069",
    "\u2028",
    "\ud800",
    "\udfff\ud800",
    "../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "${jndi:ldap://x/a}",
    "'; DROP TABLE meetings; --",
    '{"$where": "sleep(1000)"}',
    "<script>alert(1)</script>",
    "%s%s%s%n",
    "\\",
    '"',
    "x" * 300,
    "é" * 1000,
    "😀" * 100,
]
VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**31,
    2**32,
    2**53 + 1,
    -(2**63),
    10**30,
    float("nan"),
    float("inf"),
    float("-inf"),
    [],
    [1, "a", None],
    {},
    {"a": {"b": {}}},
    [[[[[]]]]],
    *INJECTIONS,
]
#: Well-formed payloads of every method, whose fields the fuzzer replaces one at a time.
TEMPLATES: dict[str, dict[str, Any]] = {
    "getRouterRtpCapabilities": {},
    "join": {"displayName": "f", "device": {"name": "x"}, "rtpCapabilities": {}, "sctpCapabilities": SCTP_CAPS},
    "createWebRtcTransport": {"forceTcp": False, "producing": True, "consuming": True, "sctpCapabilities": SCTP_CAPS},
    "connectWebRtcTransport": {"transportId": "T", "dtlsParameters": DTLS},
    "restartIce": {"transportId": "T"},
    "produce": {"transportId": "T", "kind": "video", "rtpParameters": VP8, "appData": {"source": "webcam"}},
    "closeProducer": {"producerId": "P"},
    "pauseProducer": {"producerId": "P"},
    "resumeProducer": {"producerId": "P"},
    "pauseConsumer": {"consumerId": "C"},
    "resumeConsumer": {"consumerId": "C"},
    "requestConsumerKeyFrame": {"consumerId": "C"},
    "setConsumerPreferredLayers": {"consumerId": "C", "spatialLayer": 1, "temporalLayer": 1},
    "setConsumerPriority": {"consumerId": "C", "priority": 2},
    "produceData": {"transportId": "T", "sctpStreamParameters": {"streamId": 3, "ordered": True}, "label": "l"},
    "changeDisplayName": {"displayName": "g"},
    "getTransportStats": {"transportId": "T"},
    "getProducerStats": {"producerId": "P"},
    "getConsumerStats": {"consumerId": "C"},
    "getDataProducerStats": {"dataProducerId": "D"},
    "getDataConsumerStats": {"dataConsumerId": "D"},
    "chatMessage": {"text": "hi"},
    "getChatHistory": {"limit": 10},
    "startRecording": {},
    "stopRecording": {},
}
assert set(m.REQUESTS) <= set(TEMPLATES)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON value (dict keys and list indexes)."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield (*prefix, index)
            yield from paths(child, (*prefix, index))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    copy = json.loads(json.dumps(value))
    node = copy
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = new
    return copy


class Tally:
    """What every fuzz socket saw."""

    def __init__(self) -> None:
        self.sent = 0
        self.crashes: list[Any] = []
        self.codes: Counter[Any] = Counter()
        self.closes: Counter[Any] = Counter()


class FuzzSocket:
    """A raw protoo socket: sends anything, records every answer, answers the
    server's requests (sometimes with junk)."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession, tally: Tally, rng: random.Random
    ) -> None:
        self.ws = ws
        self.session = session
        self.tally = tally
        self.rng = random.Random(rng.random())
        self.ids = iter(range(1, 10**9))
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.data: dict[str, list[str]] = {"T": [], "P": [], "C": [], "D": []}
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, server: Server, room: str, peer: str, tally: Tally, rng: random.Random) -> FuzzSocket | None:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(server.ws_url(room, peer), protocols=("protoo",), max_msg_size=0)
        except aiohttp.WSServerHandshakeError as error:
            tally.codes[f"http {error.status}"] += 1
            if error.status >= 500:
                tally.crashes.append(f"upgrade {error.status}")
            await session.close()
            return None
        return cls(ws, session, tally, rng)

    @property
    def closed(self) -> bool:
        return self.ws.closed or self.reader.done()

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            body = json.loads(message.data)
            if body.get("response"):
                code = body.get("errorCode") if not body.get("ok") else "ok"
                self.tally.codes[code] += 1
                if code == 500:
                    self.tally.crashes.append(body)
                self._learn(body.get("data"))
                future = self.waiting.pop(body.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(body)
            elif body.get("request"):
                self._learn(body.get("data"))
                await self._answer(body)
        self.tally.closes[self.ws.close_code] += 1
        for future in self.waiting.values():
            if not future.done():
                future.set_result({})

    def _learn(self, data: Any) -> None:
        """Keep real ids the server gave, so fuzzed requests reach deeper."""
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return
        if "iceParameters" in data:
            self.data["T"].append(data["id"])
        elif "producerId" in data and "rtpParameters" in data:
            self.data["C"].append(data["id"])
        elif "dataProducerId" in data:
            self.data["D"].append(data["id"])
        elif len(data) == 1:
            self.data["P"].append(data["id"])

    async def _answer(self, body: dict[str, Any]) -> None:
        roll = self.rng.random()
        if roll < 0.7:
            reply: Any = {"response": True, "id": body["id"], "ok": True, "data": {}}
        elif roll < 0.85:
            reply = {"response": True, "id": body["id"], "ok": False, "errorCode": "x", "errorReason": ["junk"]}
        else:
            reply = {"response": True, "id": self.rng.choice([body["id"], -1, "x", None]), "ok": self.rng.random()}
        await self.send_text(json.dumps(reply))

    async def send_text(self, text: str) -> None:
        if self.ws.closed:
            return
        self.tally.sent += 1
        try:
            await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass

    async def send_frame(self, data: bytes, opcode: aiohttp.WSMsgType) -> None:
        """A raw frame: a text frame that is not UTF-8, a ping, a continuation out of place."""
        if self.ws.closed:
            return
        self.tally.sent += 1
        try:
            await self.ws.send_frame(data, opcode)
        except (ConnectionError, RuntimeError):
            pass

    async def send_bytes(self, data: bytes) -> None:
        if self.ws.closed:
            return
        self.tally.sent += 1
        try:
            await self.ws.send_bytes(data)
        except (ConnectionError, RuntimeError):
            pass

    async def request(self, method: Any, data: Any, request_id: Any = None, wait: bool = False) -> dict[str, Any]:
        rid = next(self.ids) if request_id is None else request_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if wait and isinstance(rid, int):
            self.waiting[rid] = future
        await self.send_text(json.dumps({"request": True, "id": rid, "method": method, "data": data}))
        if not wait:
            return {}
        try:
            return await asyncio.wait_for(future, 15)
        except TimeoutError:
            self.tally.crashes.append(f"no answer to {method!r}")
            return {}

    async def sync(self) -> None:
        """Wait until what was sent so far has been read (an answered request)."""
        if not self.closed:
            await self.request("getRouterRtpCapabilities", {}, wait=True)

    def real_id(self, kind: str) -> str:
        known = self.data[kind]
        return self.rng.choice(known) if known and self.rng.random() < 0.7 else kind

    async def close(self) -> None:
        try:
            if self.rng.random() < 0.5:
                await self.ws.close()
            else:  # drop without a close frame
                transport = self.ws._response.connection and self.ws._response.connection.transport
                if transport is not None:
                    transport.abort()
        finally:
            await asyncio.gather(self.reader, return_exceptions=True)
            await self.session.close()


class Fuzzer:
    def __init__(self, server: Server, rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.tally = Tally()
        self.sockets: list[FuzzSocket] = []
        self.counter = 0

    def peer_id(self) -> str:
        self.counter += 1
        return f"fz{self.counter}"

    async def open(self, room: str) -> FuzzSocket | None:
        self.tally.sent += 1  # the upgrade request
        sock = await FuzzSocket.open(self.server, room, self.peer_id(), self.tally, self.rng)
        if sock is not None:
            self.sockets.append(sock)
        return sock

    async def joined(self, room: str) -> FuzzSocket | None:
        sock = await self.open(room)
        if sock is None:
            return None
        caps = (await sock.request("getRouterRtpCapabilities", {}, wait=True)).get("data")
        await sock.request(
            "createWebRtcTransport", {"producing": True, "consuming": False, "sctpCapabilities": SCTP_CAPS}, wait=True
        )
        await sock.request(
            "createWebRtcTransport", {"producing": False, "consuming": True, "sctpCapabilities": SCTP_CAPS}, wait=True
        )
        await sock.request(
            "join", {"displayName": "fz", "rtpCapabilities": caps, "sctpCapabilities": SCTP_CAPS}, wait=True
        )
        return sock

    def payload(self, sock: FuzzSocket, method: str) -> Any:
        template = json.loads(json.dumps(TEMPLATES.get(method, {})))
        for key, kind in (
            ("transportId", "T"),
            ("producerId", "P"),
            ("consumerId", "C"),
            ("dataProducerId", "D"),
            ("dataConsumerId", "D"),
        ):
            if key in template:
                template[key] = sock.real_id(kind)
        return template

    # -- categories ------------------------------------------------------------------

    async def wrong_types(self, sock: FuzzSocket, count: int) -> None:
        """Every field (and nested field) of every request, replaced by every kind of value."""
        methods = list(TEMPLATES)
        for index in range(count):
            if index % 16 == 15:
                await sock.sync()  # stay under the in-flight limit: reach the handlers
            method = self.rng.choice(methods)
            template = self.payload(sock, method)
            where = list(paths(template))
            data = replaced(template, self.rng.choice(where), self.rng.choice(VALUES)) if where else template
            await sock.request(method, data)

    async def injections(self, sock: FuzzSocket, count: int) -> None:
        """Injection strings in every string field (and as extra keys)."""
        methods = list(TEMPLATES)
        for index in range(count):
            if index % 16 == 15:
                await sock.sync()
            method = self.rng.choice(methods)
            template = self.payload(sock, method)
            strings = [p for p in paths(template) if isinstance(_get(template, p), str)]
            if strings and self.rng.random() < 0.8:
                data = replaced(template, self.rng.choice(strings), self.rng.choice(INJECTIONS))
            else:
                data = {**template, self.rng.choice(INJECTIONS): self.rng.choice(INJECTIONS)}
            await sock.request(method, data)

    async def protoo_shapes(self, sock: FuzzSocket, count: int) -> None:
        """Non-object JSON, protoo messages with missing or wrong members, out-of-order
        and unknown methods, duplicate ids, responses nobody asked for."""
        shapes = [
            lambda: json.dumps(self.rng.choice([[], [1, 2], 1, "x", None, True, 1.5])),
            lambda: json.dumps({"request": True, "method": "join", "data": {}}),
            lambda: json.dumps({"request": True, "id": self.rng.choice(VALUES), "method": "join", "data": {}}),
            lambda: json.dumps({"request": True, "id": 5, "method": self.rng.choice(VALUES), "data": {}}),
            lambda: json.dumps({"request": True, "id": 6, "method": "produce", "data": self.rng.choice(VALUES)}),
            lambda: json.dumps({"request": "yes", "id": 7, "method": "join"}),
            lambda: json.dumps({"response": True, "id": self.rng.randint(-5, 10**6), "ok": True, "data": None}),
            lambda: json.dumps({"response": True, "id": 1, "ok": False, "errorCode": {}, "errorReason": None}),
            lambda: json.dumps({"notification": True, "method": self.rng.choice(INJECTIONS), "data": []}),
            lambda: json.dumps({"request": True, "id": 8, "method": "x" * 65, "data": {}}),
            lambda: json.dumps({"request": True, "id": 9, "method": self.rng.choice(INJECTIONS) or "m", "data": {}}),
            lambda: json.dumps({"request": True, "id": 2**60, "method": "getRouterRtpCapabilities"}),
            lambda: json.dumps({}),
        ]
        for _ in range(count):
            await sock.send_text(self.rng.choice(shapes)())
        for _ in range(count // 20):  # duplicate ids, at once
            rid = self.rng.randint(1, 50)
            for method in ("createWebRtcTransport", "join", "produce", "getTransportStats"):
                await sock.request(method, self.payload(sock, method), request_id=rid)

    async def flood(self, sock: FuzzSocket, count: int) -> None:
        """Requests far faster than allowed: in-flight and rate limits answer 429."""
        await asyncio.gather(*(sock.request("getRouterRtpCapabilities", {}) for _ in range(count)))

    async def out_of_order(self, room: str, count: int) -> None:
        """Media requests before join, join twice, with fresh sockets."""
        for _ in range(count // 10):
            sock = await self.open(room)
            if sock is None:
                continue
            for method in self.rng.sample(list(TEMPLATES), 9):
                await sock.request(method, self.payload(sock, method))
            await sock.sync()
            await sock.close()

    async def closing_frames(self, room: str, count: int) -> None:
        """Frames that end the connection: not JSON, binary, too deep, far too large."""
        makers = [
            lambda s: s.send_text(self.rng.choice(["{", "nul", "[1,", "\x00", "{'a': 1}", '{"a":1}}', "NaN]"])),
            lambda s: s.send_bytes(self.rng.randbytes(self.rng.randint(0, 64))),
            lambda s: s.send_text("[" * self.rng.choice([33, 500, 990, 5000, 100_000])),
            lambda s: s.send_text('{"request":true,"id":1,"method":"join","data":' + "{" * 2000 + "}" * 2000 + "}"),
            lambda s: s.send_text("x" * (MAX_FRAME * 4 + 10)),
            lambda s: s.send_frame(b'{"a": "\xff\xfe"}', aiohttp.WSMsgType.TEXT),
            lambda s: s.send_frame(b"\xed\xa0\x80", aiohttp.WSMsgType.TEXT),  # an encoded surrogate
            lambda s: s.send_frame(b"more", aiohttp.WSMsgType.CONTINUATION),
        ]
        for _ in range(count):
            sock = await self.open(room)
            if sock is None:
                continue
            await self.rng.choice(makers)(sock)
            await asyncio.wait_for(asyncio.shield(sock.reader), 10)
            await sock.close()

    async def oversize(self, sock: FuzzSocket, count: int) -> None:
        """Requests over SIGNALING_MAX_FRAME_BYTES (413) and appData too large or deep (400)."""
        for _ in range(count):
            roll = self.rng.random()
            if roll < 0.4:
                await sock.request("join", {"displayName": "x", "pad": "y" * (MAX_FRAME + 10)})
            elif roll < 0.7:
                data = self.payload(sock, "produce")
                data["appData"] = {"big": "z" * 5000}
                await sock.request("produce", data)
            else:
                deep: Any = "leaf"
                for _ in range(self.rng.randint(9, 31)):
                    deep = {"d": deep}
                data = self.payload(sock, "produce")
                data["appData"] = deep
                await sock.request("produce", data)

    async def churn(self, count: int) -> None:
        """Peers join fresh rooms, produce, consume and leave (cleanly or not)."""
        for round_ in range(count // 12):
            room = f"churn{round_ % 7}"
            socks = [s for s in [await self.joined(room) for _ in range(2)] if s is not None]
            for sock in socks:
                send = sock.data["T"][0] if sock.data["T"] else "T"
                await sock.request("produce", {"transportId": send, "kind": "audio", "rtpParameters": OPUS}, wait=True)
            for sock in socks:
                await sock.sync()
                await sock.close()

    async def idle(self, count: int) -> list[FuzzSocket]:
        """Sockets that never join (closed by the join timeout), each in its own room."""
        idle = []
        for index in range(count):
            sock = await self.open(f"idle{index}")
            if sock is not None:
                idle.append(sock)
        return idle

    async def aborted_upgrades(self, count: int) -> None:
        """TCP connections reset after (part of) the upgrade request, before the 101."""
        for index in range(count):
            path = self.server.ws_url(f"abort{index % 5}", f"a{index}").split(str(self.server.port), 1)[1]
            request = (
                f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: protoo\r\n\r\n"
            ).encode()
            _, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
            writer.write(request[: self.rng.choice([len(request), len(request) // 2])])
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            self.tally.sent += 1


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


#: Error lines of the native worker itself (``throwing MediaSoupError: ssrc already
#: exists``): mediasoup's own log of a request it refused, which the client got as a 400.
WORKER_LOG = "workers.channel"


@pytest.fixture
def captured() -> Iterator[list[str]]:
    """Tracebacks logged by loguru or by stdlib logging (asyncio, aiohttp), and error
    lines of the control plane (a client's input is logged as a warning at most)."""
    found: list[str] = []

    def sink(message: Any) -> None:
        record = message.record
        if record["exception"] is not None or (record["level"].no >= logging.ERROR and record["name"] != WORKER_LOG):
            found.append(str(message))

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info or record.levelno >= logging.ERROR:
                found.append(self.format(record) + (f"\n{record.exc_info[1]!r}" if record.exc_info else ""))

    sink_id = logger.add(sink, level="DEBUG", format="{level} {name}:{line} {message}", backtrace=False)
    handler = Handler()
    logging.getLogger().addHandler(handler)
    try:
        yield found
    finally:
        logger.remove(sink_id)
        logging.getLogger().removeHandler(handler)


async def test_signaling_fuzz(tmp_path: Path, captured: list[str]) -> None:
    rng = random.Random(SEED)
    async with running_server(
        tmp_path,
        signaling_max_frame_bytes=MAX_FRAME,
        signaling_join_timeout_seconds=1.0,
        signaling_requests_per_second=2000,
        signaling_request_burst=400,
        # join/leave churn and idle sockets, all from 127.0.0.1 (per-client limits: test_limits_per_client)
        max_connections_per_ip=1_000_000,
        connections_per_second_per_ip=100_000,
        connection_burst_per_ip=1_000_000,
        max_recordings=0,  # startRecording is fuzzed too: refused (429) before any FFmpeg starts
    ) as server:
        fuzz = Fuzzer(server, rng)
        anchors = [s for s in [await fuzz.joined(f"fz{index}") for index in range(3)] if s is not None]
        assert len(anchors) == 3
        for sock in anchors:  # something to consume, so that the server sends requests
            send = sock.data["T"][0]
            await sock.request("produce", {"transportId": send, "kind": "audio", "rtpParameters": OPUS}, wait=True)
        pids = [w.pid for w in server.pool.workers]

        share = MESSAGES // 10
        idle = await fuzz.idle(20)
        for sock in anchors:
            await fuzz.wrong_types(sock, share)
            await fuzz.injections(sock, share)
            await sock.sync()
        await fuzz.protoo_shapes(anchors[0], share)
        await fuzz.oversize(anchors[1], share // 5)
        await fuzz.flood(anchors[2], 600)
        for sock in anchors:
            await sock.sync()
        await fuzz.out_of_order("fz0", 300)
        await fuzz.closing_frames("fz1", 150)
        await fuzz.churn(240)
        await fuzz.aborted_upgrades(40)
        while fuzz.tally.sent < MESSAGES:
            await fuzz.wrong_types(anchors[0], 500)
            await anchors[0].sync()

        # The idle sockets were closed by the join timeout, with their rooms.
        await asyncio.gather(*(asyncio.wait_for(asyncio.shield(s.reader), 10) for s in idle))
        for sock in fuzz.sockets:
            if not sock.closed:
                await sock.close()
            else:
                await sock.session.close()

        rooms_leaked = 0
        try:
            await eventually(lambda: not server.rooms.rooms, timeout=10)
        except AssertionError:
            rooms_leaked = len(server.rooms.rooms)
        routers_left = sum(len(w.routers) for w in server.pool.workers)
        workers_alive = [w.pid for w in server.pool.workers if not w.closed]
        for pid in workers_alive:
            os.kill(pid, 0)
        crashes = len(fuzz.tally.crashes) + len(set(pids) - set(workers_alive))
        tracebacks = len(captured)
        print(
            f"fuzz: {fuzz.tally.sent} messages, {crashes} crashes, {rooms_leaked} rooms leaked, {tracebacks} tracebacks"
            f" (seed {SEED}; answers {dict(fuzz.tally.codes.most_common(12))}; closes {dict(fuzz.tally.closes)})"
        )
        assert fuzz.tally.sent >= MESSAGES
        assert not fuzz.tally.crashes, fuzz.tally.crashes[:5]
        assert workers_alive == pids
        assert rooms_leaked == 0 and routers_left == 0, (list(server.rooms.rooms), routers_left)
        assert tracebacks == 0, "\n".join(captured[:5])
        assert fuzz.tally.codes[429] > 0 and fuzz.tally.codes[400] > 0 and fuzz.tally.codes[413] > 0

        # A legitimate two-peer call still works.
        alice = await ProtooClient.connect(server.ws_url("after", "alice"))
        bob = await ProtooClient.connect(server.ws_url("after", "bob"))
        try:
            a = await setup_peer(alice, display_name="Alice")
            await setup_peer(bob, display_name="Bob")
            await alice.request("produce", {"transportId": a["send"]["id"], "kind": "audio", "rtpParameters": OPUS})
            await alice.request("produce", {"transportId": a["send"]["id"], "kind": "video", "rtpParameters": VP8})
            await eventually(lambda: bob.count("newConsumer", kind="request") == 2)
            await eventually(lambda: len(server.rooms.rooms["after"].peers["bob"].consumers) == 2)
        finally:
            await alice.close()
            await bob.close()
        await eventually(lambda: not server.rooms.rooms)
        assert not captured, "\n".join(captured[:5])

"""A seeded REST fuzzer (issue 15): every route of the app, with bad input of every kind.

For every route the app registers (found from its router, so a new route is fuzzed
too): path parameters that are real ids, unknown ids, path traversal (plain,
percent-encoded, doubly encoded), NUL and control characters, huge and non-UTF-8
ids; query strings with wrong types; bodies that are not JSON, JSON that is not an
object, objects with every field of a real body replaced by a value of another type,
deeply nested JSON, a body over the size limit, random bytes, under every content
type. No answer may be a 500, no traceback may be logged, the server and its workers
stay up, and no room is left behind. Prints ``rest fuzz: N requests, C 500s, T tracebacks``.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yarl

from tests.e2e.harness import Server, running_server
from tests.e2e.protoo_client import ProtooClient
from tests.integration.signaling.conftest import DTLS, OPUS, SCTP_CAPS, setup_peer
from tests.integration.test_fuzz_signaling import VALUES, captured  # noqa: F401 (fixture)
from tests.polling import eventually

pytestmark = pytest.mark.timeout(120)

SEED = int(os.environ.get("FUZZ_SEED", "1515"))

IDS = [
    "nope",
    "..",
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f",
    "%00",
    "a%00b",
    "%0d%0aSet-Cookie:%20x=1",
    "%ff%fe",
    "%e2%80%ae",
    "x" * 5000,
    "$where",
    "*",
    "%7B%7D",
    "room%20x",
]
BODIES: list[bytes] = [
    b"",
    b"{nope",
    b"[]",
    b"null",
    b'"x"',
    b"1e999",
    b"NaN",
    b'{"a": NaN}',
    b"[" * 5000,
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
    b"\xff\xfe\x00garbage",
    b'{"id": "\\ud800", "displayName": "\\u0000"}',
]
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    None,
    "application/x-www-form-urlencoded",
    "application/octet-stream",
]
QUERIES = [
    {},
    {"limit": "-1"},
    {"limit": "abc"},
    {"limit": "9" * 40},
    {"before": "junk"},
    {"producerId": "../x"},
    {"dataProducerId": "\x00"},
    {"token": "eyJhbGciOiJub25lIn0.e30."},
    {"code": "x", "state": "y"},
    {"roomId": "../../", "peerId": "\u202e"},
]


def templates(caps: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Real bodies of the routes that take one, by the route's last path segment."""
    return {
        "broadcasters": {"id": "fz", "displayName": "F", "device": {"name": "x"}, "rtpCapabilities": caps},
        "transports": {"type": "webrtc", "sctpCapabilities": SCTP_CAPS, "comedia": True, "rtcpMux": False},
        "connect": {"dtlsParameters": DTLS},
        "plain": {"ip": "127.0.0.1", "port": 9, "rtcpPort": 10},
        "producers": {"kind": "audio", "rtpParameters": OPUS},
        "consume": {"paused": True},
        "data": {"label": "l", "protocol": "p", "sctpStreamParameters": {"streamId": 1, "ordered": True}},
        "google": {"credential": "x", "g_csrf_token": "y"},
    }


def mutate(body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    if copy and rng.random() < 0.85:
        copy[rng.choice(list(copy))] = rng.choice(VALUES)
    else:
        copy[rng.choice(["x", "__proto__", "$set", "\u202e"])] = rng.choice(VALUES)
    return copy


class RestFuzzer:
    def __init__(self, server: Server, http: aiohttp.ClientSession, rng: random.Random) -> None:
        self.server = server
        self.http = http
        self.rng = rng
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []

    async def send(self, method: str, path: str, body: bytes | None, content_type: str | None, query: Any) -> None:
        url = yarl.URL(self.server.base_url + path, encoded=True)
        if query:
            url = url.with_query(query)
        headers = {"Content-Type": content_type} if content_type else {}
        self.sent += 1
        try:
            async with self.http.request(method, url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                self.statuses[resp.status] += 1
                if resp.status >= 500 and resp.status != 503:
                    self.errors.append(f"{method} {path[:120]} -> {resp.status}")
        except aiohttp.ClientError as error:
            self.errors.append(f"{method} {path[:120]} -> {error!r}")

    def fill(self, canonical: str, ids: dict[str, str], bad: bool) -> str:
        path = canonical
        for name in ("roomId", "broadcasterId", "transportId", "meetingId", "key"):
            token = "{" + name + "}"
            if token in path:
                value = self.rng.choice(IDS) if bad else quote(ids.get(name, "nope"), safe="")
                path = path.replace(token, value)
        return path

    async def route(self, method: str, canonical: str, ids: dict[str, str], bodies: dict[str, dict[str, Any]]) -> None:
        """Every bad body and every bad id at least once, then random combinations."""
        template = bodies.get(canonical.rstrip("/").rsplit("/", 1)[-1])
        good = self.fill(canonical, ids, bad=False)
        has_body = method in ("POST", "PUT", "DELETE", "PATCH")
        for raw in BODIES if has_body else [None]:
            await self.send(method, good, raw, self.rng.choice(CONTENT_TYPES), {})
        if template is not None:
            for _ in range(12):
                await self.send(method, good, json.dumps(mutate(template, self.rng)).encode(), "application/json", {})
        if "{" in canonical:
            for value in IDS:
                path = good
                for name in ("roomId", "broadcasterId", "transportId", "meetingId", "key"):
                    if "{" + name + "}" in canonical and self.rng.random() < 0.7:
                        path = path.replace(quote(ids.get(name, "nope"), safe=""), value, 1)
                real = json.dumps(template).encode() if template is not None and has_body else None
                await self.send(method, path, real, "application/json", {})
        for _ in range(12):
            path = self.fill(canonical, ids, bad=self.rng.random() < 0.5)
            query = self.rng.choice(QUERIES)
            body: bytes | None = None
            content_type = self.rng.choice(CONTENT_TYPES)
            if method in ("POST", "PUT", "DELETE", "PATCH"):
                roll = self.rng.random()
                if template is not None and roll < 0.5:
                    body = json.dumps(mutate(template, self.rng)).encode()
                    content_type = "application/json"
                elif roll < 0.9:
                    body = self.rng.choice(BODIES)
                else:
                    body = self.rng.randbytes(self.rng.randint(1, 512))
            await self.send(method, path, body, content_type, query)
        if method in ("POST", "PUT"):  # far over every body limit
            await self.send(method, self.fill(canonical, ids, bad=False), b"[" + b"1," * 2_000_000 + b"1]", None, {})


async def test_rest_fuzz(tmp_path: Path, captured: list[str]) -> None:  # noqa: F811 (fixture)
    rng = random.Random(SEED)
    # Every request comes from 127.0.0.1: the per-client limits (tested in
    # test_limits_per_client) are raised so that each fuzzed request reaches its route.
    unlimited = {
        "rest_requests_per_second_per_ip": 100_000,
        "rest_request_burst_per_ip": 1_000_000,
        "broadcasters_per_minute_per_ip": 1_000_000,
    }
    async with running_server(tmp_path, max_recordings=0, **unlimited) as server:
        alice = await ProtooClient.connect(server.ws_url("r", "alice"))
        try:
            a = await setup_peer(alice)
            await alice.request("produce", {"transportId": a["send"]["id"], "kind": "audio", "rtpParameters": OPUS})
            async with aiohttp.ClientSession() as http:
                base = f"{server.base_url}/rooms/r/broadcasters"
                body = {"id": "b", "displayName": "B", "device": {"name": "x"}, "rtpCapabilities": a["caps"]}
                async with http.post(base, json=body) as resp:
                    assert resp.status == 200, await resp.text()
                async with http.post(f"{base}/b/transports", json={"type": "plain", "comedia": True}) as resp:
                    transport = (await resp.json())["id"]
                ids = {"roomId": "r", "broadcasterId": "b", "transportId": transport, "meetingId": "m1", "key": "k"}
                fuzz = RestFuzzer(server, http, rng)
                bodies = templates(a["caps"])
                routes = sorted(
                    {(r.method, r.resource.canonical) for r in server.app.router.routes() if r.resource is not None}
                )
                assert len(routes) >= 30, routes
                for method, canonical in routes:
                    if method == "GET" and canonical in ("/", "/ws"):
                        continue  # the signaling upgrade: fuzzed by test_fuzz_signaling
                    await fuzz.route(method, canonical, ids, bodies)
                for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/api/..%2f..%2fetc/passwd", "//etc"):
                    await fuzz.send("GET", path, None, None, {})
        finally:
            await alice.close()
        await eventually(lambda: not server.rooms.rooms, timeout=10)
        workers = [w for w in server.pool.workers if not w.closed]
        print(
            f"rest fuzz: {fuzz.sent} requests over {len(routes)} routes, {len(fuzz.errors)} 500s, "
            f"{len(captured)} tracebacks (seed {SEED}; statuses {dict(fuzz.statuses.most_common())})"
        )
        assert not fuzz.errors, fuzz.errors[:10]
        assert not captured, "\n".join(captured[:5])
        assert len(workers) == 2
        assert fuzz.statuses[413] > 0 and fuzz.statuses[400] > 0

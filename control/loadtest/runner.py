"""``parley load-test``: many real WebRTC peers against a Parley server, then a report.

Publishers join first (each replays the pre-encoded clip: audio, and video unless
``--audio-only``, with ``--simulcast`` as three layers of one producer; with
``--publishers-subscribe`` they also receive each other, as in a meeting), then subscribers (receive-only, counting packets without decoding),
``--join-concurrency`` at a time. After ``--duration`` seconds of steady state every
peer leaves and the tool prints one row per published track (what its subscribers
received) and the summary line. It ends in bounded time: joins and requests time out
(``--timeout``), and a first connection is tried before anyone else joins, so an
unreachable URL or a refused token fails within seconds with one clear line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TextIO
from urllib.parse import urlencode, urlsplit

import aiohttp

from control.loadtest.clip import RESOLUTIONS, SIMULCAST_LAYERS, Clip, encode_clip
from control.loadtest.peer import LoadPeer, enlarge_receive_buffers
from control.loadtest.replay import ReplayTrack
from control.loadtest.signaling import ProtooClient, SignalingError
from control.loadtest.stats import TrackCounter, percentile

__all__ = ["LoadTestError", "LoadTestOptions", "LoadTestReport", "check_target", "run_load_test"]


class LoadTestError(Exception):
    """A reason to stop before or during the run; ``str()`` is one line for the operator."""


@dataclass
class LoadTestOptions:
    url: str
    room: str = "load-test"
    publishers: int = 1
    subscribers: int = 1
    rooms: int = 1
    resolution: str = "360p"
    simulcast: bool = False
    #: With simulcast: the spatial layer each subscriber asks for, in turn (empty: the top one).
    spatial_layers: tuple[int, ...] = ()
    audio_only: bool = False
    publishers_subscribe: bool = False
    duration: float = 10.0
    api_key: str | None = None
    api_secret: str | None = None
    allow_remote: bool = False
    join_concurrency: int = 10
    timeout: float = 10.0


@dataclass
class LoadTestReport:
    """The outcome: the peers (with their counters) and the measuring window."""

    options: LoadTestOptions
    publishers: list[LoadPeer] = field(default_factory=list)
    subscribers: list[LoadPeer] = field(default_factory=list)
    failed_joins: list[str] = field(default_factory=list)
    window_start: float = 0.0
    window_end: float = 0.0
    clip: Clip | None = None

    @property
    def counters(self) -> list[TrackCounter]:
        """Every consumed track (subscribers', and publishers' with ``--publishers-subscribe``)."""
        return [counter for peer in (*self.publishers, *self.subscribers) for counter in peer.counters]

    @property
    def tracks(self) -> int:
        return sum(peer.produced for peer in self.publishers)

    @property
    def loss(self) -> float:
        """Lost / expected packets over every consumer (0..1)."""
        windows = [c.window for c in self.counters]
        expected = sum(w.expected for w in windows)
        return sum(w.lost for w in windows) / expected if expected else math.nan

    def join_times(self) -> list[float]:
        return [p.join_seconds for p in (*self.publishers, *self.subscribers) if p.join_seconds is not None]

    def first_packet_times(self) -> list[float]:
        return [
            counter.first_at - peer.started_at
            for peer in (*self.publishers, *self.subscribers)
            for counter in peer.counters
            if counter.first_at is not None
        ]

    def summary_line(self) -> str:
        joins = self.join_times()
        firsts = self.first_packet_times()
        bitrate = sum(c.bitrate(self.window_end) for c in self.counters)
        return (
            f"load-test: {len(self.publishers)} publishers, {len(self.subscribers)} subscribers, "
            f"{self.tracks} tracks, join p50/p99 {_ms(percentile(joins, 0.5))}/{_ms(percentile(joins, 0.99))}, "
            f"first packet p50/p99 {_ms(percentile(firsts, 0.5))}/{_ms(percentile(firsts, 0.99))}, "
            f"bitrate {bitrate / 1e6:.2f} Mbps received, loss {_pct(self.loss)}"
            + (f", {len(self.failed_joins)} joins failed" if self.failed_joins else "")
        )

    def table(self) -> str:
        """One row per published track: what its subscribers received in the steady-state window
        (after every peer joined, until the end of ``--duration``), averaged per subscriber."""
        rows: dict[tuple[str, str, int], list[TrackCounter]] = {}
        for counter in self.counters:
            layer = -1 if counter.preferred_layer is None else counter.preferred_layer
            rows.setdefault((counter.publisher, counter.kind, layer), []).append(counter)
        header = ("track", "subscribers", "packets", "kbps/sub", "loss", "key frames/sub", "size", "layer")
        lines = [header]
        for (publisher, kind, preferred), counters in sorted(rows.items()):
            windows = [c.window for c in counters]
            expected = sum(w.expected for w in windows)
            lost = sum(w.lost for w in windows)
            lines.append(
                (
                    f"{publisher}/{kind}" + (f" (layer {preferred} asked)" if preferred >= 0 else ""),
                    str(len(counters)),
                    str(sum(w.packets for w in windows)),
                    f"{sum(c.bitrate(self.window_end) for c in counters) / len(counters) / 1000:.0f}",
                    _pct(lost / expected if expected else math.nan),
                    f"{sum(w.keyframes for w in windows) / len(counters):.1f}" if kind == "video" else "-",
                    _sizes(counters),
                    _layers(counters),
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        return "\n".join(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
            for line in lines
        )


def _sizes(counters: Sequence[TrackCounter]) -> str:
    """The picture size most of each subscriber's key frames had in the window (``-`` for
    audio): a simulcast layer a subscriber held, even if the SFU switched for a moment."""
    sizes = sorted({max(c.window_sizes, key=c.window_sizes.__getitem__) for c in counters if c.window_sizes})
    return ",".join(f"{w}x{h}" for w, h in sizes) or "-"


def _layers(counters: Sequence[TrackCounter]) -> str:
    """The spatial layers the server last said it sends (simulcast consumers only)."""
    layers = sorted({c.layer for c in counters if c.layer is not None})
    return ",".join(map(str, layers)) or "-"


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.0f}ms"


def _pct(fraction: float) -> str:
    return "n/a" if math.isnan(fraction) else f"{fraction * 100:.2f}%"


# -- checks ----------------------------------------------------------------------------


def check_target(url: str, allow_remote: bool) -> None:
    """Refuse anything but a ws(s):// URL on this machine unless the operator says they own it."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise LoadTestError(f"--url must be ws://HOST:PORT or wss://HOST:PORT, not {url!r}")
    if allow_remote:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as error:
        raise LoadTestError(f"cannot resolve {parts.hostname}: {error}") from None
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
    if not addresses or not all(address.is_loopback for address in addresses):
        raise LoadTestError(
            f"{parts.hostname} is not this machine: a load test can take a server down. If you operate "
            "that server and may load it, add --allow-remote-target"
        )


def _ws_url(base: str, room: str, peer_id: str, token: str | None) -> str:
    query = {"roomId": room, "peerId": peer_id, **({"token": token} if token else {})}
    return f"{base.rstrip('/')}/?{urlencode(query)}"


class _Tokens:
    """Access tokens signed with ``--api-key``/``--api-secret`` (none without them)."""

    def __init__(self, api_key: str | None, api_secret: str | None) -> None:
        self.keys = None
        if api_key or api_secret:
            if not (api_key and api_secret):
                raise LoadTestError("--api-key and --api-secret go together")
            from pydantic import SecretStr

            from control.auth.keys import KeyRing, KeysConfigError

            try:
                self.keys = KeyRing.build(api_key, SecretStr(api_secret))
            except KeysConfigError as error:
                raise LoadTestError(str(error)) from None

    def token(self, room: str, identity: str, *, publish: bool, ttl: float) -> str | None:
        if self.keys is None:
            return None
        from control.auth import VideoGrants, mint

        grants = VideoGrants(room=room, room_join=True, can_publish=publish, can_subscribe=True)
        return mint(self.keys, identity=identity, name=identity, grants=grants, ttl=timedelta(seconds=ttl))


async def _preflight(session: aiohttp.ClientSession, url: str, timeout: float) -> None:  # noqa: ASYNC109
    """Connect once (no join): a wrong URL or a refused token fails here, in seconds."""
    try:
        client = await ProtooClient.connect(session, url, timeout)
    except aiohttp.WSServerHandshakeError as error:
        detail = {401: "token missing or refused", 403: "token does not allow this room/identity"}.get(error.status, "")
        raise LoadTestError(f"{url.split('?')[0]}: refused with HTTP {error.status} {detail}".rstrip()) from None
    except (TimeoutError, aiohttp.ClientError, OSError) as error:
        raise LoadTestError(f"cannot reach {url.split('?')[0]}: {type(error).__name__} {error}".rstrip()) from None
    try:
        await client.request("getRouterRtpCapabilities", timeout=timeout)
    except (SignalingError, ConnectionError, TimeoutError) as error:
        raise LoadTestError(f"the server did not answer signaling: {error}") from None
    finally:
        await client.close()


# -- the run ---------------------------------------------------------------------------


async def run_load_test(options: LoadTestOptions, out: TextIO = sys.stdout) -> LoadTestReport:
    """Run the test described by ``options``; the report (also printed to ``out``)."""
    _validate(options)
    check_target(options.url, options.allow_remote)
    enlarge_receive_buffers()
    tokens = _Tokens(options.api_key, options.api_secret)
    ttl = options.duration + 600
    report = LoadTestReport(options)
    rooms = [options.room] if options.rooms == 1 else [f"{options.room}-{i + 1}" for i in range(options.rooms)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        probe = _ws_url(
            options.url, rooms[0], "load-probe", tokens.token(rooms[0], "load-probe", publish=False, ttl=ttl)
        )
        await _preflight(session, probe, options.timeout)
        layered = " simulcast" if options.simulcast else ""
        print(f"load-test: encoding the {options.resolution}{layered} clip once...", file=out, flush=True)
        report.clip = clip = await asyncio.to_thread(
            encode_clip, options.resolution, audio_only=options.audio_only, simulcast=options.simulcast
        )
        feedback = not options.simulcast  # see control.loadtest.peer
        for room in rooms:
            for i in range(options.publishers):
                peer_id = f"pub-{room}-{i + 1}"
                tracks = [ReplayTrack(clip, "audio", offset=i * 7)]
                if not options.audio_only and not options.simulcast:
                    tracks.append(ReplayTrack(clip, "video"))
                layers = [ReplayTrack(clip, "video", layer=n) for n in range(len(clip.layers))]
                url = _ws_url(options.url, room, peer_id, tokens.token(room, peer_id, publish=True, ttl=ttl))
                report.publishers.append(
                    LoadPeer(
                        url,
                        peer_id,
                        tracks=tracks,
                        layers=layers,
                        subscribe=options.publishers_subscribe,
                        timeout=options.timeout,
                        bandwidth_feedback=feedback,
                    )
                )
            for i in range(options.subscribers):
                peer_id = f"sub-{room}-{i + 1}"
                url = _ws_url(options.url, room, peer_id, tokens.token(room, peer_id, publish=False, ttl=ttl))
                preferred = options.spatial_layers[i % len(options.spatial_layers)] if options.spatial_layers else None
                report.subscribers.append(
                    LoadPeer(
                        url,
                        peer_id,
                        tracks=[],
                        subscribe=True,
                        timeout=options.timeout,
                        preferred_layer=preferred,
                        bandwidth_feedback=feedback,
                    )
                )
        try:
            await _join_all(session, report, report.publishers, options, out)
            await _join_all(session, report, report.subscribers, options, out)
            await _settle(report, options, out)
            report.window_start = time.monotonic()
            for counter in report.counters:
                counter.mark()
            print(f"load-test: all joined, measuring for {options.duration:g}s...", file=out, flush=True)
            await asyncio.sleep(options.duration)
            report.window_end = time.monotonic()
            for counter in report.counters:
                counter.end()
            print("load-test: measured, leaving...", file=out, flush=True)
        finally:
            if not report.window_end:
                report.window_end = time.monotonic()
            await _close_all([*report.subscribers, *report.publishers])
    print(report.table(), file=out)
    print(report.summary_line(), file=out, flush=True)
    return report


def _validate(options: LoadTestOptions) -> None:
    if options.resolution not in RESOLUTIONS:
        raise LoadTestError(f"--video-resolution must be one of {', '.join(RESOLUTIONS)}")
    if options.simulcast and (options.audio_only or options.resolution not in SIMULCAST_LAYERS):
        raise LoadTestError(f"--simulcast needs video at {' or '.join(SIMULCAST_LAYERS)} (not --audio-only)")
    if options.spatial_layers and not options.simulcast:
        raise LoadTestError("--spatial-layer needs --simulcast")
    top = len(SIMULCAST_LAYERS.get(options.resolution, ())) - 1
    if any(not 0 <= layer <= top for layer in options.spatial_layers):
        raise LoadTestError(f"--spatial-layer: layers are 0 (lowest) to {top}")
    if (
        options.publishers < 0
        or options.subscribers < 0
        or options.rooms < 1
        or options.publishers + options.subscribers < 1
    ):
        raise LoadTestError("--publishers and --subscribers must be >= 0 (one of them > 0), --rooms >= 1")
    if options.duration <= 0 or options.join_concurrency < 1 or options.timeout <= 0:
        raise LoadTestError("--duration, --timeout and --join-concurrency must be positive")


async def _join_all(
    session: aiohttp.ClientSession,
    report: LoadTestReport,
    peers: Sequence[LoadPeer],
    options: LoadTestOptions,
    out: TextIO,
) -> None:
    gate = asyncio.Semaphore(options.join_concurrency)

    async def join(peer: LoadPeer) -> None:
        async with gate:
            try:
                async with asyncio.timeout(options.timeout * 3):
                    await peer.join(session)
            except (TimeoutError, SignalingError, aiohttp.ClientError, ConnectionError, OSError) as error:
                report.failed_joins.append(peer.peer_id)
                print(f"load-test: {peer.peer_id} did not join: {type(error).__name__} {error}", file=out, flush=True)

    await asyncio.gather(*(join(peer) for peer in peers))
    if peers and len(report.failed_joins) == len(peers):
        raise LoadTestError(f"no peer could join ({report.failed_joins[0]}...): see the messages above")


#: Once every consumer exists and has media, this long before the window opens (the last
#: renegotiations of the receiving peers finish).
SETTLE_SECONDS = 1.0


async def _settle(report: LoadTestReport, options: LoadTestOptions, out: TextIO) -> None:
    """Wait (at most ``--timeout``) until every receiving peer has a consumer with media for
    every track it should get, on the spatial layer it asked for (``--spatial-layer``, else
    the top one): a join is answered before the server's ``newConsumer`` requests, and the
    renegotiations and layer switches they cause are not the steady state."""
    tracks = 1 if options.audio_only else 2
    publishers = options.publishers
    expected = [
        (peer, tracks * (publishers - 1 if peer in report.publishers else publishers))
        for peer in (*report.publishers, *report.subscribers)
        if peer.subscribe and peer.joined_at is not None
    ]
    top = len(report.clip.layers) - 1 if report.clip is not None else 0

    def on_layer(counter: TrackCounter) -> bool:
        if counter.consumer_type != "simulcast":
            return True
        return counter.spatial_layer == (top if counter.preferred_layer is None else counter.preferred_layer)

    deadline = time.monotonic() + options.timeout
    while time.monotonic() < deadline:
        if all(len([c for c in peer.counters if c.first_at is not None]) >= n for peer, n in expected) and all(
            on_layer(c) for c in report.counters
        ):
            break
        await asyncio.sleep(0.1)
    else:
        print("load-test: not every consumer had media (on its layer) in time; measuring anyway", file=out, flush=True)
    await asyncio.sleep(SETTLE_SECONDS)


async def _close_all(peers: Sequence[LoadPeer]) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)

"""One load-test participant: a real WebRTC peer (pymediasoup + aiortc: ICE, DTLS, SRTP).

A publisher has only a sending transport and replays the clip
(:class:`~control.loadtest.replay.ReplayTrack`); a subscriber has only a receiving
transport and counts what arrives (:class:`~control.loadtest.stats.TrackCounter`)
instead of decoding it: each consumer's ``RTCRtpReceiver._handle_rtp_packet`` is
replaced by the counter, so no jitter buffer, depacketizer or decoder runs (aiortc
1.x; ``tests/e2e/test_load_tool.py`` fails if a release changes that method).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiortc.mediastreams import MediaStreamTrack
from pymediasoup import AiortcHandler, Device
from pymediasoup.rtp_parameters import RtpCapabilities

from control.loadtest.signaling import ProtooClient
from control.loadtest.stats import TrackCounter

__all__ = ["LoadPeer"]


class LoadPeer:
    def __init__(
        self, url: str, peer_id: str, *, tracks: Sequence[MediaStreamTrack], subscribe: bool, timeout: float
    ) -> None:
        self.url = url
        self.peer_id = peer_id
        self.tracks = list(tracks)
        self.subscribe = subscribe
        self.timeout = timeout
        self.protoo: ProtooClient | None = None
        self.send_transport: Any = None
        self.recv_transport: Any = None
        self.counters: list[TrackCounter] = []
        self.started_at = 0.0
        self.joined_at: float | None = None
        self._consumers: list[Any] = []
        self._consume_lock = asyncio.Lock()

    @property
    def join_seconds(self) -> float | None:
        return None if self.joined_at is None else self.joined_at - self.started_at

    async def _request(self, method: str, data: dict[str, Any] | None = None) -> Any:
        assert self.protoo is not None
        return await self.protoo.request(method, data, timeout=self.timeout)

    async def join(self, session: aiohttp.ClientSession) -> None:
        """Connect, create the transport(s), join, produce every track."""
        self.started_at = time.monotonic()
        self.protoo = await ProtooClient.connect(session, self.url, self.timeout)
        self.protoo.on_request = self._on_server_request
        caps = await self._request("getRouterRtpCapabilities")
        device = Device(handlerFactory=AiortcHandler.createFactory(tracks=self.tracks))
        await device.load(RtpCapabilities(**caps))
        if self.tracks:
            self.send_transport = await self._transport(device, producing=True)
        if self.subscribe:
            self.recv_transport = await self._transport(device, producing=False)
        await self._request(
            "join",
            {
                "displayName": self.peer_id,
                "device": {"flag": "parley-load-test", "name": "aiortc", "version": "1"},
                "rtpCapabilities": device.rtpCapabilities.model_dump(exclude_none=True),
                "sctpCapabilities": None,
            },
        )
        self.joined_at = time.monotonic()
        for track in self.tracks:
            await self.send_transport.produce(track=track, stopTracks=False, appData={})

    async def _transport(self, device: Any, *, producing: bool) -> Any:
        info = await self._request(
            "createWebRtcTransport",
            {"forceTcp": False, "producing": producing, "consuming": not producing, "sctpCapabilities": None},
        )
        create = device.createSendTransport if producing else device.createRecvTransport
        transport = create(
            id=info["id"],
            iceParameters=info["iceParameters"],
            iceCandidates=info["iceCandidates"],
            dtlsParameters=info["dtlsParameters"],
            sctpParameters=info["sctpParameters"],
        )

        @transport.on("connect")
        async def on_connect(dtlsParameters: Any) -> None:
            await self._request(
                "connectWebRtcTransport",
                {"transportId": transport.id, "dtlsParameters": dtlsParameters.model_dump(exclude_none=True)},
            )

        @transport.on("produce")
        async def on_produce(kind: str, rtpParameters: Any, appData: dict[str, Any]) -> str:
            result = await self._request(
                "produce",
                {
                    "transportId": transport.id,
                    "kind": kind,
                    "rtpParameters": rtpParameters.model_dump(exclude_none=True),
                    "appData": appData,
                },
            )
            return str(result["id"])

        return transport

    async def _on_server_request(self, method: str, data: dict[str, Any]) -> dict[str, Any]:
        if method != "newConsumer" or self.recv_transport is None:
            return {}
        async with self._consume_lock:
            consumer = await self.recv_transport.consume(
                id=data["id"],
                producerId=data["producerId"],
                kind=data["kind"],
                rtpParameters=data["rtpParameters"],
                appData=data.get("appData"),
            )
        counter = TrackCounter(
            publisher=str(data.get("peerId", "?")),
            kind=data["kind"],
            payload_type=int(data["rtpParameters"]["codecs"][0]["payloadType"]),
        )
        receiver = next(
            (t.receiver for t in self.recv_transport.handler.pc.getTransceivers() if t.mid == consumer.localId), None
        )
        if receiver is None:
            raise RuntimeError(f"no RTCRtpReceiver for consumer {consumer.id} (mid {consumer.localId})")
        _count_instead_of_decoding(receiver, counter)
        self.counters.append(counter)
        self._consumers.append(consumer)
        return {}

    async def close(self) -> None:
        for transport in (self.send_transport, self.recv_transport):
            if transport is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(transport.close(), 5)
        for track in self.tracks:
            track.stop()
        if self.protoo is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.protoo.close(), 5)


def _count_instead_of_decoding(receiver: Any, counter: TrackCounter) -> None:
    """Route the receiver's RTP packets to ``counter`` (see the module doc)."""

    async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
        counter.add(packet.payload_type, packet.sequence_number, packet.payload)

    receiver._handle_rtp_packet = handle_rtp_packet

"""One load-test participant: a real WebRTC peer (pymediasoup + aiortc: ICE, DTLS, SRTP).

A publisher has only a sending transport and replays the clip
(:class:`~control.loadtest.replay.ReplayTrack`); a subscriber has only a receiving
transport and counts what arrives (:class:`~control.loadtest.stats.TrackCounter`)
instead of decoding it: each consumer's ``RTCRtpReceiver._handle_rtp_packet`` is
replaced by the counter, so no jitter buffer, depacketizer or decoder runs (aiortc
1.x; ``tests/e2e/test_load_tool.py`` fails if a release changes that method).

Simulcast (aiortc cannot send it: one encoding per sender): a publisher sends each
pre-encoded layer on its own transceiver of the one send transport, so on its own SSRC,
and asks the server for ONE producer whose ``encodings`` are those SSRCs, lowest layer
first (:func:`simulcast_parameters`). mediasoup's RtpListener finds a packet's producer
by SSRC before it looks at the MID, and the producer maps each SSRC to its encoding, so
the three senders' packets become the producer's three spatial layers. The subscribers
of a simulcast run do not offer bandwidth feedback (:func:`without_bandwidth_feedback`):
they skip aiortc's receive pipeline, so they would never send the REMB they advertise
and the SFU would hold them at its initial estimate (1 Mbps, below a 720p layer); without
it the SFU sends each consumer its preferred layer (the top one unless it asks).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import aioice.turn
from aiortc.mediastreams import MediaStreamTrack
from pymediasoup import AiortcHandler, Device
from pymediasoup.rtp_parameters import RtpCapabilities

from control.loadtest.signaling import ProtooClient
from control.loadtest.stats import TrackCounter

__all__ = [
    "RECEIVE_BUFFER_BYTES",
    "LoadPeer",
    "enlarge_receive_buffers",
    "simulcast_parameters",
    "without_bandwidth_feedback",
]

#: SO_RCVBUF asked for every peer's UDP socket (the kernel caps it at ``net.core.rmem_max``).
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024

#: The appData key of a layer's local produce() (never sent to the server).
_LAYER = "parleySimulcastLayer"
#: What a receiver that runs no bandwidth estimator must not offer.
_FEEDBACK_EXTENSIONS = (
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
)
_FEEDBACK_TYPES = ("goog-remb", "transport-cc")


class LoadPeer:
    """``tracks`` are produced one producer each; ``layers`` (simulcast video, lowest
    first) as one producer. A subscriber with ``preferred_layer`` asks for that spatial
    layer of every simulcast consumer; with ``bandwidth_feedback`` off it does not offer
    REMB/transport-cc (see the module doc)."""

    def __init__(
        self,
        url: str,
        peer_id: str,
        *,
        tracks: Sequence[MediaStreamTrack],
        subscribe: bool,
        timeout: float,
        layers: Sequence[MediaStreamTrack] = (),
        preferred_layer: int | None = None,
        bandwidth_feedback: bool = True,
    ) -> None:
        self.url = url
        self.peer_id = peer_id
        self.tracks = list(tracks)
        self.layers = list(layers)
        self.subscribe = subscribe
        self.timeout = timeout
        self.preferred_layer = preferred_layer
        self.bandwidth_feedback = bandwidth_feedback
        self.protoo: ProtooClient | None = None
        self.send_transport: Any = None
        self.recv_transport: Any = None
        self.counters: list[TrackCounter] = []
        self.started_at = 0.0
        self.joined_at: float | None = None
        self._consumers: list[Any] = []
        self._consume_lock = asyncio.Lock()
        self._layer_parameters: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def produced(self) -> int:
        """Producers this peer asks the server for (the simulcast layers are one)."""
        return len(self.tracks) + (1 if self.layers else 0)

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
        self.protoo.on_notification = self._on_notification
        caps = await self._request("getRouterRtpCapabilities")
        device = Device(handlerFactory=AiortcHandler.createFactory(tracks=[*self.tracks, *self.layers]))
        await device.load(RtpCapabilities(**caps))
        rtp_capabilities = device.rtpCapabilities.model_dump(exclude_none=True)
        if not self.bandwidth_feedback:
            rtp_capabilities = without_bandwidth_feedback(rtp_capabilities)
        if self.tracks or self.layers:
            self.send_transport = await self._transport(device, producing=True)
        if self.subscribe:
            self.recv_transport = await self._transport(device, producing=False)
        await self._request(
            "join",
            {
                "displayName": self.peer_id,
                "device": {"flag": "parley-load-test", "name": "aiortc", "version": "1"},
                "rtpCapabilities": rtp_capabilities,
                "sctpCapabilities": None,
            },
        )
        self.joined_at = time.monotonic()
        for track in self.tracks:
            await self.send_transport.produce(track=track, stopTracks=False, appData={})
        for index, track in enumerate(self.layers):
            await self.send_transport.produce(track=track, stopTracks=False, appData={_LAYER: index})

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
            parameters = rtpParameters.model_dump(exclude_none=True)
            if _LAYER in appData:
                # A simulcast layer: the server gets one producer once every layer has its sender.
                self._layer_parameters.append(parameters)
                if len(self._layer_parameters) < len(self.layers):
                    return f"local-layer-{appData[_LAYER]}"
                parameters, appData = simulcast_parameters(self._layer_parameters), {}
            result = await self._request(
                "produce",
                {"transportId": transport.id, "kind": kind, "rtpParameters": parameters, "appData": appData},
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
            consumer_id=str(data["id"]),
            consumer_type=str(data.get("type", "simple")),
        )
        receiver = next(
            (t.receiver for t in self.recv_transport.handler.pc.getTransceivers() if t.mid == consumer.localId), None
        )
        if receiver is None:
            raise RuntimeError(f"no RTCRtpReceiver for consumer {consumer.id} (mid {consumer.localId})")
        _count_instead_of_decoding(receiver, counter)
        self.counters.append(counter)
        self._consumers.append(consumer)
        if counter.consumer_type == "simulcast" and self.preferred_layer is not None:
            # After this answer: the server creates the consumer before asking, and waits for it.
            counter.preferred_layer = self.preferred_layer
            task = asyncio.ensure_future(self._prefer_layer(counter))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return {}

    async def _prefer_layer(self, counter: TrackCounter) -> None:
        with contextlib.suppress(Exception):  # the run reports what arrived; a refusal shows there
            await self._request(
                "setConsumerPreferredLayers",
                {"consumerId": counter.consumer_id, "spatialLayer": counter.preferred_layer},
            )

    def _on_notification(self, method: str, data: dict[str, Any]) -> None:
        if method != "consumerLayersChanged":
            return
        for counter in self.counters:
            if counter.consumer_id == data.get("consumerId"):
                layer = data.get("spatialLayer")
                counter.spatial_layer = layer if isinstance(layer, int) else None

    async def close(self) -> None:
        for transport in (self.send_transport, self.recv_transport):
            if transport is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await transport.close()
        for task in self._tasks:
            task.cancel()
        for track in (*self.tracks, *self.layers):
            track.stop()
        if self.protoo is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.protoo.close()


def enlarge_receive_buffers(size: int = RECEIVE_BUFFER_BYTES) -> None:
    """Have aioice ask for ``size`` bytes of receive buffer on the UDP sockets it opens
    from now on (it asks for 256 KiB, read from ``aioice.turn.UDP_SOCKET_BUFFER_SIZE`` at
    each bind).

    Why: the "join-time loss" of earlier runs was the kernel dropping datagrams at the
    load tool's sockets (``ss -uamp``: the ``d`` drop counter of the tool's sockets, the
    netns' ``Udp RcvbufErrors``), not the SFU: one event loop drives every peer, and while
    it is busy with joins (certificates, DTLS handshakes, SDP) or descheduled on a shared
    core, a 720p consumer's ~190 packets a second fill 256 KiB (about half a second of
    packets at loopback's per-packet overhead) and the rest is dropped. A larger buffer
    rides out such stalls; a tool that is short of CPU for good still loses packets."""
    aioice.turn.UDP_SOCKET_BUFFER_SIZE = max(aioice.turn.UDP_SOCKET_BUFFER_SIZE, size)


def simulcast_parameters(layers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One producer's ``rtpParameters`` from the layers' own (one sender each, lowest
    first): the first layer's codecs, header extensions, RTCP and MID, and one encoding
    per layer with its SSRC (and RTX SSRC), so mediasoup maps each sender to a layer."""
    if not layers:
        raise ValueError("no simulcast layers")
    parameters = dict(layers[0])
    encodings: list[dict[str, Any]] = []
    for layer in layers:
        (encoding,) = layer["encodings"]  # aiortc: one encoding per sender
        encodings.append({"ssrc": encoding["ssrc"], **({"rtx": encoding["rtx"]} if encoding.get("rtx") else {})})
    for encoding in encodings:
        encoding["scalabilityMode"] = "L1T1"  # one temporal layer: aiortc's VP8 carries no TID
    parameters["encodings"] = encodings
    return parameters


def without_bandwidth_feedback(rtp_capabilities: dict[str, Any]) -> dict[str, Any]:
    """``rtp_capabilities`` without REMB/transport-cc feedback and their header extensions."""
    codecs = [
        {**codec, "rtcpFeedback": [fb for fb in codec.get("rtcpFeedback", []) if fb.get("type") not in _FEEDBACK_TYPES]}
        for codec in rtp_capabilities.get("codecs", [])
    ]
    extensions = [
        ext for ext in rtp_capabilities.get("headerExtensions", []) if ext.get("uri") not in _FEEDBACK_EXTENSIONS
    ]
    return {**rtp_capabilities, "codecs": codecs, "headerExtensions": extensions}


def _count_instead_of_decoding(receiver: Any, counter: TrackCounter) -> None:
    """Route the receiver's RTP packets to ``counter`` (see the module doc)."""

    async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
        counter.add(packet.payload_type, packet.sequence_number, packet.payload)

    receiver._handle_rtp_packet = handle_rtp_packet

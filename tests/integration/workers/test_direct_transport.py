"""DirectTransport, against the real worker (after mediasoup's test-DirectTransport.ts),
plus RTP and RTCP in and out of this process: ``producer.send()``, consumer
``rtp`` events, ``send_rtcp()`` and the transport's ``rtcp`` events.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from workers.direct_transport import DirectTransport
from workers.errors import MediasoupError, MediasoupTypeError, UnsupportedError
from workers.router import Router
from workers.worker import Worker


def _once(emitter: Any, event: str) -> asyncio.Future:
    future: asyncio.Future = asyncio.get_running_loop().create_future()
    emitter.once(event, lambda *args: future.done() or future.set_result(args))
    return future


async def test_create_direct_transport_succeeds(router: Router) -> None:
    new_transports: list[Any] = []
    router.observer.once("newtransport", new_transports.append)
    transport = await router.create_direct_transport(max_message_size=1024, app_data={"foo": "bar"})
    assert (await router.dump())["transportIds"] == [transport.id]
    assert new_transports == [transport]
    assert isinstance(transport, DirectTransport)
    assert isinstance(transport.id, str) and transport.type == "direct"
    assert transport.closed is False and transport.app_data == {"foo": "bar"}
    assert transport.router.transports[transport.id] is transport

    dump = await transport.dump()
    assert dump["id"] == transport.id
    assert dump["direct"] is True
    assert dump["producerIds"] == [] and dump["consumerIds"] == []
    assert dump["dataProducerIds"] == [] and dump["dataConsumerIds"] == []
    assert dump["recvRtpHeaderExtensions"] is not None
    assert isinstance(dump["rtpListener"], dict)
    assert dump["maxSendMessageSize"] == 1024
    assert dump["maxReceiveMessageSize"] == 1024

    transport.close()
    assert transport.closed and transport.id not in router.transports


async def test_create_direct_transport_with_separate_message_sizes(router: Router) -> None:
    transport = await router.create_direct_transport(max_send_message_size=1000, max_receive_message_size=2000)
    dump = await transport.dump()
    assert dump["maxSendMessageSize"] == 1000 and dump["maxReceiveMessageSize"] == 2000


async def test_create_direct_transport_with_wrong_arguments_raises_type_error(router: Router) -> None:
    with pytest.raises(MediasoupTypeError):
        await router.create_direct_transport(max_message_size="foo")  # type: ignore[arg-type]
    with pytest.raises(MediasoupTypeError):
        await router.create_direct_transport(max_message_size=-2000)
    with pytest.raises(MediasoupTypeError):
        await router.create_direct_transport(max_send_message_size=2**32)
    with pytest.raises(MediasoupTypeError):
        await router.create_direct_transport(app_data="NOT-AN-OBJECT")  # type: ignore[arg-type]
    assert (await router.dump())["transportIds"] == []


async def test_direct_transport_get_stats_succeeds(router: Router) -> None:
    transport = await router.create_direct_transport()
    stats = await transport.get_stats()
    assert isinstance(stats, list) and len(stats) == 1
    stat = stats[0]
    assert stat["type"] == "direct-transport"
    assert stat["transportId"] == transport.id
    assert isinstance(stat["timestamp"], int)
    for field in (
        "bytesReceived",
        "recvBitrate",
        "bytesSent",
        "sendBitrate",
        "rtpBytesReceived",
        "rtpRecvBitrate",
        "rtpBytesSent",
        "rtpSendBitrate",
        "rtxBytesReceived",
        "rtxRecvBitrate",
        "rtxBytesSent",
        "rtxSendBitrate",
        "probationBytesSent",
        "probationSendBitrate",
    ):
        assert stat[field] == 0, field


async def test_direct_transport_connect_succeeds(router: Router) -> None:
    transport = await router.create_direct_transport()
    assert await transport.connect() is None


async def test_direct_transport_bitrate_limits_are_unsupported(router: Router) -> None:
    transport = await router.create_direct_transport()
    with pytest.raises(UnsupportedError):
        await transport.set_max_incoming_bitrate(100_000)
    with pytest.raises(UnsupportedError):
        await transport.set_max_outgoing_bitrate(100_000)
    with pytest.raises(UnsupportedError):
        await transport.set_min_outgoing_bitrate(100_000)


# -- data ----------------------------------------------------------------------------------


async def test_data_producer_send_succeeds(router: Router) -> None:
    transport = await router.create_direct_transport()
    data_producer = await transport.produce_data(label="foo", protocol="bar", app_data={"foo": "bar"})
    data_consumer = await transport.consume_data(data_producer.id)
    num_messages = 200
    pause_sending_at, resume_sending_at = 10, 20
    pause_receiving_at, resume_receiving_at = 40, 60
    expected_received = (
        num_messages - (resume_sending_at - pause_sending_at) - (resume_receiving_at - pause_receiving_at)
    )
    received: list[tuple[bytes, int]] = []
    last = asyncio.get_running_loop().create_future()

    def on_message(message: bytes, ppid: int) -> None:
        received.append((message, ppid))
        if int(message) == num_messages:
            last.set_result(None)

    data_consumer.on("message", on_message)
    sent_bytes = effectively_sent_bytes = 0
    for message_id in range(1, num_messages + 1):
        if message_id == pause_sending_at:
            await data_producer.pause()
        elif message_id == resume_sending_at:
            await data_producer.resume()
        elif message_id == pause_receiving_at:
            await data_consumer.pause()
        elif message_id == resume_receiving_at:
            await data_consumer.resume()
        # Strings (WebRTC string PPID 51) first, then bytes (binary PPID 53).
        message: str | bytes = str(message_id) if message_id < num_messages / 2 else str(message_id).encode()
        data_producer.send(message)
        size = len(str(message_id))
        sent_bytes += size
        if not data_producer.paused and not data_consumer.paused:
            effectively_sent_bytes += size
    await asyncio.wait_for(last, 5)

    assert len(received) == expected_received
    assert sum(len(message) for message, _ in received) == effectively_sent_bytes
    for message, ppid in received:
        assert ppid == (51 if int(message) < num_messages / 2 else 53)
    producer_stats = await data_producer.get_stats()
    assert producer_stats[0]["type"] == "data-producer"
    assert producer_stats[0]["label"] == "foo" and producer_stats[0]["protocol"] == "bar"
    assert producer_stats[0]["messagesReceived"] == num_messages
    assert producer_stats[0]["bytesReceived"] == sent_bytes
    consumer_stats = await data_consumer.get_stats()
    assert consumer_stats[0]["type"] == "data-consumer"
    assert consumer_stats[0]["messagesSent"] == expected_received
    assert consumer_stats[0]["bytesSent"] == effectively_sent_bytes


async def test_data_producer_send_with_subchannels_succeeds(router: Router) -> None:
    transport = await router.create_direct_transport()
    data_producer = await transport.produce_data()
    consumer1 = await transport.consume_data(data_producer.id, subchannels=[1, 11, 666])
    consumer2 = await transport.consume_data(data_producer.id, subchannels=[2, 22, 666])
    received1: list[str] = []
    received2: list[str] = []
    done = asyncio.get_running_loop().create_future()

    def collect(into: list[str]) -> Any:
        def on_message(message: bytes, _ppid: int) -> None:
            into.append(message.decode())
            if len(received1) == 7 and len(received2) == 5 and not done.done():
                done.set_result(None)

        return on_message

    consumer1.on("message", collect(received1))
    consumer2.on("message", collect(received2))
    send = data_producer.send
    send("both")  # no subchannels: everyone
    send("both", None, [1, 2])
    send("both", None, [11, 22, 33], 666)
    send("none", None, [3], 666)
    send("none", None, [666], 3)
    send("dc1", None, [1])
    send("dc1", None, [11], 1)
    send("dc1", None, [666], 11)
    send("dc2", None, [666], 2)
    await consumer2.set_subchannels([*consumer2.subchannels, 1])
    send("both", None, [1], 666)
    await asyncio.wait_for(done, 5)
    await asyncio.sleep(0.1)
    assert len(received1) == 7 and len(received2) == 5
    assert set(received1) <= {"both", "dc1"}
    assert set(received2) <= {"both", "dc2"}


# -- RTP and RTCP ----------------------------------------------------------------------------

OPUS_PT = 111
VP8_PT = 112


def rtp_packet(seq: int, payload: bytes, payload_type: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type, seq, seq * 960, ssrc) + payload


def rtp_payload(packet: bytes) -> bytes:
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        (length,) = struct.unpack_from("!H", packet, offset + 2)
        offset += 4 + 4 * length
    return packet[offset:]


async def test_rtp_goes_from_a_direct_producer_to_a_direct_consumer(router: Router) -> None:
    send_transport = await router.create_direct_transport()
    recv_transport = await router.create_direct_transport()
    producer = await send_transport.produce(
        "audio",
        {
            "codecs": [{"mimeType": "audio/opus", "payloadType": OPUS_PT, "clockRate": 48000, "channels": 2}],
            "encodings": [{"ssrc": 1111}],
        },
    )
    consumer = await recv_transport.consume(producer.id, router.rtp_capabilities)
    assert consumer.rtp_parameters["mid"] == "0"
    received: asyncio.Queue[bytes] = asyncio.Queue()
    consumer.on("rtp", received.put_nowait)
    frames = [f"frame-{seq}".encode() * 3 for seq in range(1, 21)]
    for seq, frame in enumerate(frames, start=1):
        producer.send(rtp_packet(seq, frame, OPUS_PT, 1111))
    packets = [await asyncio.wait_for(received.get(), 5) for _ in frames]
    assert [rtp_payload(packet) for packet in packets] == frames
    assert {packet[1] & 0x7F for packet in packets} == {consumer.rtp_parameters["codecs"][0]["payloadType"]}
    assert {struct.unpack_from("!I", p, 8)[0] for p in packets} == {consumer.rtp_parameters["encodings"][0]["ssrc"]}
    stats = await send_transport.get_stats()
    assert stats[0]["rtpBytesReceived"] > 0
    with pytest.raises(MediasoupTypeError):
        producer.send("not bytes")  # type: ignore[arg-type]


async def test_rtcp_event_carries_the_key_frame_request_for_a_direct_producer(router: Router) -> None:
    """A consumer asking for a key frame makes the router send a PLI to the producer's
    endpoint: here, this process, through the DirectTransport's ``rtcp`` event."""
    send_transport = await router.create_direct_transport()
    recv_transport = await router.create_direct_transport()
    producer = await send_transport.produce(
        "video",
        {
            "codecs": [
                {
                    "mimeType": "video/VP8",
                    "payloadType": VP8_PT,
                    "clockRate": 90000,
                    "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}],
                }
            ],
            "encodings": [{"ssrc": 2222}],
        },
    )
    rtcp_packets: asyncio.Queue[bytes] = asyncio.Queue()
    send_transport.on("rtcp", rtcp_packets.put_nowait)
    # A VP8 key frame start: payload descriptor (S=1, PID=0), then a key frame header.
    vp8_key_frame = bytes([0x10, 0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) + b"\x00" * 20
    for seq in range(1, 6):
        producer.send(rtp_packet(seq, vp8_key_frame, VP8_PT, 2222))
    await asyncio.sleep(0.1)
    consumer = await recv_transport.consume(producer.id, router.rtp_capabilities)
    await consumer.request_key_frame()

    deadline = asyncio.get_running_loop().time() + 5
    while True:
        timeout = deadline - asyncio.get_running_loop().time()
        packet = await asyncio.wait_for(rtcp_packets.get(), max(timeout, 0.01))
        if _find_pli(packet, 2222):
            break


def _find_pli(compound: bytes, media_ssrc: int) -> bool:
    """Whether an RTCP compound packet holds a PLI (PSFB, FMT 1) for ``media_ssrc``."""
    offset = 0
    while offset + 12 <= len(compound):
        fmt, packet_type = compound[offset] & 0x1F, compound[offset + 1]
        (length,) = struct.unpack_from("!H", compound, offset + 2)
        if packet_type == 206 and fmt == 1 and struct.unpack_from("!I", compound, offset + 8)[0] == media_ssrc:
            return True
        offset += 4 * (length + 1)
    return False


async def test_send_rtcp_reaches_the_transport(router: Router) -> None:
    transport = await router.create_direct_transport()
    # An empty receiver report (RR, no report blocks) from SSRC 1234.
    receiver_report = struct.pack("!BBHI", 0x80, 201, 1, 1234)
    transport.send_rtcp(receiver_report)
    stats = await transport.get_stats()
    assert stats[0]["bytesReceived"] == len(receiver_report)
    with pytest.raises(MediasoupTypeError):
        transport.send_rtcp("not bytes")  # type: ignore[arg-type]


# -- closing ------------------------------------------------------------------------------


async def test_direct_transport_methods_fail_if_closed(router: Router) -> None:
    transport = await router.create_direct_transport()
    closes: list[bool] = []
    transport.observer.once("close", lambda: closes.append(True))
    transport.close()
    transport.close()
    assert closes == [True] and transport.closed
    with pytest.raises(MediasoupError):
        await transport.dump()
    with pytest.raises(MediasoupError):
        await transport.get_stats()


async def test_direct_transport_close_closes_its_producers_and_consumers(router: Router) -> None:
    send_transport = await router.create_direct_transport()
    recv_transport = await router.create_direct_transport()
    producer = await send_transport.produce(
        "audio",
        {
            "codecs": [{"mimeType": "audio/opus", "payloadType": OPUS_PT, "clockRate": 48000, "channels": 2}],
            "encodings": [{"ssrc": 3333}],
        },
    )
    consumer = await recv_transport.consume(producer.id, router.rtp_capabilities)
    producer_closed = _once(producer, "transportclose")
    consumer_closed = _once(consumer, "producerclose")
    send_transport.close()
    await asyncio.wait_for(asyncio.gather(producer_closed, consumer_closed), 5)
    assert producer.closed and consumer.closed
    assert producer.id not in router.producers


async def test_direct_transport_emits_routerclose_if_router_is_closed(router: Router) -> None:
    transport = await router.create_direct_transport()
    closes: list[bool] = []
    transport.observer.once("close", lambda: closes.append(True))
    routerclose = _once(transport, "routerclose")
    router.close()
    await asyncio.wait_for(routerclose, 5)
    assert closes == [True] and transport.closed


async def test_direct_transport_emits_routerclose_if_worker_is_closed(worker: Worker, router: Router) -> None:
    transport = await router.create_direct_transport()
    closes: list[bool] = []
    transport.observer.once("close", lambda: closes.append(True))
    routerclose = _once(transport, "routerclose")
    worker.close()
    await asyncio.wait_for(routerclose, 5)
    assert closes == [True] and transport.closed

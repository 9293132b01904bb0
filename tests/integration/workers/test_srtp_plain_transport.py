"""SRTP on PlainTransports, checked against an independent libsrtp (pylibsrtp).

Our worker build replaces mediasoup's libsrtp v3 with a small shim over
Debian's libsrtp 2.5, so this is the test of that glue: for each crypto suite,
packets protected by pylibsrtp enter a producer on one PlainTransport, leave
through a consumer on another, and pylibsrtp decrypts them to the same
payloads; a tampered packet is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import pylibsrtp
import pytest

from workers.router import Router

SUITES = {
    # suite: (pylibsrtp profile, master key + salt length)
    "AES_CM_128_HMAC_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AES_CM_128_HMAC_SHA1_32": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
    "AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "AEAD_AES_256_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
}
PRODUCER_SSRC = 11111111
PAYLOAD_TYPE = 100


def rtp_packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, PAYLOAD_TYPE, seq, seq * 960, PRODUCER_SSRC) + payload


def rtp_payload(packet: bytes) -> bytes:
    """The payload of an RTP packet (skipping CSRCs and a header extension)."""
    csrc_count = packet[0] & 0x0F
    offset = 12 + 4 * csrc_count
    if packet[0] & 0x10:
        (length,) = struct.unpack_from("!H", packet, offset + 2)
        offset += 4 + 4 * length
    if packet[0] & 0x20:  # padding
        return packet[offset : len(packet) - packet[-1]]
    return packet[offset:]


def session(profile: int, key: bytes, outbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=profile,
    )
    return pylibsrtp.Session(policy=policy)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        self.packets.put_nowait(data)


@pytest.mark.parametrize("suite", list(SUITES))
async def test_srtp_round_trip_through_producer_and_consumer(router: Router, suite: str) -> None:
    profile, key_length = SUITES[suite]
    loop = asyncio.get_running_loop()

    # Sender side: we protect with our key; the worker decrypts with it (connect()).
    send_transport = await router.create_plain_transport(
        listen_info={"protocol": "udp", "ip": "127.0.0.1"}, comedia=True, enable_srtp=True, srtp_crypto_suite=suite
    )
    assert send_transport.srtp_parameters is not None
    assert send_transport.srtp_parameters["cryptoSuite"] == suite
    our_send_key = os.urandom(key_length)
    await send_transport.connect(
        srtp_parameters={"cryptoSuite": suite, "keyBase64": base64.b64encode(our_send_key).decode()}
    )
    producer = await send_transport.produce(
        "audio",
        {
            "codecs": [{"mimeType": "audio/opus", "payloadType": PAYLOAD_TYPE, "clockRate": 48000, "channels": 2}],
            "encodings": [{"ssrc": PRODUCER_SSRC}],
        },
    )

    # Receiver side: the worker protects with its own key, which we use to decrypt.
    receiver = _Receiver()
    udp, _ = await loop.create_datagram_endpoint(lambda: receiver, local_addr=("127.0.0.1", 0))
    recv_port = udp.get_extra_info("sockname")[1]
    recv_transport = await router.create_plain_transport(
        listen_info={"protocol": "udp", "ip": "127.0.0.1"}, enable_srtp=True, srtp_crypto_suite=suite
    )
    await recv_transport.connect(
        ip="127.0.0.1",
        port=recv_port,
        srtp_parameters={"cryptoSuite": suite, "keyBase64": base64.b64encode(os.urandom(key_length)).decode()},
    )
    consumer = await recv_transport.consume(producer.id, router.rtp_capabilities)
    assert recv_transport.srtp_parameters is not None
    worker_key = base64.b64decode(recv_transport.srtp_parameters["keyBase64"])
    assert len(worker_key) == key_length

    protect = session(profile, our_send_key, outbound=True)
    unprotect = session(profile, worker_key, outbound=False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = (send_transport.tuple["localAddress"], send_transport.tuple["localPort"])
    try:
        payloads = [bytes([seq]) * 40 + f"packet-{seq}".encode() for seq in range(1, 21)]
        for seq, payload in enumerate(payloads, start=1):
            sender.sendto(protect.protect(rtp_packet(seq, payload)), target)
            await asyncio.sleep(0.005)
        received: list[bytes] = []
        while len(received) < len(payloads):
            packet = await asyncio.wait_for(receiver.packets.get(), 5)
            if 64 <= (packet[1] & 0x7F) <= 95:
                continue  # RTCP
            clear = unprotect.unprotect(packet)
            assert struct.unpack_from("!I", clear, 8)[0] == consumer.rtp_parameters["encodings"][0]["ssrc"]
            received.append(rtp_payload(clear))
        assert received == payloads

        # A packet whose ciphertext was altered fails authentication in the worker and is dropped.
        tampered = bytearray(protect.protect(rtp_packet(100, b"tampered" * 5)))
        tampered[20] ^= 0xFF
        sender.sendto(bytes(tampered), target)
        genuine = b"after-tampering" * 3
        sender.sendto(protect.protect(rtp_packet(101, genuine)), target)
        while True:
            packet = await asyncio.wait_for(receiver.packets.get(), 5)
            if 64 <= (packet[1] & 0x7F) <= 95:
                continue
            assert rtp_payload(unprotect.unprotect(packet)) == genuine  # the tampered one never came out
            break
    finally:
        sender.close()
        udp.close()

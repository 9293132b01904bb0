"""A WebRtcTransport completes a real ICE + DTLS handshake with an independent client.

The client is aiortc's ORTC-style ICE and DTLS stack (its own OpenSSL
bindings), not ours. This is also the regression test for the DtlsTransport
patch of the native build: an unpatched worker built against Debian's
kernel-TLS-enabled OpenSSL mishandles BIO control callbacks during the
handshake.
"""

from __future__ import annotations

import asyncio

from aiortc import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    RTCIceCandidate,
    RTCIceGatherer,
    RTCIceParameters,
    RTCIceTransport,
)

from workers.router import Router
from workers.worker import Worker


def _state_reached(transport, event: str, wanted: str) -> asyncio.Future:
    """A future resolved when ``event`` reports ``wanted`` (listening starts now)."""
    reached: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_change(state: str) -> None:
        if state == wanted and not reached.done():
            reached.set_result(state)

    transport.on(event, on_change)
    return reached


async def test_dtls_handshake_with_aiortc_reaches_connected(worker: Worker, router: Router) -> None:
    transport = await router.create_webrtc_transport(listen_infos=[{"protocol": "udp", "ip": "127.0.0.1"}])
    assert transport.dtls_state == "new" and transport.ice_state == "new"
    assert transport.ice_parameters["iceLite"] is True
    [candidate] = transport.ice_candidates
    assert candidate["protocol"] == "udp" and candidate["address"] == "127.0.0.1"

    gatherer = RTCIceGatherer()
    await gatherer.gather()
    ice = RTCIceTransport(gatherer)
    # A full ICE agent facing an ICE-lite one must be controlling (RFC 8445 6.1.1).
    # aiortc's ORTC objects leave the role to its RTCPeerConnection, which sets
    # this same attribute; we do what it does.
    ice._connection.ice_controlling = True
    dtls = RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()])
    # The worker is the DTLS server, so it is the side that receives a
    # ClientHello (what crashed the unpatched build). aiortc picks its DTLS role
    # from its ICE role unless told, as its RTCPeerConnection does, with _set_role.
    dtls._set_role("client")
    local = dtls.getLocalParameters()

    ice_connected = _state_reached(transport, "icestatechange", "completed")
    dtls_connected = _state_reached(transport, "dtlsstatechange", "connected")
    await transport.connect(
        dtls_parameters={
            "role": "client",
            "fingerprints": [{"algorithm": f.algorithm, "value": f.value} for f in local.fingerprints],
        }
    )
    assert transport.dtls_parameters["role"] == "server"

    await ice.addRemoteCandidate(
        RTCIceCandidate(
            component=1,
            foundation=candidate["foundation"],
            ip=candidate["address"],
            port=candidate["port"],
            priority=candidate["priority"],
            protocol="udp",
            type="host",
        )
    )
    await ice.addRemoteCandidate(None)
    params = transport.ice_parameters
    remote_fingerprints = [
        RTCDtlsFingerprint(algorithm=f["algorithm"], value=f["value"])
        for f in transport.dtls_parameters["fingerprints"]
    ]
    try:
        # As aiortc's RTCPeerConnection does: ICE first, then DTLS over it.
        await asyncio.wait_for(
            ice.start(
                RTCIceParameters(usernameFragment=params["usernameFragment"], password=params["password"], iceLite=True)
            ),
            timeout=10,
        )
        await asyncio.wait_for(ice_connected, timeout=10)
        await asyncio.wait_for(dtls.start(RTCDtlsParameters(fingerprints=remote_fingerprints, role="server")), 10)
        await asyncio.wait_for(dtls_connected, timeout=10)
        assert transport.dtls_state == "connected"
        assert dtls.state == "connected"
        assert transport.dtls_remote_cert and "BEGIN CERTIFICATE" in transport.dtls_remote_cert
        assert transport.ice_selected_tuple is not None
        assert transport.ice_selected_tuple["protocol"] == "udp"
        stats = (await transport.get_stats())[0]
        assert stats["dtlsState"] == "connected" and stats["bytesReceived"] > 0
        # The worker survived the handshake and still answers requests.
        assert (await worker.dump())["pid"] == worker.pid
        assert not worker.died
    finally:
        await dtls.stop()
        await ice.stop()

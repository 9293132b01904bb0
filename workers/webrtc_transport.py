"""ICE + DTLS transport to a WebRTC endpoint (mediasoup's ``WebRtcTransport``).

Events: ``icestatechange``, ``iceselectedtuplechange``, ``dtlsstatechange``,
``sctpstatechange``, ``trace``, plus the base transport's.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from workers.errors import MediasoupTypeError
from workers.fbs import FBS  # noqa: F401
from workers.fbs_utils import (
    DTLS_ROLE,
    DTLS_STATE,
    FINGERPRINT_ALGORITHM,
    ICE_CANDIDATE_TYPE,
    ICE_STATE,
    body_as,
    enum_values,
    str_or_none,
    to_dict,
    unpack,
)
from workers.transport import Transport, parse_base_dump
from workers.wire import as_wire

import FBS.Notification.Event as FbsEvent  # noqa: E402
import FBS.Request.Body as FbsRequestBody  # noqa: E402
import FBS.Request.Method as FbsMethod  # noqa: E402
import FBS.Transport.RestartIceResponse as FbsRestartIceResponse  # noqa: E402
import FBS.Transport.SctpNegotiatedCapabilitiesNotification as FbsSctpNegotiated  # noqa: E402
import FBS.WebRtcTransport.ConnectRequest as FbsConnectRequest  # noqa: E402
import FBS.WebRtcTransport.ConnectResponse as FbsConnectResponse  # noqa: E402
import FBS.WebRtcTransport.DtlsParameters as FbsDtlsParameters  # noqa: E402
import FBS.WebRtcTransport.DtlsRole as FbsDtlsRole  # noqa: E402
import FBS.WebRtcTransport.DtlsStateChangeNotification as FbsDtlsStateChange  # noqa: E402
import FBS.WebRtcTransport.DumpResponse as FbsDumpResponse  # noqa: E402
import FBS.WebRtcTransport.Fingerprint as FbsFingerprint  # noqa: E402
import FBS.WebRtcTransport.FingerprintAlgorithm as FbsFingerprintAlgorithm  # noqa: E402
import FBS.WebRtcTransport.GetStatsResponse as FbsGetStatsResponse  # noqa: E402
import FBS.WebRtcTransport.IceSelectedTupleChangeNotification as FbsIceTupleChange  # noqa: E402
import FBS.WebRtcTransport.IceStateChangeNotification as FbsIceStateChange  # noqa: E402

_ALGORITHMS = {name: value for value, name in FINGERPRINT_ALGORITHM.items()}
_ROLES = enum_values(FbsDtlsRole.DtlsRole)


def parse_webrtc_transport_dump(dump_t: Any) -> dict[str, Any]:
    """mediasoup's ``parseWebRtcTransportDumpResponse``: the transport's data."""
    dump = to_dict(dump_t)
    base = parse_base_dump(dump_t.base)
    dump.pop("base", None)
    candidates = []
    for candidate, raw in zip(dump.get("iceCandidates") or [], dump_t.iceCandidates or []):
        # As mediasoup's parseIceCandidate: ``ip`` is the deprecated alias of ``address``.
        parsed = {"foundation": candidate["foundation"], "priority": candidate["priority"],
                  "ip": candidate["address"], **candidate}
        parsed["type"] = ICE_CANDIDATE_TYPE.get(raw.type, raw.type)
        if parsed.get("tcpType") is None:
            parsed.pop("tcpType", None)
        candidates.append(parsed)
    dump["iceCandidates"] = candidates
    return {**base, **dump}


def build_dtls_parameters(builder: Any, dtls_parameters: Any) -> int:
    params = as_wire(dtls_parameters)
    if not isinstance(params, dict) or not isinstance(params.get("fingerprints"), list) or not params["fingerprints"]:
        raise MediasoupTypeError("dtlsParameters must have a non empty fingerprints array")
    offsets = []
    for fingerprint in params["fingerprints"]:
        algorithm = _ALGORITHMS.get(str(fingerprint.get("algorithm", "")).lower())
        if algorithm is None or not isinstance(fingerprint.get("value"), str):
            raise MediasoupTypeError(f"invalid DTLS fingerprint {fingerprint!r}")
        value = builder.CreateString(fingerprint["value"])
        FbsFingerprint.Start(builder)
        FbsFingerprint.AddAlgorithm(builder, algorithm)
        FbsFingerprint.AddValue(builder, value)
        offsets.append(FbsFingerprint.End(builder))
    FbsDtlsParameters.StartFingerprintsVector(builder, len(offsets))
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    fingerprints = builder.EndVector()
    role = params.get("role", "auto")
    if role not in _ROLES:
        raise MediasoupTypeError(f"invalid DTLS role {role!r}")
    FbsDtlsParameters.Start(builder)
    FbsDtlsParameters.AddFingerprints(builder, fingerprints)
    FbsDtlsParameters.AddRole(builder, _ROLES[role])
    return FbsDtlsParameters.End(builder)


class WebRtcTransport(Transport):
    type = "webrtc"

    @property
    def ice_role(self) -> str:
        return self.data["iceRole"]

    @property
    def ice_parameters(self) -> dict[str, Any]:
        return self.data["iceParameters"]

    @property
    def ice_candidates(self) -> list[dict[str, Any]]:
        return self.data["iceCandidates"]

    @property
    def ice_state(self) -> str:
        return self.data["iceState"]

    @property
    def ice_selected_tuple(self) -> dict[str, Any] | None:
        return self.data.get("iceSelectedTuple")

    @property
    def dtls_parameters(self) -> dict[str, Any]:
        return self.data["dtlsParameters"]

    @property
    def dtls_state(self) -> str:
        return self.data["dtlsState"]

    @property
    def dtls_remote_cert(self) -> str | None:
        return self.data.get("dtlsRemoteCert")

    def _mark_closed_states(self) -> None:
        self.data.update(iceState="closed", iceSelectedTuple=None, dtlsState="closed")
        if self.data.get("sctpState"):
            self.data["sctpState"] = "closed"

    def close(self) -> None:
        if not self.closed:
            self._mark_closed_states()
        super().close()

    def router_closed(self) -> None:
        if not self.closed:
            self._mark_closed_states()
        super().router_closed()

    def listen_server_closed(self) -> None:
        if not self.closed:
            self._mark_closed_states()
        super().listen_server_closed()

    async def dump(self) -> dict[str, Any]:
        response = await self.request(FbsMethod.Method.TRANSPORT_DUMP)
        return parse_webrtc_transport_dump(
            unpack(response, FbsDumpResponse.DumpResponse, FbsDumpResponse.DumpResponseT)
        )

    async def get_stats(self) -> list[dict[str, Any]]:
        response = await self.request(FbsMethod.Method.TRANSPORT_GET_STATS)
        stats_t = unpack(response, FbsGetStatsResponse.GetStatsResponse, FbsGetStatsResponse.GetStatsResponseT)
        stats = to_dict(stats_t)
        base = stats.pop("base", {}) or {}
        return [{"type": "webrtc-transport", **base, **stats}]

    async def connect(self, dtls_parameters: Any) -> None:  # type: ignore[override]
        """Give the remote DTLS parameters; our role is answered by the worker."""
        builder = self.channel.builder
        try:
            params = build_dtls_parameters(builder, dtls_parameters)
        except MediasoupTypeError:
            builder.Clear()
            raise
        FbsConnectRequest.Start(builder)
        FbsConnectRequest.AddDtlsParameters(builder, params)
        response = await self.request(
            FbsMethod.Method.WEBRTCTRANSPORT_CONNECT,
            FbsRequestBody.Body.WebRtcTransport_ConnectRequest,
            FbsConnectRequest.End(builder),
        )
        role = body_as(response, FbsConnectResponse.ConnectResponse).DtlsLocalRole()
        self.data["dtlsParameters"]["role"] = DTLS_ROLE[role]

    async def restart_ice(self) -> dict[str, Any]:
        response = await self.request(FbsMethod.Method.TRANSPORT_RESTART_ICE)
        body = body_as(response, FbsRestartIceResponse.RestartIceResponse)
        params = {
            "usernameFragment": str_or_none(body.UsernameFragment()),
            "password": str_or_none(body.Password()),
            "iceLite": body.IceLite(),
        }
        self.data["iceParameters"] = params
        return params

    def _on_specific_notification(self, event: int, notification: Any) -> None:
        Event = FbsEvent.Event
        if event == Event.WEBRTCTRANSPORT_ICE_STATE_CHANGE:
            state = ICE_STATE[body_as(notification, FbsIceStateChange.IceStateChangeNotification).IceState()]
            self.data["iceState"] = state
            self.safe_emit("icestatechange", state)
            self.observer.safe_emit("icestatechange", state)
        elif event == Event.WEBRTCTRANSPORT_ICE_SELECTED_TUPLE_CHANGE:
            body = FbsIceTupleChange.IceSelectedTupleChangeNotificationT.InitFromObj(
                body_as(notification, FbsIceTupleChange.IceSelectedTupleChangeNotification)
            )
            selected = to_dict(body.tuple)
            self.data["iceSelectedTuple"] = selected
            self.safe_emit("iceselectedtuplechange", selected)
            self.observer.safe_emit("iceselectedtuplechange", selected)
        elif event == Event.WEBRTCTRANSPORT_DTLS_STATE_CHANGE:
            body = body_as(notification, FbsDtlsStateChange.DtlsStateChangeNotification)
            state = DTLS_STATE[body.DtlsState()]
            self.data["dtlsState"] = state
            if state == "connected":
                self.data["dtlsRemoteCert"] = str_or_none(body.RemoteCert())
            self.safe_emit("dtlsstatechange", state)
            self.observer.safe_emit("dtlsstatechange", state)
        elif event == Event.TRANSPORT_SCTP_NEGOTIATED_CAPABILITIES:
            body = body_as(notification, FbsSctpNegotiated.SctpNegotiatedCapabilitiesNotification)
            caps = body.NegotiatedCapabilities()
            self.data["sctpNegotiatedCapabilities"] = {
                "negotiatedMaxOutboundStreams": caps.NegotiatedMaxOutboundStreams(),
                "negotiatedMaxInboundStreams": caps.NegotiatedMaxInboundStreams(),
            }
        else:
            logger.error("ignoring unknown WebRtcTransport event {}", event)

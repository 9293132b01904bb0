"""ICE + DTLS transport to a WebRTC endpoint (mediasoup's ``WebRtcTransport``).

Events: ``icestatechange``, ``iceselectedtuplechange``, ``dtlsstatechange``,
``sctpstatechange``, ``trace``, plus the base transport's.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from workers import fbs_reader as fr
from workers.errors import MediasoupTypeError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_blob import Blob, Fragment, table_layout
from workers.fbs_utils import (
    DTLS_ROLE,
    DTLS_STATE,
    ENUM_FIELDS,
    FINGERPRINT_ALGORITHM,
    ICE_CANDIDATE_TYPE,
    ICE_ROLE,
    ICE_STATE,
    PROTOCOL,
    body_as,
    enum_values,
    str_or_none,
    to_dict,
)
from workers.transport import BASE_DUMP, BASE_STATS, TUPLE, Transport, parse_base_dump
from workers.wire import as_wire

import FBS.Notification.Event as FbsEvent
import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod
import FBS.Transport.RestartIceResponse as FbsRestartIceResponse
import FBS.WebRtcTransport.DtlsRole as FbsDtlsRole
import FBS.WebRtcTransport.DtlsStateChangeNotification as FbsDtlsStateChange
import FBS.WebRtcTransport.IceSelectedTupleChangeNotification as FbsIceTupleChange
import FBS.WebRtcTransport.IceStateChangeNotification as FbsIceStateChange

_ALGORITHMS = {name: value for value, name in FINGERPRINT_ALGORITHM.items()}
_ROLES = enum_values(FbsDtlsRole.DtlsRole)


def parse_webrtc_transport_dump(dump_t: Any) -> dict[str, Any]:
    """mediasoup's ``parseWebRtcTransportDumpResponse`` on the object API.

    The channel reads dumps with ``read_webrtc_transport_dump`` (the same
    result, several times faster); this is the reference it is tested against.
    """
    dump = to_dict(dump_t)
    base = parse_base_dump(dump_t.base)
    dump.pop("base", None)
    candidates = []
    for candidate, raw in zip(dump.get("iceCandidates") or [], dump_t.iceCandidates or [], strict=False):
        # As mediasoup's parseIceCandidate: ``ip`` is the deprecated alias of ``address``.
        parsed = {
            "foundation": candidate["foundation"],
            "priority": candidate["priority"],
            "ip": candidate["address"],
            **candidate,
        }
        parsed["type"] = ICE_CANDIDATE_TYPE.get(raw.type, raw.type)
        if parsed.get("tcpType") is None:
            parsed.pop("tcpType", None)
        candidates.append(parsed)
    dump["iceCandidates"] = candidates
    return {**base, **dump}


# -- direct readers (``fbs_reader``): field names, slots and defaults from webRtcTransport.fbs


def _ice_candidate_json(fields: dict[str, Any]) -> dict[str, Any]:
    """mediasoup's ``parseIceCandidate``: ``ip`` aliases ``address``; no tcpType unless TCP."""
    candidate = {"foundation": fields["foundation"], "priority": fields["priority"], "ip": fields["address"], **fields}
    if candidate["tcpType"] is None:
        del candidate["tcpType"]
    return candidate


_ICE_CANDIDATE = fr.table(
    (
        ("foundation", 0, fr.string, None),
        ("priority", 1, fr.u32, 0),
        ("address", 2, fr.string, None),
        ("protocol", 3, fr.enum(PROTOCOL), PROTOCOL[1]),
        ("port", 4, fr.u16, 0),
        ("type", 5, fr.enum(ICE_CANDIDATE_TYPE), ICE_CANDIDATE_TYPE[0]),
        ("tcpType", 6, fr.enum(ENUM_FIELDS["tcpType"]), None),
    ),
    _ice_candidate_json,
)
_FINGERPRINT = (
    ("algorithm", 0, fr.enum(FINGERPRINT_ALGORITHM), FINGERPRINT_ALGORITHM[0]),
    ("value", 1, fr.string, None),
)
_DTLS_PARAMETERS = (
    ("fingerprints", 0, fr.vector(fr.table(_FINGERPRINT)), None),
    ("role", 1, fr.enum(DTLS_ROLE), DTLS_ROLE[0]),
)
_ICE_PARAMETERS = (
    ("usernameFragment", 0, fr.string, None),
    ("password", 1, fr.string, None),
    ("iceLite", 2, fr.boolean, True),
)
# FBS.WebRtcTransport.DumpResponse (base, then the WebRTC fields).
_DUMP = (
    ("base", 0, BASE_DUMP, None),
    ("iceRole", 1, fr.enum(ICE_ROLE), ICE_ROLE[0]),
    ("iceParameters", 2, fr.table(_ICE_PARAMETERS), None),
    ("iceCandidates", 3, fr.vector(_ICE_CANDIDATE), None),
    ("iceState", 4, fr.enum(ICE_STATE), ICE_STATE[0]),
    ("iceSelectedTuple", 5, TUPLE, None),
    ("dtlsParameters", 6, fr.table(_DTLS_PARAMETERS), None),
    ("dtlsState", 7, fr.enum(DTLS_STATE), DTLS_STATE[0]),
)
# FBS.WebRtcTransport.GetStatsResponse.
_STATS = (
    ("base", 0, BASE_STATS, None),
    ("iceRole", 1, fr.enum(ICE_ROLE), ICE_ROLE[0]),
    ("iceState", 2, fr.enum(ICE_STATE), ICE_STATE[0]),
    ("iceSelectedTuple", 3, TUPLE, None),
    ("dtlsState", 4, fr.enum(DTLS_STATE), DTLS_STATE[0]),
)


def read_webrtc_transport_dump(buf: bytes, position: int) -> dict[str, Any]:
    """``parse_webrtc_transport_dump`` read straight from a ``DumpResponse`` table."""
    dump = fr.decode(buf, position, _DUMP)
    base = dump.pop("base") or {}
    dump["iceCandidates"] = dump["iceCandidates"] or []
    return {**base, **dump}


def read_webrtc_transport_stats(buf: bytes, position: int) -> dict[str, Any]:
    """The stats entry of a ``GetStatsResponse`` table, as ``get_stats()`` reports it."""
    stats = fr.decode(buf, position, _STATS)
    base = stats.pop("base") or {}
    return {"type": "webrtc-transport", **base, **stats}


# ConnectRequest { dtls_parameters }, DtlsParameters { fingerprints, role },
# Fingerprint { algorithm, value }: written with ``fbs_blob`` (a connect per
# transport, and the builder costs several times more).
_CONNECT_REQUEST = table_layout(((0, "ref"),))
_DTLS_PARAMETERS_TABLE = table_layout(((0, "ref"), (1, "u8")))
_FINGERPRINT_TABLE = table_layout(((1, "ref"), (0, "u8")))


def build_connect_request(dtls_parameters: Any) -> Fragment:
    """A ``WebRtcTransport.ConnectRequest`` body for the remote ``dtls_parameters``."""
    params = as_wire(dtls_parameters)
    if not isinstance(params, dict) or not isinstance(params.get("fingerprints"), list) or not params["fingerprints"]:
        raise MediasoupTypeError("dtlsParameters must have a non empty fingerprints array")
    fingerprints = []
    for fingerprint in params["fingerprints"]:
        algorithm = _ALGORITHMS.get(str(fingerprint.get("algorithm", "")).lower())
        if algorithm is None or not isinstance(fingerprint.get("value"), str):
            raise MediasoupTypeError(f"invalid DTLS fingerprint {fingerprint!r}")
        fingerprints.append((algorithm, fingerprint["value"]))
    role = params.get("role", "auto")
    if role not in _ROLES:
        raise MediasoupTypeError(f"invalid DTLS role {role!r}")
    blob = Blob()
    request = blob.table(_CONNECT_REQUEST, (0,))
    dtls = blob.table(_DTLS_PARAMETERS_TABLE, (0, _ROLES[role]))
    blob.patch(request + _CONNECT_REQUEST.ref_positions[0], dtls)
    vector = blob.ref_vector(len(fingerprints))
    blob.patch(dtls + _DTLS_PARAMETERS_TABLE.ref_positions[0], vector)
    for index, (algorithm, value) in enumerate(fingerprints):
        table = blob.table(_FINGERPRINT_TABLE, (0, algorithm))
        blob.patch_vector(vector, index, table)
        blob.patch(table + _FINGERPRINT_TABLE.ref_positions[0], blob.string(value))
    return blob.as_fragment(request)


class WebRtcTransport(Transport):
    type = "webrtc"

    @property
    def ice_role(self) -> str:
        value: str = self.data["iceRole"]
        return value

    @property
    def ice_parameters(self) -> dict[str, Any]:
        value: dict[str, Any] = self.data["iceParameters"]
        return value

    @property
    def ice_candidates(self) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self.data["iceCandidates"]
        return value

    @property
    def ice_state(self) -> str:
        value: str = self.data["iceState"]
        return value

    @property
    def ice_selected_tuple(self) -> dict[str, Any] | None:
        return self.data.get("iceSelectedTuple")

    @property
    def dtls_parameters(self) -> dict[str, Any]:
        value: dict[str, Any] = self.data["dtlsParameters"]
        return value

    @property
    def dtls_state(self) -> str:
        value: str = self.data["dtlsState"]
        return value

    @property
    def dtls_remote_cert(self) -> str | None:
        return self.data.get("dtlsRemoteCert")

    def _mark_closed(self) -> None:
        super()._mark_closed()
        self.data.update(iceState="closed", iceSelectedTuple=None, dtlsState="closed")

    async def dump(self) -> dict[str, Any]:
        response = await self.request(FbsMethod.Method.TRANSPORT_DUMP)
        return read_webrtc_transport_dump(response.buffer, response.body_position)

    async def get_stats(self) -> list[dict[str, Any]]:
        response = await self.request(FbsMethod.Method.TRANSPORT_GET_STATS)
        return [read_webrtc_transport_stats(response.buffer, response.body_position)]

    async def connect(self, dtls_parameters: Any) -> None:  # type: ignore[override]
        """Give the remote DTLS parameters; our role is answered by the worker."""
        response = await self.channel.request_fragment(
            FbsMethod.Method.WEBRTCTRANSPORT_CONNECT,
            FbsRequestBody.Body.WebRtcTransport_ConnectRequest,
            build_connect_request(dtls_parameters),
            self.id,
        )
        role = fr.scalar(response.buffer, response.body_position, 0, fr.u8, 0)  # ConnectResponse.dtls_local_role
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
            self._on_sctp_negotiated_capabilities(notification)
        else:
            logger.error("ignoring unknown WebRtcTransport event {}", event)

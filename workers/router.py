"""A router: the media switch of one room on one worker (mediasoup's ``Router``).

It owns transports and RTP observers and indexes every producer and data
producer created through its transports, so a consumer on any transport of
the router can find its producer by id.

Events: ``workerclose``. Observer: ``close``, ``newtransport``, ``newrtpobserver``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from workers import ortc
from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import InvalidStateError, MediasoupTypeError
from workers.fbs import FBS  # noqa: F401
from workers.fbs_utils import to_dict, unpack
from workers.plain_transport import PlainTransport, parse_plain_transport_dump
from workers.transport import Transport, build_base_options, build_listen_info, check_app_data
from workers.webrtc_transport import WebRtcTransport, parse_webrtc_transport_dump
from workers.wire import as_wire, clone

import FBS.PlainTransport.DumpResponse as FbsPlainDump  # noqa: E402
import FBS.PlainTransport.PlainTransportOptions as FbsPlainOptions  # noqa: E402
import FBS.Request.Body as FbsRequestBody  # noqa: E402
import FBS.Request.Method as FbsMethod  # noqa: E402
import FBS.Router.CreatePlainTransportRequest as FbsCreatePlain  # noqa: E402
import FBS.Router.CreateWebRtcTransportRequest as FbsCreateWebRtc  # noqa: E402
import FBS.Router.DumpResponse as FbsRouterDump  # noqa: E402
import FBS.WebRtcTransport.DumpResponse as FbsWebRtcDump  # noqa: E402
import FBS.WebRtcTransport.Listen as FbsListen  # noqa: E402
import FBS.WebRtcTransport.ListenIndividual as FbsListenIndividual  # noqa: E402
import FBS.WebRtcTransport.ListenServer as FbsListenServer  # noqa: E402
import FBS.WebRtcTransport.WebRtcTransportOptions as FbsWebRtcOptions  # noqa: E402

if TYPE_CHECKING:
    from workers.producer import Producer
    from workers.worker import Worker

SRTP_SUITES = ("AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")


class Router(EnhancedEventEmitter):
    def __init__(self, router_id: str, rtp_capabilities: Any, worker: "Worker", app_data: dict) -> None:
        super().__init__()
        self.id = router_id
        self.worker = worker
        self.channel = worker.channel
        self.app_data = app_data
        self.rtp_capabilities_wire: dict[str, Any] = as_wire(rtp_capabilities)
        self.closed = False
        self.observer = EnhancedEventEmitter()
        self.transports: dict[str, Transport] = {}
        self.producers: dict[str, "Producer"] = {}
        self.data_producers: dict[str, Any] = {}
        self.rtp_observers: dict[str, Any] = {}
        self.pipe_transport_pairs: dict[str, asyncio.Future] = {}

    @property
    def rtp_capabilities(self) -> dict[str, Any]:
        """The router's RTP capabilities (a copy: callers may not change ours)."""
        return clone(self.rtp_capabilities_wire)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.worker.close_router_request(self.id)
        self._close_children()
        self.emit("@close")
        self.observer.safe_emit("close")

    def worker_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._close_children()
        self.safe_emit("workerclose")
        self.observer.safe_emit("close")

    def _close_children(self) -> None:
        for transport in list(self.transports.values()):
            transport.router_closed()
        self.transports.clear()
        self.producers.clear()
        for observer in list(self.rtp_observers.values()):
            observer.router_closed()
        self.rtp_observers.clear()
        self.data_producers.clear()
        for pair in self.pipe_transport_pairs.values():
            if not pair.done():
                pair.cancel()
        self.pipe_transport_pairs.clear()

    def fire_and_forget(self, method: int, body_type: int, offset: int, handler_id: str) -> None:
        """Send a close request whose failure only matters as a log line."""
        try:
            future = self.channel.request(method, body_type, offset, handler_id)
        except InvalidStateError:
            return
        future.add_done_callback(_ignore_result)

    async def dump(self) -> dict[str, Any]:
        response = await self.channel.request(FbsMethod.Method.ROUTER_DUMP, handler_id=self.id)
        dump = to_dict(unpack(response, FbsRouterDump.DumpResponse, FbsRouterDump.DumpResponseT))
        for table in ("mapProducerIdConsumerIds", "mapConsumerIdProducerId", "mapProducerIdObserverIds",
                      "mapDataProducerIdDataConsumerIds", "mapDataConsumerIdDataProducerId"):
            if isinstance(dump.get(table), list):
                dump[table] = {item["key"]: item.get("values", item.get("value")) for item in dump[table]}
        return dump

    # -- transports ------------------------------------------------------------------

    def _register_transport(self, transport: Transport) -> None:
        self.transports[transport.id] = transport
        transport.once("@close", lambda: self.transports.pop(transport.id, None))
        transport.once("@listenserverclose", lambda: self.transports.pop(transport.id, None))
        transport.on("@newproducer", lambda producer: self.producers.__setitem__(producer.id, producer))
        transport.on("@producerclose", lambda producer: self.producers.pop(producer.id, None))
        transport.on("@newdataproducer", lambda dp: self.data_producers.__setitem__(dp.id, dp))
        transport.on("@dataproducerclose", lambda dp: self.data_producers.pop(dp.id, None))
        self.observer.safe_emit("newtransport", transport)

    def _check_open(self) -> None:
        if self.closed:
            raise InvalidStateError("Router closed")

    async def create_webrtc_transport(
        self,
        *,
        webrtc_server: Any = None,
        listen_infos: list[Any] | None = None,
        listen_ips: list[Any] | None = None,
        port: int | None = None,
        enable_udp: bool | None = None,
        enable_tcp: bool | None = None,
        prefer_udp: bool = False,
        prefer_tcp: bool = False,
        initial_available_outgoing_bitrate: int = 600_000,
        enable_sctp: bool = False,
        ice_consent_timeout: int = 30,
        app_data: dict | None = None,
        **sctp_options: int,
    ) -> WebRtcTransport:
        """Create a WebRtcTransport on a WebRtcServer or on its own listen infos."""
        self._check_open()
        given = [x for x in (webrtc_server, listen_infos, listen_ips) if x is not None]
        if not given:
            raise MediasoupTypeError("missing webRtcServer, listenInfos and listenIps (one of them is mandatory)")
        if len(given) > 1:
            raise MediasoupTypeError("only one of webRtcServer, listenInfos and listenIps must be given")
        app_data = check_app_data(app_data)
        if enable_udp is None:
            enable_udp = True
        if enable_tcp is None:
            enable_tcp = webrtc_server is not None
        if listen_ips is not None:
            listen_infos = _listen_ips_to_infos(listen_ips, port, enable_udp, enable_tcp, prefer_udp, prefer_tcp)
        transport_id = str(uuid.uuid4())
        builder = self.channel.builder
        try:
            if webrtc_server is not None:
                server_id = builder.CreateString(webrtc_server.id)
                FbsListenServer.Start(builder)
                FbsListenServer.AddWebRtcServerId(builder, server_id)
                listen_offset, listen_type = FbsListenServer.End(builder), FbsListen.Listen.ListenServer
            else:
                infos = [build_listen_info(builder, info) for info in listen_infos or []]
                FbsListenIndividual.StartListenInfosVector(builder, len(infos))
                for offset in reversed(infos):
                    builder.PrependUOffsetTRelative(offset)
                vector = builder.EndVector()
                FbsListenIndividual.Start(builder)
                FbsListenIndividual.AddListenInfos(builder, vector)
                listen_offset, listen_type = FbsListenIndividual.End(builder), FbsListen.Listen.ListenIndividual
        except MediasoupTypeError:
            builder.Clear()
            raise
        base = build_base_options(
            builder,
            initial_available_outgoing_bitrate=initial_available_outgoing_bitrate,
            enable_sctp=enable_sctp,
            is_data_channel=True,
            **sctp_options,
        )
        FbsWebRtcOptions.Start(builder)
        FbsWebRtcOptions.AddBase(builder, base)
        FbsWebRtcOptions.AddListenType(builder, listen_type)
        FbsWebRtcOptions.AddListen(builder, listen_offset)
        FbsWebRtcOptions.AddEnableUdp(builder, enable_udp)
        FbsWebRtcOptions.AddEnableTcp(builder, enable_tcp)
        FbsWebRtcOptions.AddPreferUdp(builder, prefer_udp)
        FbsWebRtcOptions.AddPreferTcp(builder, prefer_tcp)
        FbsWebRtcOptions.AddIceConsentTimeout(builder, ice_consent_timeout)
        options = FbsWebRtcOptions.End(builder)
        id_offset = builder.CreateString(transport_id)
        FbsCreateWebRtc.Start(builder)
        FbsCreateWebRtc.AddTransportId(builder, id_offset)
        FbsCreateWebRtc.AddOptions(builder, options)
        method = (FbsMethod.Method.ROUTER_CREATE_WEBRTCTRANSPORT_WITH_SERVER if webrtc_server is not None
                  else FbsMethod.Method.ROUTER_CREATE_WEBRTCTRANSPORT)
        response = await self.channel.request(
            method, FbsRequestBody.Body.Router_CreateWebRtcTransportRequest, FbsCreateWebRtc.End(builder), self.id
        )
        data = parse_webrtc_transport_dump(unpack(response, FbsWebRtcDump.DumpResponse, FbsWebRtcDump.DumpResponseT))
        transport = WebRtcTransport(transport_id, self, data, app_data)
        self._register_transport(transport)
        if webrtc_server is not None:
            webrtc_server.handle_webrtc_transport(transport)
        return transport

    async def create_plain_transport(
        self,
        *,
        listen_info: Any = None,
        rtcp_listen_info: Any = None,
        listen_ip: Any = None,
        port: int | None = None,
        rtcp_mux: bool = True,
        comedia: bool = False,
        enable_sctp: bool = False,
        enable_srtp: bool = False,
        srtp_crypto_suite: str = "AES_CM_128_HMAC_SHA1_80",
        app_data: dict | None = None,
        **sctp_options: int,
    ) -> PlainTransport:
        """Create a PlainTransport (RTP over UDP, optionally SRTP)."""
        self._check_open()
        if listen_info is None and listen_ip is None:
            raise MediasoupTypeError("missing listenInfo and listenIp (one of them is mandatory)")
        if listen_info is not None and listen_ip is not None:
            raise MediasoupTypeError("only one of listenInfo and listenIp must be given")
        if srtp_crypto_suite not in SRTP_SUITES:
            raise MediasoupTypeError(f"invalid srtpCryptoSuite {srtp_crypto_suite!r}")
        app_data = check_app_data(app_data)
        if rtcp_mux and rtcp_listen_info is not None:
            rtcp_mux = False
        if listen_ip is not None:
            ip = listen_ip if isinstance(listen_ip, dict) else {"ip": listen_ip}
            listen_info = {"protocol": "udp", "ip": ip["ip"], "announcedAddress": ip.get("announcedIp"), "port": port}
        from workers.plain_transport import SRTP_CRYPTO_SUITES

        transport_id = str(uuid.uuid4())
        builder = self.channel.builder
        try:
            listen_offset = build_listen_info(builder, listen_info)
            rtcp_offset = build_listen_info(builder, rtcp_listen_info) if rtcp_listen_info is not None else 0
        except MediasoupTypeError:
            builder.Clear()
            raise
        base = build_base_options(builder, enable_sctp=enable_sctp, **sctp_options)
        FbsPlainOptions.Start(builder)
        FbsPlainOptions.AddBase(builder, base)
        FbsPlainOptions.AddListenInfo(builder, listen_offset)
        if rtcp_offset:
            FbsPlainOptions.AddRtcpListenInfo(builder, rtcp_offset)
        FbsPlainOptions.AddRtcpMux(builder, rtcp_mux)
        FbsPlainOptions.AddComedia(builder, comedia)
        FbsPlainOptions.AddEnableSrtp(builder, enable_srtp)
        FbsPlainOptions.AddSrtpCryptoSuite(builder, SRTP_CRYPTO_SUITES[srtp_crypto_suite])
        options = FbsPlainOptions.End(builder)
        id_offset = builder.CreateString(transport_id)
        FbsCreatePlain.Start(builder)
        FbsCreatePlain.AddTransportId(builder, id_offset)
        FbsCreatePlain.AddOptions(builder, options)
        response = await self.channel.request(
            FbsMethod.Method.ROUTER_CREATE_PLAINTRANSPORT,
            FbsRequestBody.Body.Router_CreatePlainTransportRequest,
            FbsCreatePlain.End(builder),
            self.id,
        )
        data = parse_plain_transport_dump(unpack(response, FbsPlainDump.DumpResponse, FbsPlainDump.DumpResponseT))
        transport = PlainTransport(transport_id, self, data, app_data)
        self._register_transport(transport)
        return transport

    # -- capabilities ----------------------------------------------------------------

    def can_consume(self, producer_id: str, rtp_capabilities: Any) -> bool:
        """Whether an endpoint with ``rtp_capabilities`` can consume the producer."""
        producer = self.producers.get(producer_id)
        if producer is None:
            return False
        try:
            return ortc.can_consume(producer.consumable_rtp_parameters, clone(as_wire(rtp_capabilities)))
        except MediasoupTypeError:
            return False

    def __repr__(self) -> str:
        return f"<Router id={self.id} closed={self.closed}>"


def _listen_ips_to_infos(
    listen_ips: list[Any], port: int | None, enable_udp: bool, enable_tcp: bool, prefer_udp: bool, prefer_tcp: bool
) -> list[dict[str, Any]]:
    """mediasoup's legacy ``listenIps`` option expressed as listen infos, in preference order."""
    protocols: list[str] = []
    if enable_udp and (prefer_udp or not enable_tcp or not prefer_tcp):
        protocols = ["udp"] + (["tcp"] if enable_tcp else [])
    elif enable_tcp and ((prefer_tcp and not prefer_udp) or not enable_udp):
        protocols = ["tcp"] + (["udp"] if enable_udp else [])
    infos = []
    for listen_ip in listen_ips:
        ip = listen_ip if isinstance(listen_ip, dict) else {"ip": listen_ip}
        for protocol in protocols:
            infos.append({"protocol": protocol, "ip": ip["ip"], "announcedAddress": ip.get("announcedIp"), "port": port})
    return infos


def _ignore_result(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()

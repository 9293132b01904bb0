"""A router: the media switch of one room on one worker (mediasoup's ``Router``).

It owns transports and RTP observers and indexes every producer and data
producer created through its transports, so a consumer on any transport of
the router can find its producer by id.

Events: ``workerclose``. Observer: ``close``, ``newtransport``, ``newrtpobserver``.
"""

from __future__ import annotations

import asyncio
import marshal
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from loguru import logger

from workers import ortc
from workers.active_speaker_observer import ActiveSpeakerObserver
from workers.audio_level_observer import AudioLevelObserver
from workers.direct_transport import DirectTransport, parse_direct_transport_dump
from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import InvalidStateError, MediasoupError, MediasoupTypeError, NotFoundError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_blob import Blob, Fragment, builder_fragment, string_table, table_layout
from workers.fbs_utils import to_dict, unpack
from workers.pipe_transport import PipeTransport, parse_pipe_transport_dump
from workers.plain_transport import SRTP_CRYPTO_SUITES, PlainTransport, parse_plain_transport_dump
from workers.transport import SctpOptions, Transport, build_base_options, build_listen_info, check_app_data
from workers.webrtc_transport import WebRtcTransport, read_webrtc_transport_dump
from workers.wire import as_wire, clone, new_id

import FBS.ActiveSpeakerObserver.ActiveSpeakerObserverOptions as FbsActiveSpeakerOptions
import FBS.AudioLevelObserver.AudioLevelObserverOptions as FbsAudioLevelOptions
import FBS.DirectTransport.DirectTransportOptions as FbsDirectOptions
import FBS.DirectTransport.DumpResponse as FbsDirectDump
import FBS.PipeTransport.DumpResponse as FbsPipeDump
import FBS.PipeTransport.PipeTransportOptions as FbsPipeOptions
import FBS.PlainTransport.DumpResponse as FbsPlainDump
import FBS.PlainTransport.PlainTransportOptions as FbsPlainOptions
import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod
import FBS.Router.CreateActiveSpeakerObserverRequest as FbsCreateActiveSpeaker
import FBS.Router.CreateAudioLevelObserverRequest as FbsCreateAudioLevel
import FBS.Router.CreateDirectTransportRequest as FbsCreateDirect
import FBS.Router.CreatePipeTransportRequest as FbsCreatePipe
import FBS.Router.CreatePlainTransportRequest as FbsCreatePlain
import FBS.Router.DumpResponse as FbsRouterDump
import FBS.WebRtcTransport.Listen as FbsListen
import FBS.WebRtcTransport.ListenIndividual as FbsListenIndividual
import FBS.WebRtcTransport.ListenServer as FbsListenServer
import FBS.WebRtcTransport.WebRtcTransportOptions as FbsWebRtcOptions

if TYPE_CHECKING:
    from workers.channel import Channel
    from workers.producer import Producer
    from workers.rtp_observer import RtpObserver
    from workers.worker import Worker


_TransportT = TypeVar("_TransportT", bound=Transport)
_RtpObserverT = TypeVar("_RtpObserverT", bound="RtpObserver")


class Router(EnhancedEventEmitter):
    def __init__(self, router_id: str, rtp_capabilities: Any, worker: Worker, app_data: dict[str, Any]) -> None:
        super().__init__()
        self.id = router_id
        self.worker = worker
        self.channel: Channel = worker.channel
        self.app_data = app_data
        self.rtp_capabilities_wire: dict[str, Any] = as_wire(rtp_capabilities)
        self.closed = False
        self.observer = EnhancedEventEmitter()
        self.transports: dict[str, Transport] = {}
        self.producers: dict[str, Producer] = {}
        self.data_producers: dict[str, Any] = {}
        self.rtp_observers: dict[str, Any] = {}
        self.pipe_transport_pairs: dict[str, asyncio.Future[Any]] = {}

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
        # As mediasoup, only forget the pairs: a pair still being created is
        # shared with the other router and with pipe_to_router() callers, and
        # fails by itself (closing what it made) now that this router is gone.
        self.pipe_transport_pairs.clear()

    def fire_and_forget(self, method: int, body_type: int, entity_id: str, handler_id: str) -> None:
        """Ask the worker to close an entity (the body names it); a failure only matters as a log line."""
        try:
            future = self.channel.request_fragment(method, body_type, string_table(entity_id), handler_id)
        except InvalidStateError:
            return
        future.add_done_callback(_ignore_result)

    async def dump(self) -> dict[str, Any]:
        response = await self.channel.request(FbsMethod.Method.ROUTER_DUMP, handler_id=self.id)
        dump: dict[str, Any] = to_dict(unpack(response, FbsRouterDump.DumpResponse, FbsRouterDump.DumpResponseT))
        # As mediasoup's parseRouterDumpResponse: every vector is an array (never
        # absent) and the maps stay arrays of ``{key, values}`` / ``{key, value}``.
        for table in (
            "transportIds",
            "rtpObserverIds",
            "mapProducerIdConsumerIds",
            "mapConsumerIdProducerId",
            "mapProducerIdObserverIds",
            "mapDataProducerIdDataConsumerIds",
            "mapDataConsumerIdDataProducerId",
        ):
            dump[table] = dump.get(table) or []
        for table in ("mapProducerIdConsumerIds", "mapProducerIdObserverIds", "mapDataProducerIdDataConsumerIds"):
            for item in dump[table]:
                item["values"] = item.get("values") or []
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
        app_data: dict[str, Any] | None = None,
        **sctp_options: Unpack[SctpOptions],
    ) -> WebRtcTransport:
        """Create a WebRtcTransport on a WebRtcServer or on its own listen infos."""
        self._check_open()
        given = [x for x in (webrtc_server, listen_infos, listen_ips) if x is not None]
        if not given:
            raise MediasoupTypeError("missing webRtcServer, listenInfos and listenIps (one of them is mandatory)")
        if len(given) > 1:
            raise MediasoupTypeError("only one of webRtcServer, listenInfos and listenIps must be given")
        for name, value in (("listenInfos", listen_infos), ("listenIps", listen_ips)):
            if value is not None and not isinstance(value, (list, tuple)):
                raise MediasoupTypeError(f"{name} must be an array")
        app_data = check_app_data(app_data)
        if enable_udp is None:
            enable_udp = True
        if enable_tcp is None:
            enable_tcp = webrtc_server is not None
        if listen_ips is not None:
            listen_infos = _listen_ips_to_infos(listen_ips, port, enable_udp, enable_tcp, prefer_udp, prefer_tcp)
        transport_id = new_id()
        options = self._webrtc_transport_options(
            webrtc_server,
            listen_infos,
            (
                enable_udp,
                enable_tcp,
                prefer_udp,
                prefer_tcp,
                initial_available_outgoing_bitrate,
                enable_sctp,
                ice_consent_timeout,
                sctp_options,
            ),
        )
        method = (
            FbsMethod.Method.ROUTER_CREATE_WEBRTCTRANSPORT_WITH_SERVER
            if webrtc_server is not None
            else FbsMethod.Method.ROUTER_CREATE_WEBRTCTRANSPORT
        )
        response = await self.channel.request_fragment(
            method,
            FbsRequestBody.Body.Router_CreateWebRtcTransportRequest,
            _id_and_options(transport_id, options),
            self.id,
        )
        data = read_webrtc_transport_dump(response.buffer, response.body_position)
        transport = WebRtcTransport(transport_id, self, data, app_data)
        self._register_transport(transport)
        if webrtc_server is not None:
            webrtc_server.handle_webrtc_transport(transport)
        return transport

    def _webrtc_transport_options(self, webrtc_server: Any, listen_infos: Any, flags: tuple[Any, ...]) -> Fragment:
        """The ``WebRtcTransportOptions`` table, memoised by its inputs.

        A room creates its transports with the same options, and building
        the table (listen infos, base options: seven tables) is a third of
        what creating a transport costs in Python. The key is the ``marshal``
        bytes of every input, so it is exact (1, 1.0 and True differ); inputs
        that are not plain data (a pydantic listen info) are built every time.
        """
        server_id = webrtc_server.id if webrtc_server is not None else None
        try:
            key: bytes | None = marshal.dumps((server_id, listen_infos, flags), 2)
        except ValueError:
            key = None
        options = _WEBRTC_TRANSPORT_OPTIONS.get(key) if key is not None else None
        if options is None:
            builder = self.channel.builder
            try:
                offset = _build_webrtc_transport_options(builder, server_id, listen_infos, *flags)
                options = builder_fragment(builder, offset)
            finally:
                builder.Clear()
            if key is not None:
                if len(_WEBRTC_TRANSPORT_OPTIONS) >= _MAX_WEBRTC_TRANSPORT_OPTIONS:
                    _WEBRTC_TRANSPORT_OPTIONS.clear()
                _WEBRTC_TRANSPORT_OPTIONS[key] = options
        return options

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
        app_data: dict[str, Any] | None = None,
        **sctp_options: Unpack[SctpOptions],
    ) -> PlainTransport:
        """Create a PlainTransport (RTP over UDP, optionally SRTP)."""
        self._check_open()
        listen_info = _one_listen_info(listen_info, listen_ip, port)
        if srtp_crypto_suite not in SRTP_CRYPTO_SUITES:
            raise MediasoupTypeError(f"invalid srtpCryptoSuite {srtp_crypto_suite!r}")
        app_data = check_app_data(app_data)
        if rtcp_mux and rtcp_listen_info is not None:
            rtcp_mux = False
        transport_id = new_id()
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
        return await self._create_transport(
            transport_id,
            options,
            FbsCreatePlain,
            FbsMethod.Method.ROUTER_CREATE_PLAINTRANSPORT,
            FbsRequestBody.Body.Router_CreatePlainTransportRequest,
            FbsPlainDump,
            parse_plain_transport_dump,
            PlainTransport,
            app_data,
        )

    async def create_pipe_transport(
        self,
        *,
        listen_info: Any = None,
        listen_ip: Any = None,
        port: int | None = None,
        enable_sctp: bool = False,
        enable_rtx: bool = False,
        enable_srtp: bool = False,
        app_data: dict[str, Any] | None = None,
        **sctp_options: Unpack[SctpOptions],
    ) -> PipeTransport:
        """Create a PipeTransport (RTP/SCTP over UDP to another router's PipeTransport).

        ``listen_info`` is UDP only (the worker refuses TCP); ``listen_ip`` +
        ``port`` is mediasoup's deprecated form of it.
        """
        self._check_open()
        listen_info = _one_listen_info(listen_info, listen_ip, port)
        app_data = check_app_data(app_data)
        transport_id = new_id()
        builder = self.channel.builder
        try:
            listen_offset = build_listen_info(builder, listen_info)
        except MediasoupTypeError:
            builder.Clear()
            raise
        base = build_base_options(builder, enable_sctp=enable_sctp, **sctp_options)
        FbsPipeOptions.Start(builder)
        FbsPipeOptions.AddBase(builder, base)
        FbsPipeOptions.AddListenInfo(builder, listen_offset)
        FbsPipeOptions.AddEnableRtx(builder, bool(enable_rtx))
        FbsPipeOptions.AddEnableSrtp(builder, bool(enable_srtp))
        options = FbsPipeOptions.End(builder)
        return await self._create_transport(
            transport_id,
            options,
            FbsCreatePipe,
            FbsMethod.Method.ROUTER_CREATE_PIPETRANSPORT,
            FbsRequestBody.Body.Router_CreatePipeTransportRequest,
            FbsPipeDump,
            parse_pipe_transport_dump,
            PipeTransport,
            app_data,
        )

    async def create_direct_transport(
        self,
        *,
        max_send_message_size: int = 262144,
        max_receive_message_size: int = 262144,
        max_message_size: int | None = None,
        app_data: dict[str, Any] | None = None,
    ) -> DirectTransport:
        """Create a DirectTransport (media and data to and from this process).

        ``max_message_size`` is the single option of older mediasoup versions;
        given, it sets both the send and the receive limit.
        """
        self._check_open()
        if max_message_size is not None:
            max_send_message_size = max_receive_message_size = max_message_size
        for value in (max_send_message_size, max_receive_message_size):
            if not _is_uint32(value):
                raise MediasoupTypeError("if given, maxMessageSize must be a positive number")
        app_data = check_app_data(app_data)
        transport_id = new_id()
        builder = self.channel.builder
        base = build_base_options(
            builder,
            direct=True,
            max_send_message_size=max_send_message_size,
            max_receive_message_size=max_receive_message_size,
        )
        FbsDirectOptions.Start(builder)
        FbsDirectOptions.AddBase(builder, base)
        options = FbsDirectOptions.End(builder)
        return await self._create_transport(
            transport_id,
            options,
            FbsCreateDirect,
            FbsMethod.Method.ROUTER_CREATE_DIRECTTRANSPORT,
            FbsRequestBody.Body.Router_CreateDirectTransportRequest,
            FbsDirectDump,
            parse_direct_transport_dump,
            DirectTransport,
            app_data,
        )

    async def _create_transport(
        self,
        transport_id: str,
        options: int,
        create: Any,
        method: int,
        body: int,
        dump: Any,
        parse: Any,
        cls: type[_TransportT],
        app_data: dict[str, Any],
    ) -> _TransportT:
        """The end every ``create_*_transport`` shares: the create request around the
        ``options`` table just built, the dump parsed into the new transport."""
        builder = self.channel.builder
        id_offset = builder.CreateString(transport_id)
        create.Start(builder)
        create.AddTransportId(builder, id_offset)
        create.AddOptions(builder, options)
        response = await self.channel.request(method, body, create.End(builder), self.id)
        transport = cls(transport_id, self, parse(unpack(response, dump.DumpResponse, dump.DumpResponseT)), app_data)
        self._register_transport(transport)
        return transport

    # -- piping to other routers -------------------------------------------------------

    async def pipe_to_router(
        self,
        *,
        producer_id: str | None = None,
        data_producer_id: str | None = None,
        router: Router | None = None,
        keep_id: bool = True,
        listen_info: Any = None,
        listen_ip: Any = None,
        enable_sctp: bool = True,
        enable_rtx: bool = False,
        enable_srtp: bool = False,
        **sctp_options: Unpack[SctpOptions],
    ) -> dict[str, Any]:
        """Make a producer (or data producer) of this router consumable in ``router``.

        ``router`` may live on another worker: that is how a room spreads over
        CPU cores. One connected PipeTransport pair per router pair is created
        on first use and shared afterwards (whichever router asked first). The
        original is consumed on our side and produced again, with the same id
        unless ``keep_id`` is false, on the other side. Returns
        ``{"pipeConsumer", "pipeProducer"}`` or ``{"pipeDataConsumer",
        "pipeDataProducer"}``; pause, resume and close of the original reach
        the pipe producer through the pipe consumer's events.
        """
        if listen_info is None and listen_ip is None:
            listen_info = {"protocol": "udp", "ip": "127.0.0.1"}
        listen_info = _one_listen_info(listen_info, listen_ip, None)
        if not producer_id and not data_producer_id:
            raise MediasoupTypeError("missing producerId or dataProducerId")
        if producer_id and data_producer_id:
            raise MediasoupTypeError("just producerId or dataProducerId can be given")
        if router is None:
            raise MediasoupTypeError("missing router")
        if router is self:
            raise MediasoupTypeError("cannot use this Router as destination")
        producer = data_producer = None
        if producer_id:
            producer = self.producers.get(producer_id)
            if producer is None:
                raise NotFoundError("Producer not found")
        else:
            assert data_producer_id  # one of the two was checked above
            data_producer = self.data_producers.get(data_producer_id)
            if data_producer is None:
                raise NotFoundError("DataProducer not found")
        options = dict(
            listen_info=listen_info,
            enable_sctp=enable_sctp,
            enable_rtx=enable_rtx,
            enable_srtp=enable_srtp,
            **sctp_options,
        )
        local, remote = await self._pipe_transport_pair(router, options)
        if producer is not None:
            return await _pipe_producer(producer, local, remote, keep_id)
        return await _pipe_data_producer(data_producer, local, remote, keep_id)

    async def _pipe_transport_pair(
        self, router: Router, options: dict[str, Any]
    ) -> tuple[PipeTransport, PipeTransport]:
        """Our and ``router``'s PipeTransport of the pair between us, creating it if needed.

        The pair is a task registered in both routers before it runs, so
        concurrent calls from either side share it; it is awaited through
        ``shield`` so a cancelled caller cannot cancel it for the others.
        """
        key = router.id
        pair = self.pipe_transport_pairs.get(key)
        if pair is None:
            pair = asyncio.ensure_future(self._create_pipe_transport_pair(router, options))
            pair.add_done_callback(_ignore_result)
            try:
                router.add_pipe_transport_pair(self.id, pair)
            except MediasoupError:
                pair.cancel()
                raise
            self.pipe_transport_pairs[key] = pair
        transports = await asyncio.shield(pair)
        return transports[self.id], transports[router.id]

    async def _create_pipe_transport_pair(self, router: Router, options: dict[str, Any]) -> dict[str, PipeTransport]:
        """Create both PipeTransports, tie their lifetimes, and connect each to the other.

        They are tied before connecting, so that a router or worker closing
        meanwhile closes the other side too instead of leaving it orphaned.
        """
        key = router.id
        pair = asyncio.current_task()
        results = await asyncio.gather(
            self.create_pipe_transport(**options), router.create_pipe_transport(**options), return_exceptions=True
        )
        local, remote = (result if isinstance(result, PipeTransport) else None for result in results)
        try:
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            assert local is not None and remote is not None
            self._tie_pipe_transports(key, pair, local, remote)
            _check_pipe_transports_open(local, remote)
            await asyncio.gather(
                local.connect(
                    ip=remote.tuple["localAddress"],
                    port=remote.tuple["localPort"],
                    srtp_parameters=remote.srtp_parameters,
                ),
                remote.connect(
                    ip=local.tuple["localAddress"],
                    port=local.tuple["localPort"],
                    srtp_parameters=local.srtp_parameters,
                ),
            )
            _check_pipe_transports_open(local, remote)
        except BaseException as error:
            logger.error("pipe_to_router() | error creating PipeTransport pair: {!r}", error)
            for transport in (local, remote):
                if transport is not None:
                    transport.close()
            # Unlike mediasoup, which keeps the rejected promise cached, let the
            # next pipe_to_router() try again.
            self._forget_pipe_transport_pair(key, pair)
            raise
        return {self.id: local, router.id: remote}

    def _tie_pipe_transports(self, key: str, pair: Any, local: PipeTransport, remote: PipeTransport) -> None:
        """Closing either PipeTransport of a pair closes the other and forgets the pair."""

        def on_local_close() -> None:
            remote.close()
            self._forget_pipe_transport_pair(key, pair)

        def on_remote_close() -> None:
            local.close()
            self._forget_pipe_transport_pair(key, pair)

        local.observer.on("close", on_local_close)
        remote.observer.on("close", on_remote_close)

    def add_pipe_transport_pair(self, key: str, pair: asyncio.Future[Any]) -> None:
        """Share a pair that the router with id ``key`` is creating with us (mediasoup's
        ``addPipeTransportPair``); forget it when it fails or our side closes."""
        if key in self.pipe_transport_pairs:
            raise MediasoupError("given pipeTransportPairKey already exists in this Router")
        self.pipe_transport_pairs[key] = pair
        pair.add_done_callback(lambda done: self._on_shared_pipe_transport_pair(key, done))

    def _on_shared_pipe_transport_pair(self, key: str, pair: asyncio.Future[Any]) -> None:
        if pair.cancelled() or pair.exception() is not None:
            self._forget_pipe_transport_pair(key, pair)
            return
        local = pair.result()[self.id]
        if local.closed:
            self._forget_pipe_transport_pair(key, pair)
            return
        local.observer.on("close", lambda: self._forget_pipe_transport_pair(key, pair))

    def _forget_pipe_transport_pair(self, key: str, pair: Any) -> None:
        if self.pipe_transport_pairs.get(key) is pair:
            del self.pipe_transport_pairs[key]

    # -- RTP observers ---------------------------------------------------------------

    async def create_active_speaker_observer(
        self, *, interval: int = 300, app_data: dict[str, Any] | None = None
    ) -> ActiveSpeakerObserver:
        """An ActiveSpeakerObserver evaluating the dominant speaker every ``interval`` ms."""
        self._check_open()
        if not _is_number(interval):
            raise MediasoupTypeError("if given, interval must be a number")
        app_data = check_app_data(app_data)
        observer_id = new_id()
        builder = self.channel.builder
        id_offset = builder.CreateString(observer_id)
        FbsActiveSpeakerOptions.Start(builder)
        FbsActiveSpeakerOptions.AddInterval(builder, _uint16(interval))
        options = FbsActiveSpeakerOptions.End(builder)
        FbsCreateActiveSpeaker.Start(builder)
        FbsCreateActiveSpeaker.AddRtpObserverId(builder, id_offset)
        FbsCreateActiveSpeaker.AddOptions(builder, options)
        await self.channel.request(
            FbsMethod.Method.ROUTER_CREATE_ACTIVESPEAKEROBSERVER,
            FbsRequestBody.Body.Router_CreateActiveSpeakerObserverRequest,
            FbsCreateActiveSpeaker.End(builder),
            self.id,
        )
        return self._register_rtp_observer(ActiveSpeakerObserver(observer_id, self, app_data))

    async def create_audio_level_observer(
        self,
        *,
        max_entries: int = 1,
        threshold: int = -80,
        interval: int = 1000,
        app_data: dict[str, Any] | None = None,
    ) -> AudioLevelObserver:
        """An AudioLevelObserver reporting the ``max_entries`` loudest producers above
        ``threshold`` dBov every ``interval`` ms."""
        self._check_open()
        if not _is_number(max_entries) or max_entries <= 0:
            raise MediasoupTypeError("if given, maxEntries must be a positive number")
        if not _is_number(threshold) or threshold < -127 or threshold > 0:
            raise MediasoupTypeError("if given, threshold must be a negative number greater than -127")
        if not _is_number(interval):
            raise MediasoupTypeError("if given, interval must be a number")
        app_data = check_app_data(app_data)
        observer_id = new_id()
        builder = self.channel.builder
        id_offset = builder.CreateString(observer_id)
        FbsAudioLevelOptions.Start(builder)
        FbsAudioLevelOptions.AddMaxEntries(builder, _uint16(max_entries))
        FbsAudioLevelOptions.AddThreshold(builder, int(threshold))
        FbsAudioLevelOptions.AddInterval(builder, _uint16(interval))
        options = FbsAudioLevelOptions.End(builder)
        FbsCreateAudioLevel.Start(builder)
        FbsCreateAudioLevel.AddRtpObserverId(builder, id_offset)
        FbsCreateAudioLevel.AddOptions(builder, options)
        await self.channel.request(
            FbsMethod.Method.ROUTER_CREATE_AUDIOLEVELOBSERVER,
            FbsRequestBody.Body.Router_CreateAudioLevelObserverRequest,
            FbsCreateAudioLevel.End(builder),
            self.id,
        )
        return self._register_rtp_observer(AudioLevelObserver(observer_id, self, app_data))

    def _register_rtp_observer(self, rtp_observer: _RtpObserverT) -> _RtpObserverT:
        self.rtp_observers[rtp_observer.id] = rtp_observer
        rtp_observer.once("@close", lambda: self.rtp_observers.pop(rtp_observer.id, None))
        self.observer.safe_emit("newrtpobserver", rtp_observer)
        return rtp_observer

    # -- capabilities ----------------------------------------------------------------

    def update_media_codecs(self, media_codecs: list[Any]) -> None:
        """Replace the router's RTP capabilities with those of ``media_codecs`` (mediasoup's
        ``updateMediaCodecs``); existing producers and consumers are not touched."""
        self.rtp_capabilities_wire = as_wire(ortc.generate_router_rtp_capabilities(clone(as_wire(media_codecs))))

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
            infos.append(
                {"protocol": protocol, "ip": ip["ip"], "announcedAddress": ip.get("announcedIp"), "port": port}
            )
    return infos


_WEBRTC_TRANSPORT_OPTIONS: dict[bytes, Fragment] = {}
_MAX_WEBRTC_TRANSPORT_OPTIONS = 256
# CreateWebRtcTransportRequest (and the other create-transport requests): transport_id, options.
_ID_AND_OPTIONS = table_layout(((0, "ref"), (1, "ref")))


def _id_and_options(transport_id: str, options: Fragment) -> Fragment:
    """A create-transport request body: the new transport's id and its options table."""
    blob = Blob()
    position = blob.table(_ID_AND_OPTIONS, (0, 0))
    id_ref, options_ref = _ID_AND_OPTIONS.ref_positions
    blob.patch(position + id_ref, blob.utf8_string(transport_id.encode()))
    blob.patch(position + options_ref, blob.fragment(options))
    return blob.as_fragment(position)


def _build_webrtc_transport_options(
    builder: Any,
    server_id: str | None,
    listen_infos: Any,
    enable_udp: bool,
    enable_tcp: bool,
    prefer_udp: bool,
    prefer_tcp: bool,
    initial_available_outgoing_bitrate: int,
    enable_sctp: bool,
    ice_consent_timeout: int,
    sctp_options: SctpOptions,
) -> int:
    """Serialise ``FBS.WebRtcTransport.WebRtcTransportOptions``; returns its offset."""
    if server_id is not None:
        server_offset = builder.CreateString(server_id)
        FbsListenServer.Start(builder)
        FbsListenServer.AddWebRtcServerId(builder, server_offset)
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
    options_offset: int = FbsWebRtcOptions.End(builder)
    return options_offset


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _uint16(value: float) -> int:
    """A ``uint16`` option clamped to its range (the worker clamps it further)."""
    return max(0, min(int(value), 0xFFFF))


def _one_listen_info(listen_info: Any, listen_ip: Any, port: int | None) -> Any:
    """mediasoup's rule for plain and pipe transports: exactly one of ``listenInfo``
    and the deprecated ``listenIp`` (+ ``port``), which becomes a listen info."""
    if listen_info is None and listen_ip is None:
        raise MediasoupTypeError("missing listenInfo and listenIp (one of them is mandatory)")
    if listen_info is not None and listen_ip is not None:
        raise MediasoupTypeError("only one of listenInfo and listenIp must be given")
    return listen_info if listen_ip is None else _listen_ip_to_info(listen_ip, port)


def _listen_ip_to_info(listen_ip: Any, port: int | None) -> dict[str, Any]:
    """mediasoup's deprecated ``listenIp`` (a string or ``{ip, announcedIp}``) as a UDP listen info."""
    ip = listen_ip if isinstance(listen_ip, dict) else {"ip": listen_ip}
    if not isinstance(ip.get("ip"), str) or not ip["ip"]:
        raise MediasoupTypeError("listenIp must be a string or an object with an ip string")
    info: dict[str, Any] = {"protocol": "udp", "ip": ip["ip"], "port": port}
    if ip.get("announcedIp"):
        info["announcedAddress"] = ip["announcedIp"]
    return info


def _check_pipe_transports_open(*transports: PipeTransport) -> None:
    if any(transport.closed for transport in transports):
        raise InvalidStateError("PipeTransport closed while creating the pair")


def _is_uint32(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF


async def _pipe_producer(producer: Any, local: PipeTransport, remote: PipeTransport, keep_id: bool) -> dict[str, Any]:
    """Consume ``producer`` on ``local``, produce it on ``remote``, and keep the two in sync."""
    pipe_consumer = pipe_producer = None
    try:
        pipe_consumer = await local.consume(producer.id)
        pipe_producer = await remote.produce(
            pipe_consumer.kind,
            pipe_consumer.rtp_parameters,
            id=producer.id if keep_id else new_id(),
            paused=pipe_consumer.producer_paused,
            app_data=producer.app_data,
        )
        if producer.closed:
            raise NotFoundError("original Producer closed")
        # The original may have been paused or resumed while we were awaiting.
        if pipe_producer.paused != producer.paused:
            await (pipe_producer.pause() if producer.paused else pipe_producer.resume())
        consumer, piped = pipe_consumer, pipe_producer
        consumer.observer.on("close", lambda: piped.close())
        consumer.observer.on("pause", lambda: _spawn(piped.pause()))
        consumer.observer.on("resume", lambda: _spawn(piped.resume()))
        piped.observer.on("close", lambda: consumer.close())
        return {"pipeConsumer": pipe_consumer, "pipeProducer": pipe_producer}
    except BaseException as error:
        logger.error("pipe_to_router() | error creating pipe Consumer/Producer pair: {!r}", error)
        if pipe_consumer is not None:
            pipe_consumer.close()
        if pipe_producer is not None:
            pipe_producer.close()
        raise


async def _pipe_data_producer(
    data_producer: Any, local: PipeTransport, remote: PipeTransport, keep_id: bool
) -> dict[str, Any]:
    """Consume ``data_producer`` on ``local`` and produce it on ``remote``; closes follow each other."""
    pipe_data_consumer = pipe_data_producer = None
    try:
        pipe_data_consumer = await local.consume_data(data_producer.id)
        pipe_data_producer = await remote.produce_data(
            pipe_data_consumer.sctp_stream_parameters,
            id=data_producer.id if keep_id else new_id(),
            label=pipe_data_consumer.label,
            protocol=pipe_data_consumer.protocol,
            app_data=data_producer.app_data,
        )
        if data_producer.closed:
            raise NotFoundError("original DataProducer closed")
        consumer, piped = pipe_data_consumer, pipe_data_producer
        consumer.observer.on("close", lambda: piped.close())
        piped.observer.on("close", lambda: consumer.close())
        return {"pipeDataConsumer": pipe_data_consumer, "pipeDataProducer": pipe_data_producer}
    except BaseException as error:
        logger.error("pipe_to_router() | error creating pipe DataConsumer/DataProducer pair: {!r}", error)
        if pipe_data_consumer is not None:
            pipe_data_consumer.close()
        if pipe_data_producer is not None:
            pipe_data_producer.close()
        raise


# Pause/resume syncs run in the background (mediasoup's ``void pipeProducer.pause()``);
# the set keeps them referenced until done.
_BACKGROUND_TASKS: set[asyncio.Task[Any]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _BACKGROUND_TASKS.add(task)
    task.add_done_callback(_background_done)


def _background_done(task: asyncio.Task[Any]) -> None:
    _BACKGROUND_TASKS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("pipe_to_router() | syncing the pipe producer failed: {}", task.exception())


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()

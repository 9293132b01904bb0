"""Shared ICE/DTLS listening sockets for many WebRtcTransports (mediasoup's ``WebRtcServer``).

A WebRtcServer owns a few UDP sockets and TCP servers of one worker; transports
created with ``router.create_webrtc_transport(webrtc_server=...)`` use them
instead of ports of their own, and the server demultiplexes by ICE username
fragment. Closing the server closes every transport it handles (their
``listenserverclose`` event); a worker that closes takes the server with it
(``workerclose``), its transports being closed by their routers.

Events: ``workerclose``. Observer: ``close``, ``webrtctransporthandled``,
``webrtctransportunhandled``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import MediasoupTypeError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.fbs_utils import to_dict, unpack
from workers.transport import build_listen_info, check_app_data
from workers.wire import new_id

import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod
import FBS.WebRtcServer.DumpResponse as FbsDumpResponse
import FBS.Worker.CreateWebRtcServerRequest as FbsCreateWebRtcServerRequest

if TYPE_CHECKING:
    from workers.webrtc_transport import WebRtcTransport
    from workers.worker import Worker


class WebRtcServer(EnhancedEventEmitter):
    def __init__(self, server_id: str, worker: Worker, app_data: dict[str, Any]) -> None:
        super().__init__()
        self.id = server_id
        self.worker = worker
        self.channel = worker.channel
        self.app_data = app_data
        self.closed = False
        self.observer = EnhancedEventEmitter()
        self.webrtc_transports: dict[str, WebRtcTransport] = {}

    @classmethod
    async def create(cls, worker: Worker, listen_infos: Any, app_data: Any = None) -> WebRtcServer:
        """Ask ``worker`` to open the sockets of ``listen_infos`` (mediasoup's ``createWebRtcServer``)."""
        app_data = check_app_data(app_data)
        if not isinstance(listen_infos, (list, tuple)):
            raise MediasoupTypeError("listenInfos must be an array")
        server_id = new_id()
        builder = worker.channel.builder
        try:
            infos = [build_listen_info(builder, info) for info in listen_infos]
        except MediasoupTypeError:
            builder.Clear()
            raise
        FbsCreateWebRtcServerRequest.StartListenInfosVector(builder, len(infos))
        for offset in reversed(infos):
            builder.PrependUOffsetTRelative(offset)
        vector = builder.EndVector()
        id_offset = builder.CreateString(server_id)
        FbsCreateWebRtcServerRequest.Start(builder)
        FbsCreateWebRtcServerRequest.AddWebRtcServerId(builder, id_offset)
        FbsCreateWebRtcServerRequest.AddListenInfos(builder, vector)
        await worker.channel.request(
            FbsMethod.Method.WORKER_CREATE_WEBRTCSERVER,
            FbsRequestBody.Body.Worker_CreateWebRtcServerRequest,
            FbsCreateWebRtcServerRequest.End(builder),
        )
        return cls(server_id, worker, app_data)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the server and every WebRtcTransport using it."""
        if self.closed:
            return
        self.closed = True
        self.worker.close_webrtc_server_request(self.id)
        for transport in list(self.webrtc_transports.values()):
            transport.listen_server_closed()
            self.observer.safe_emit("webrtctransportunhandled", transport)
        self.webrtc_transports.clear()
        self.emit("@close")
        self.observer.safe_emit("close")

    def worker_closed(self) -> None:
        """The worker closed or died: its routers close the transports, not us."""
        if self.closed:
            return
        self.closed = True
        self.webrtc_transports.clear()
        self.safe_emit("workerclose")
        self.observer.safe_emit("close")

    # -- requests --------------------------------------------------------------------

    async def dump(self) -> dict[str, Any]:
        response = await self.channel.request(FbsMethod.Method.WEBRTCSERVER_DUMP, handler_id=self.id)
        dump: dict[str, Any] = to_dict(unpack(response, FbsDumpResponse.DumpResponse, FbsDumpResponse.DumpResponseT))
        for table in ("udpSockets", "tcpServers", "webRtcTransportIds", "localIceUsernameFragments"):
            dump[table] = dump.get(table) or []
        return dump

    # -- transports ------------------------------------------------------------------

    def handle_webrtc_transport(self, transport: WebRtcTransport) -> None:
        """Track a transport created on this server (called by the Router)."""
        self.webrtc_transports[transport.id] = transport
        self.observer.safe_emit("webrtctransporthandled", transport)
        transport.once("@close", lambda: self._on_transport_close(transport))

    def _on_transport_close(self, transport: WebRtcTransport) -> None:
        if self.webrtc_transports.pop(transport.id, None) is not None:
            self.observer.safe_emit("webrtctransportunhandled", transport)

    def __repr__(self) -> str:
        return f"<WebRtcServer id={self.id} closed={self.closed}>"

"""What every RTP observer shares (mediasoup's ``RtpObserver``).

An RTP observer watches the audio of the producers added to it, in its
router; subclasses (``ActiveSpeakerObserver``, ``AudioLevelObserver``) turn
what the worker notifies into events naming ``Producer`` objects, looked up in
the router (a producer closed in the meantime is skipped, as in mediasoup).

Events: ``routerclose``. Observer: ``close``, ``pause``, ``resume``,
``addproducer``, ``removeproducer`` (plus the subclass's events).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger

from workers.enhanced_events import EnhancedEventEmitter
from workers.errors import NotFoundError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)

import FBS.Request.Body as FbsRequestBody
import FBS.Request.Method as FbsMethod
import FBS.RtpObserver.AddProducerRequest as FbsAddProducerRequest
import FBS.RtpObserver.RemoveProducerRequest as FbsRemoveProducerRequest

if TYPE_CHECKING:
    from workers.producer import Producer
    from workers.router import Router


class RtpObserver(EnhancedEventEmitter):
    type = "base"

    def __init__(self, rtp_observer_id: str, router: Router, app_data: dict[str, Any]) -> None:
        super().__init__()
        self.id = rtp_observer_id
        self.router = router
        self.channel = router.channel
        self.app_data = app_data
        self.paused = False
        self.closed = False
        self.observer = EnhancedEventEmitter()
        self.channel.subscribe(self.id, self._on_notification)

    def get_producer(self, producer_id: str) -> Producer | None:
        """The router's producer with that id (None if it closed meanwhile)."""
        return self.router.producers.get(producer_id)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.channel.unsubscribe(self.id)
        self.router.fire_and_forget(
            FbsMethod.Method.ROUTER_CLOSE_RTPOBSERVER,
            FbsRequestBody.Body.Router_CloseRtpObserverRequest,
            self.id,
            self.router.id,
        )
        self.emit("@close")
        self.observer.safe_emit("close")

    def router_closed(self) -> None:
        """The router (or its worker) closed: the worker already dropped us."""
        if self.closed:
            return
        self.closed = True
        self.channel.unsubscribe(self.id)
        self.safe_emit("routerclose")
        self.observer.safe_emit("close")

    # -- requests --------------------------------------------------------------------

    def _request(self, method: int, body_type: int = 0, offset: int = 0) -> Any:
        return self.channel.request(method, body_type, offset, self.id)

    async def pause(self) -> None:
        was_paused = self.paused
        await self._request(FbsMethod.Method.RTPOBSERVER_PAUSE)
        self.paused = True
        if not was_paused:
            self.observer.safe_emit("pause")

    async def resume(self) -> None:
        was_paused = self.paused
        await self._request(FbsMethod.Method.RTPOBSERVER_RESUME)
        self.paused = False
        if was_paused:
            self.observer.safe_emit("resume")

    async def add_producer(self, producer_id: str) -> None:
        """Start observing a producer of this router."""
        producer = self._require_producer(producer_id)
        builder = self.channel.builder
        id_offset = builder.CreateString(producer_id)
        FbsAddProducerRequest.Start(builder)
        FbsAddProducerRequest.AddProducerId(builder, id_offset)
        await self._request(
            FbsMethod.Method.RTPOBSERVER_ADD_PRODUCER,
            FbsRequestBody.Body.RtpObserver_AddProducerRequest,
            FbsAddProducerRequest.End(builder),
        )
        self.observer.safe_emit("addproducer", producer)

    async def remove_producer(self, producer_id: str) -> None:
        producer = self._require_producer(producer_id)
        builder = self.channel.builder
        id_offset = builder.CreateString(producer_id)
        FbsRemoveProducerRequest.Start(builder)
        FbsRemoveProducerRequest.AddProducerId(builder, id_offset)
        await self._request(
            FbsMethod.Method.RTPOBSERVER_REMOVE_PRODUCER,
            FbsRequestBody.Body.RtpObserver_RemoveProducerRequest,
            FbsRemoveProducerRequest.End(builder),
        )
        self.observer.safe_emit("removeproducer", producer)

    def _require_producer(self, producer_id: str) -> Producer:
        producer = self.get_producer(producer_id)
        if producer is None:
            raise NotFoundError(f'Producer with id "{producer_id}" not found')
        return producer

    # -- notifications ---------------------------------------------------------------

    def _on_notification(self, event: int, notification: Any) -> None:
        logger.error("ignoring unknown {} event {}", type(self).__name__, event)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} closed={self.closed}>"

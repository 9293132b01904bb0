"""Chat over the signaling WebSocket (protoo framing, next to mediasoup-demo's methods).

Requests (registered with :meth:`~control.rooms.manager.RoomManager.register_method`):

``chatMessage {type?, text?, file?}`` -> ``{message}``
    Joined peers only (403 before ``join``), whose token grants ``canPublishData``
    (403 ``missing_grant`` otherwise, and for a hidden participant: checked with
    every request in :func:`control.rooms.handlers.authorize`). ``type`` is ``"text"`` (default) or
    ``"file"`` (``file: {bucket, key, name, size, mimeType}``, ``key`` one of this
    room's chat uploads, ``text`` an optional caption). The sender is the peer
    (``peerId``, its current ``displayName``), never taken from the request. The
    answer is the message as stored (``id``, ``createdAt``, ``meetingId``, ``sender``).
``getChatHistory {limit?, before?}`` -> ``{messages, nextCursor}``
    Any participant (``roomJoin``). Newest first, ``limit`` 1-200 (default 50), ``before`` a previous ``nextCursor``
    (``null`` on the last page). Allowed before ``join`` (the same history is on
    ``GET /api/rooms/{roomId}/messages``), so a client can fill its chat pane while
    it sets up its transports.

Errors: 400 ``"<code>: <message>"`` for input the chat refuses (``empty``,
``text_too_long``, ``control_characters``, ``invalid_type``, ``forbidden_type``,
``invalid_file``, ``invalid_limit``, ``invalid_cursor``...: nothing is stored) and
``"invalid_request: <field>: <problem>"`` for unknown fields or wrong JSON types;
403 before ``join``; 410 for a peer that already left; 503 ``"unavailable: ..."``
when the store did not acknowledge (send again).

Notifications, to every joined peer of the room (the sender included: clients
dedupe by ``message.id``; a peer in its reconnect grace period gets them from its
backlog):

``chatMessage {message}``
    After each stored message: participants' and the server's ``system`` ones
    (``"<name> joined"`` / ``"<name> left"``, recordings; ``event`` and ``data`` say
    what happened).
``chatCleared {roomId, deleted}``
    The room's history was deleted (admin ``DELETE /api/rooms/{roomId}/messages``, or
    at meeting end with ``CHAT_DELETE_ON_MEETING_END``): clients empty their chat pane.

:func:`chat_signaling_ctx` is the ``cleanup_ctx`` entry (after ``chat_ctx`` and
``rooms_ctx``): it registers the two methods and subscribes once to the chat service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from control.chat.service import ChatService
from control.chat.validation import ChatError, ChatValidationError, validate_display_name
from control.signaling.messages import describe
from control.signaling.protoo import ProtooError
from control.store.models import ChatMessage, Sender

if TYPE_CHECKING:
    from control.rooms.manager import RoomManager
    from control.rooms.peer import Peer
    from control.rooms.room import Room

__all__ = [
    "CHAT_CLEARED",
    "CHAT_MESSAGE",
    "GET_CHAT_HISTORY",
    "ChatHistoryRequest",
    "ChatMessageRequest",
    "ChatSignaling",
    "chat_signaling_ctx",
]

CHAT_MESSAGE = "chatMessage"
GET_CHAT_HISTORY = "getChatHistory"
CHAT_CLEARED = "chatCleared"

#: Generous bounds on strings before the chat's own rules (which give the precise
#: errors: the text limit is ``CHAT_MAX_TEXT_LENGTH``); the frame limit caps the rest.
_MAX_FIELD = 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=_Strict)


class FileIn(_Strict):
    bucket: StrictStr = Field(max_length=_MAX_FIELD)
    key: StrictStr = Field(max_length=_MAX_FIELD)
    name: StrictStr = Field(max_length=_MAX_FIELD)
    size: StrictInt
    mimeType: StrictStr = Field(max_length=_MAX_FIELD)


class ChatMessageRequest(_Strict):
    type: StrictStr = Field("text", max_length=64)
    text: StrictStr | None = None
    file: FileIn | None = None

    @model_validator(mode="after")
    def _file_only_for_files(self) -> ChatMessageRequest:
        if self.file is not None and self.type != "file":
            raise ValueError("file is only allowed with type 'file'")
        return self

    def payload(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ChatHistoryRequest(_Strict):
    limit: StrictInt | None = None
    before: StrictStr | None = Field(None, max_length=_MAX_FIELD)


def _parse(model: type[M], method: str, data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ProtooError(400, f"invalid_request: {method}: {describe(error)}") from None


def _refused(error: ChatError) -> ProtooError:
    return ProtooError(error.status, f"{error.code}: {error.message}")


def sender_of(peer: Peer) -> Sender:
    """Who sends: the peer's id and current display name (its id when the name is
    empty or not one the chat accepts)."""
    try:
        name = validate_display_name(peer.display_name)
    except ChatValidationError:
        name = peer.id
    return Sender(peer_id=peer.id, display_name=name)


class ChatSignaling:
    """The two protoo methods and the fan-out of stored messages to the rooms."""

    def __init__(self, chat: ChatService, rooms: RoomManager) -> None:
        self.chat = chat
        self.rooms = rooms
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self.rooms.register_method(CHAT_MESSAGE, self.on_chat_message)
        self.rooms.register_method(GET_CHAT_HISTORY, self.on_get_chat_history, before_join=True)
        self._unsubscribe = self.chat.subscribe(self.broadcast, self.cleared)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- requests -----------------------------------------------------------------------

    async def on_chat_message(self, room: Room, peer: Peer, data: dict[str, Any]) -> dict[str, Any]:
        request = _parse(ChatMessageRequest, CHAT_MESSAGE, data)
        if peer.closed or room.closed:
            raise ProtooError(410, "peer closed")
        try:
            message = await self.chat.send(room.id, sender_of(peer), request.payload())
        except ChatError as error:
            raise _refused(error) from None
        return {"message": message.to_json()}

    async def on_get_chat_history(self, room: Room, peer: Peer, data: dict[str, Any]) -> dict[str, Any]:
        request = _parse(ChatHistoryRequest, GET_CHAT_HISTORY, data)
        try:
            page = await self.chat.history(room.id, request.limit, request.before)
        except ChatError as error:
            raise _refused(error) from None
        return page.to_json()

    # -- chat service subscribers ---------------------------------------------------------

    def broadcast(self, message: ChatMessage) -> None:
        self.rooms.notify_room(message.room_id, CHAT_MESSAGE, {"message": message.to_json()})

    def cleared(self, room_id: str, deleted: int) -> None:
        self.rooms.notify_room(room_id, CHAT_CLEARED, {"roomId": room_id, "deleted": deleted})


def chat_signaling_ctx(
    *, chat: web.AppKey[ChatService], rooms: web.AppKey[RoomManager]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup_ctx of chat over signaling: after the chat's and the rooms' (it
    registers its methods on the room manager and subscribes to the chat)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        bridge = ChatSignaling(app[chat], app[rooms])
        bridge.start()
        try:
            yield
        finally:
            bridge.stop()

    return ctx

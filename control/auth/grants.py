"""What a verified caller may do: LiveKit's ``video`` grants, a :class:`Principal`.

The claim shape is LiveKit's (``livekit/protocol`` ``auth/grants.go`` and the
``livekit-api`` package's ``VideoGrants``), so tokens minted by LiveKit tooling
work unchanged. LiveKit's defaults are kept: ``canPublish``, ``canSubscribe`` and
``canPublishData`` are true when the token does not say otherwise; every other
permission is false unless granted; ``canPublishSources``, when present, lists
the only sources that may be published.

Room scope: ``roomJoin`` and the in-room permissions (publish, subscribe, data)
hold only for ``video.room``. ``roomAdmin``, ``roomRecord`` and ``ingressAdmin``
hold for ``video.room`` when it is set and for every room when it is empty (a
"roomless" admin token, as LiveKit's server APIs use). ``roomList`` is global.

Handlers never read claims: they ask the principal (``principal.require(Grant.PUBLISH,
room=room_id)``), which raises :class:`~control.errors.Forbidden` naming the grant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from control.errors import Forbidden

__all__ = [
    "GRANT_NAMES",
    "PARTICIPANT_GRANTS",
    "AuthMethod",
    "Grant",
    "Principal",
    "TrackSource",
    "VideoGrants",
    "grants_from_names",
    "open_principal",
    "source_of",
]


class TrackSource(StrEnum):
    """A source a participant may publish (``canPublishSources``; LiveKit's lower-case names)."""

    CAMERA = "camera"
    MICROPHONE = "microphone"
    SCREEN_SHARE = "screen_share"
    SCREEN_SHARE_AUDIO = "screen_share_audio"


#: ``appData.source`` names of mediasoup-demo's and LiveKit's clients -> source (audio, video).
_SOURCE_ALIASES: dict[str, tuple[TrackSource, TrackSource]] = {
    "mic": (TrackSource.MICROPHONE, TrackSource.MICROPHONE),
    "microphone": (TrackSource.MICROPHONE, TrackSource.MICROPHONE),
    "webcam": (TrackSource.CAMERA, TrackSource.CAMERA),
    "camera": (TrackSource.CAMERA, TrackSource.CAMERA),
    "share": (TrackSource.SCREEN_SHARE_AUDIO, TrackSource.SCREEN_SHARE),
    "screen": (TrackSource.SCREEN_SHARE_AUDIO, TrackSource.SCREEN_SHARE),
    "screen_share": (TrackSource.SCREEN_SHARE_AUDIO, TrackSource.SCREEN_SHARE),
    "screen_share_audio": (TrackSource.SCREEN_SHARE_AUDIO, TrackSource.SCREEN_SHARE_AUDIO),
}


def source_of(kind: str, app_data: Mapping[str, Any] | None) -> TrackSource:
    """The source a ``produce`` request publishes, for ``canPublishSources``.

    From ``appData.source`` (mediasoup-demo: ``mic``, ``webcam``, ``share``; LiveKit's
    names too) or ``appData.share``; otherwise by kind: audio is the microphone, video the
    camera. So a client cannot dodge a camera-only token by not naming its source.
    """
    audio = kind == "audio"
    data = app_data or {}
    name = data.get("source")
    if isinstance(name, str) and name.lower() in _SOURCE_ALIASES:
        return _SOURCE_ALIASES[name.lower()][0 if audio else 1]
    if data.get("share") is True:
        return TrackSource.SCREEN_SHARE_AUDIO if audio else TrackSource.SCREEN_SHARE
    return TrackSource.MICROPHONE if audio else TrackSource.CAMERA


class Grant(StrEnum):
    """A permission of the ``video`` claim; the value is its claim name."""

    JOIN = "roomJoin"
    PUBLISH = "canPublish"
    SUBSCRIBE = "canSubscribe"
    PUBLISH_DATA = "canPublishData"
    RECORD = "roomRecord"
    ADMIN = "roomAdmin"
    LIST = "roomList"
    INGRESS = "ingressAdmin"
    UPDATE_OWN_METADATA = "canUpdateOwnMetadata"


#: Grants that a roomless token holds for every room (LiveKit's server-API tokens).
_ROOMLESS_OK = frozenset({Grant.ADMIN, Grant.RECORD, Grant.INGRESS, Grant.LIST})


class AuthMethod(StrEnum):
    """How a principal authenticated (logged, and shown by ``/auth/me``)."""

    TOKEN = "token"  # a signed access token (Authorization: Bearer or ?token=)
    SESSION = "session"  # a signed-in (OIDC) session cookie
    OPEN = "open"  # AUTH_OPEN_JOIN=true, no credentials
    DEV = "dev"  # no keys, loopback-only bind: everything open


class VideoGrants(BaseModel):
    """The ``video`` claim, camelCase on the wire (``roomJoin``, ``canPublish``...).

    Unknown claims (``roomCreate``, ``agent``...) are ignored, not refused: a
    LiveKit token may carry grants Parley has no use for.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    room: str = ""
    room_join: bool | None = None
    can_publish: bool | None = None
    can_subscribe: bool | None = None
    can_publish_data: bool | None = None
    can_publish_sources: tuple[TrackSource, ...] | None = None
    room_record: bool | None = None
    room_admin: bool | None = None
    room_list: bool | None = None
    ingress_admin: bool | None = None
    hidden: bool | None = None
    can_update_own_metadata: bool | None = None

    def allows(self, grant: Grant) -> bool:
        """The flag itself, with LiveKit's defaults (publish/subscribe/data true when unset)."""
        match grant:
            case Grant.PUBLISH:
                return self.can_publish is not False
            case Grant.SUBSCRIBE:
                return self.can_subscribe is not False
            case Grant.PUBLISH_DATA:
                return self.can_publish_data is not False
            case Grant.JOIN:
                return bool(self.room_join)
            case Grant.RECORD:
                return bool(self.room_record)
            case Grant.ADMIN:
                return bool(self.room_admin)
            case Grant.LIST:
                return bool(self.room_list)
            case Grant.INGRESS:
                return bool(self.ingress_admin)
            case Grant.UPDATE_OWN_METADATA:
                return bool(self.can_update_own_metadata)

    @property
    def is_hidden(self) -> bool:
        return bool(self.hidden)

    def to_claim(self) -> dict[str, Any]:
        """The JSON of the ``video`` claim (unset flags left out, as LiveKit's minters do)."""
        claim = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if not claim.get("room"):
            claim.pop("room", None)
        return claim


#: A full participant: join, publish any source, subscribe, data (``room`` set per token).
PARTICIPANT_GRANTS = VideoGrants(room_join=True, can_publish=True, can_subscribe=True, can_publish_data=True)


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: who (identity = peerId), in which room, with which grants.

    ``all_rooms`` is only true for the open and dev modes (no credentials at all):
    their grants hold in every room and ``identity`` is empty (any peerId).
    """

    identity: str
    grants: VideoGrants
    method: AuthMethod
    name: str = ""
    metadata: str = ""
    api_key: str | None = None
    expires_at: datetime | None = None
    email: str | None = None
    all_rooms: bool = False

    @property
    def room(self) -> str | None:
        """The room the token is for (``video.room``), ``None`` for a roomless token."""
        return self.grants.room or None

    @property
    def hidden(self) -> bool:
        """Not announced to other participants (bots, recorders)."""
        return self.grants.is_hidden

    def covers_room(self, grant: Grant, room: str | None) -> bool:
        """Whether the token's room scope includes ``room`` for ``grant`` (see module doc)."""
        if room is None or self.all_rooms or grant is Grant.LIST:
            return True
        if self.grants.room:
            return self.grants.room == room
        return grant in _ROOMLESS_OK

    def can(self, grant: Grant, room: str | None = None) -> bool:
        """True if this principal holds ``grant`` (in ``room`` when given)."""
        return self.grants.allows(grant) and self.covers_room(grant, room)

    def require(self, grant: Grant, room: str | None = None) -> None:
        """Raise :class:`Forbidden` unless :meth:`can`; the message names the grant, never the token."""
        if not self.grants.allows(grant):
            raise Forbidden(f"access token does not grant {grant.value}", code="missing_grant")
        if not self.covers_room(grant, room):
            raise Forbidden(f"access token does not grant {grant.value} for room {room!r}", code="wrong_room")

    def can_publish_source(self, source: TrackSource | str) -> bool:
        """``canPublish`` and, when ``canPublishSources`` is set, ``source`` among them."""
        if not self.grants.allows(Grant.PUBLISH):
            return False
        allowed = self.grants.can_publish_sources
        if allowed is None:
            return True
        try:
            return TrackSource(source) in allowed
        except ValueError:
            return False

    def require_publish_source(self, source: TrackSource | str, room: str | None = None) -> None:
        """Raise :class:`Forbidden` unless this principal may publish ``source`` (in ``room``)."""
        self.require(Grant.PUBLISH, room)
        if not self.can_publish_source(source):
            raise Forbidden(f"access token does not grant publishing {source}", code="missing_grant")


#: Short grant names of ``parley token create --grants`` and ``DEFAULT_GRANTS`` -> claim field.
GRANT_NAMES: dict[str, str] = {
    "join": "room_join",
    "publish": "can_publish",
    "subscribe": "can_subscribe",
    "data": "can_publish_data",
    "record": "room_record",
    "admin": "room_admin",
    "list": "room_list",
    "ingress": "ingress_admin",
    "hidden": "hidden",
    "rename": "can_update_own_metadata",
}


def grants_from_names(names: Iterable[str], *, room: str = "", sources: Iterable[str] | None = None) -> VideoGrants:
    """The grants a list of short names stands for: named flags true, the others false.

    Unlike a bare LiveKit token (where publish/subscribe/data default to true), a
    list is explicit: ``join,subscribe`` is a viewer that cannot publish.
    ``sources`` restricts publishing to those :class:`TrackSource` values.
    """
    wanted = {name.strip().lower() for name in names if name.strip()}
    unknown = sorted(wanted - GRANT_NAMES.keys())
    if unknown:
        raise ValueError(f"unknown grant(s) {', '.join(unknown)}; valid: {','.join(GRANT_NAMES)}")
    flags: dict[str, Any] = {field: name in wanted for name, field in GRANT_NAMES.items()}
    if sources is not None:
        flags["can_publish_sources"] = tuple(TrackSource(s.strip().lower()) for s in sources if s.strip())
    return VideoGrants(room=room, **flags)


def open_principal(*, admin: bool, identity: str = "", name: str = "") -> Principal:
    """The principal of a token-less client in an open mode.

    ``AUTH_OPEN_JOIN`` (``admin=False``): a full participant in every room (join,
    publish, subscribe, data, record: what every client could do before access
    control existed). Dev mode (``admin=True``): every grant, as LiveKit's ``--dev``.
    """
    grants = PARTICIPANT_GRANTS.model_copy(update={"room_record": True})
    method = AuthMethod.OPEN
    if admin:
        grants = grants.model_copy(
            update={"room_admin": True, "room_list": True, "ingress_admin": True, "can_update_own_metadata": True}
        )
        method = AuthMethod.DEV
    return Principal(identity=identity, name=name, grants=grants, method=method, all_rooms=True)

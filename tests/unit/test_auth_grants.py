"""Grants: LiveKit's defaults, room scope, sources, the open principals."""

from __future__ import annotations

import pytest

from control.auth.grants import (
    AuthMethod,
    Grant,
    Principal,
    TrackSource,
    VideoGrants,
    grants_from_names,
    open_principal,
    source_of,
)
from control.errors import Forbidden


def principal(**video: object) -> Principal:
    return Principal(identity="ann", grants=VideoGrants.model_validate(video), method=AuthMethod.TOKEN)


def test_livekit_defaults_publish_subscribe_data_true_when_unset() -> None:
    grants = VideoGrants.model_validate({"room": "r", "roomJoin": True})
    assert grants.allows(Grant.PUBLISH) and grants.allows(Grant.SUBSCRIBE) and grants.allows(Grant.PUBLISH_DATA)
    for grant in (Grant.RECORD, Grant.ADMIN, Grant.LIST, Grant.INGRESS):
        assert not grants.allows(grant)
    assert not VideoGrants().allows(Grant.JOIN)
    assert not grants.is_hidden


def test_explicit_false_wins_over_default() -> None:
    grants = VideoGrants.model_validate({"canPublish": False, "canSubscribe": False, "canPublishData": False})
    assert not any(grants.allows(g) for g in (Grant.PUBLISH, Grant.SUBSCRIBE, Grant.PUBLISH_DATA))


def test_camel_case_wire_shape_and_unknown_claims_ignored() -> None:
    grants = VideoGrants.model_validate(
        {"room": "r", "roomJoin": True, "roomCreate": True, "canPublishSources": ["camera"], "agent": True}
    )
    assert grants.can_publish_sources == (TrackSource.CAMERA,)
    assert grants.to_claim() == {"room": "r", "roomJoin": True, "canPublishSources": ["camera"]}


def test_require_names_the_grant_not_the_token() -> None:
    p = principal(room="r", roomJoin=True, canPublish=False)
    with pytest.raises(Forbidden) as err:
        p.require(Grant.PUBLISH, "r")
    assert err.value.code == "missing_grant" and "canPublish" in err.value.message
    p.require(Grant.SUBSCRIBE, "r")


def test_wrong_room() -> None:
    p = principal(room="r", roomJoin=True, roomAdmin=True)
    assert p.can(Grant.JOIN, "r") and not p.can(Grant.JOIN, "other")
    with pytest.raises(Forbidden) as err:
        p.require(Grant.ADMIN, "other")
    assert err.value.code == "wrong_room"


def test_roomless_admin_covers_every_room_but_not_joining() -> None:
    p = principal(roomAdmin=True, roomJoin=True)
    assert p.room is None
    assert p.can(Grant.ADMIN, "any") and not p.can(Grant.JOIN, "any") and not p.can(Grant.PUBLISH, "any")


def test_publish_sources() -> None:
    p = principal(room="r", roomJoin=True, canPublishSources=["microphone"])
    assert p.can_publish_source("microphone") and p.can_publish_source(TrackSource.MICROPHONE)
    assert not p.can_publish_source("camera") and not p.can_publish_source("bogus")
    with pytest.raises(Forbidden):
        p.require_publish_source("camera", "r")
    assert principal(room="r").can_publish_source("screen_share")  # unset: every source
    assert not principal(room="r", canPublish=False).can_publish_source("camera")


def test_invalid_source_in_token_is_refused() -> None:
    with pytest.raises(ValueError):
        VideoGrants.model_validate({"canPublishSources": ["hologram"]})


def test_grants_from_names_is_explicit() -> None:
    viewer = grants_from_names(["join", "subscribe"], room="r")
    assert viewer.allows(Grant.JOIN) and viewer.allows(Grant.SUBSCRIBE)
    assert not viewer.allows(Grant.PUBLISH) and not viewer.allows(Grant.PUBLISH_DATA)
    assert not viewer.allows(Grant.UPDATE_OWN_METADATA)
    assert grants_from_names(["join", "rename"]).model_dump(by_alias=True)["canUpdateOwnMetadata"] is True
    bot = grants_from_names(["join", "hidden"], room="r", sources=["camera"])
    assert bot.is_hidden and bot.can_publish_sources == (TrackSource.CAMERA,)
    with pytest.raises(ValueError, match="unknown grant"):
        grants_from_names(["join", "superuser"])


def test_open_principals() -> None:
    participant = open_principal(admin=False)
    assert participant.method is AuthMethod.OPEN and participant.identity == ""
    for grant in (Grant.JOIN, Grant.PUBLISH, Grant.SUBSCRIBE, Grant.PUBLISH_DATA, Grant.RECORD):
        assert participant.can(grant, "any-room")
    for grant in (Grant.ADMIN, Grant.LIST, Grant.INGRESS):
        assert not participant.can(grant, "any-room")
    dev = open_principal(admin=True)
    assert dev.method is AuthMethod.DEV and all(dev.can(g, "x") for g in Grant)


@pytest.mark.parametrize(
    ("kind", "app_data", "source"),
    [
        ("audio", {"source": "mic"}, TrackSource.MICROPHONE),
        ("video", {"source": "webcam"}, TrackSource.CAMERA),
        ("video", {"source": "share"}, TrackSource.SCREEN_SHARE),
        ("audio", {"source": "share"}, TrackSource.SCREEN_SHARE_AUDIO),
        ("video", {"share": True}, TrackSource.SCREEN_SHARE),
        ("video", {"source": "screen_share"}, TrackSource.SCREEN_SHARE),
        ("video", {}, TrackSource.CAMERA),  # unnamed: by kind, never a way around the grant
        ("audio", None, TrackSource.MICROPHONE),
        ("video", {"source": "unknown"}, TrackSource.CAMERA),
    ],
)
def test_source_of_produce(kind: str, app_data: dict[str, object] | None, source: TrackSource) -> None:
    assert source_of(kind, app_data) is source

"""Access tokens: every refusal, LiveKit interoperability both ways."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from livekit.api import AccessToken, TokenVerifier
from livekit.api import VideoGrants as LkVideoGrants
from pydantic import SecretStr

from control.auth.grants import AuthMethod, Grant, TrackSource, VideoGrants, grants_from_names
from control.auth.keys import KeyRing
from control.auth.tokens import LEEWAY, mint, verify
from control.errors import Unauthorized

KEY, SECRET = "APIkey1", "secret-" + "k" * 40
OTHER_KEY, OTHER_SECRET = "APIkey2", "other-" + "o" * 40
KEYS = KeyRing({KEY: SecretStr(SECRET), OTHER_KEY: SecretStr(OTHER_SECRET)})
JOIN = VideoGrants(room="r", room_join=True)


def refused(token: str | None, code: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as err:
        verify(token, KEYS)
    assert err.value.code == code
    if token:
        assert token not in err.value.message
    return err.value


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"iss": KEY, "sub": "ann", "nbf": now, "exp": now + 600, "video": {"room": "r", "roomJoin": True}, **extra}


def test_round_trip() -> None:
    token = mint(KEYS, identity="ann", name="Ann", metadata='{"a":1}', grants=JOIN, ttl=timedelta(minutes=5))
    p = verify(token, KEYS)
    assert (p.identity, p.name, p.metadata, p.room, p.api_key) == ("ann", "Ann", '{"a":1}', "r", KEY)
    assert p.method is AuthMethod.TOKEN and p.can(Grant.JOIN, "r") and p.can(Grant.PUBLISH, "r")
    assert p.expires_at is not None and 290 < p.expires_at.timestamp() - time.time() <= 300


def test_key_chosen_by_iss() -> None:
    token = mint(KEYS, identity="ann", grants=JOIN, api_key=OTHER_KEY)
    assert verify(token, KEYS).api_key == OTHER_KEY


def test_missing() -> None:
    refused(None, "token_missing")
    refused("", "token_missing")


def test_malformed() -> None:
    refused("not.a.jwt", "token_invalid")
    refused("garbage", "token_invalid")


def test_bad_signature() -> None:
    token = jwt.encode(claims(), "wrong-" + "w" * 40, algorithm="HS256")
    refused(token, "token_invalid")


def test_tampered_payload() -> None:
    header, _, signature = mint(KEYS, identity="ann", grants=JOIN).split(".")
    forged = b64(claims(video={"room": "r", "roomJoin": True, "roomAdmin": True}))
    refused(f"{header}.{forged}.{signature}", "token_invalid")


def test_alg_none() -> None:
    refused(f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.", "token_invalid")
    refused(jwt.encode(claims(), "", algorithm="none"), "token_invalid")


def test_other_hmac_algorithms_refused() -> None:
    refused(jwt.encode(claims(), SECRET, algorithm="HS512"), "token_invalid")


def test_algorithm_confusion_rs256() -> None:
    """An RS256 token (the attacker's own key pair) never reaches a key: the algorithm is pinned."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(jwt.encode(claims(), private, algorithm="RS256"), "token_invalid")
    # The classic confusion: HS256 signed with a public key as the "secret" still needs our secret.
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = jwt.api_jws.PyJWS(algorithms=["HS256"])
    forged._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[method-assign]
    refused(forged.encode(json.dumps(claims()).encode(), public_pem, algorithm="HS256"), "token_invalid")


def test_expired_and_leeway() -> None:
    past = time.time() - 3600
    refused(mint(KEYS, identity="ann", grants=JOIN, ttl=timedelta(minutes=10), now=past), "token_expired")
    recent = time.time() - 600 - LEEWAY // 2  # expired, but within the leeway
    assert verify(mint(KEYS, identity="ann", grants=JOIN, ttl=timedelta(minutes=10), now=recent), KEYS)


def test_not_yet_valid() -> None:
    refused(mint(KEYS, identity="ann", grants=JOIN, now=time.time() + 600), "token_not_yet_valid")
    assert verify(mint(KEYS, identity="ann", grants=JOIN, now=time.time() + LEEWAY // 2), KEYS)


def test_exp_required() -> None:
    data = claims()
    del data["exp"]
    refused(jwt.encode(data, SECRET, algorithm="HS256"), "token_invalid")


def test_unknown_key() -> None:
    refused(jwt.encode(claims(iss="nobody"), SECRET, algorithm="HS256"), "unknown_key")
    data = claims()
    del data["iss"]
    refused(jwt.encode(data, SECRET, algorithm="HS256"), "unknown_key")


def test_malformed_grants() -> None:
    refused(jwt.encode(claims(video="all"), SECRET, algorithm="HS256"), "token_invalid")
    refused(jwt.encode(claims(video={"roomJoin": "maybe"}), SECRET, algorithm="HS256"), "token_invalid")
    refused(jwt.encode(claims(sub=42), SECRET, algorithm="HS256"), "token_invalid")


def test_mint_refuses_join_without_room_or_identity() -> None:
    with pytest.raises(ValueError, match="identity and room"):
        mint(KEYS, identity="", grants=JOIN)
    with pytest.raises(ValueError, match="identity and room"):
        mint(KEYS, identity="ann", grants=VideoGrants(room_join=True))


# -- LiveKit interoperability ---------------------------------------------------------


def test_livekit_access_token_accepted() -> None:
    token = (
        AccessToken(KEY, SECRET)
        .with_identity("bob")
        .with_name("Bob")
        .with_metadata("meta")
        .with_grants(LkVideoGrants(room_join=True, room="r", can_publish_sources=["camera", "microphone"], hidden=True))
        .to_jwt()
    )
    p = verify(token, KEYS)
    assert (p.identity, p.name, p.metadata, p.room, p.hidden) == ("bob", "Bob", "meta", "r", True)
    assert p.can(Grant.JOIN, "r") and p.can(Grant.SUBSCRIBE, "r") and p.can(Grant.PUBLISH_DATA, "r")
    assert p.can_publish_source(TrackSource.CAMERA) and not p.can_publish_source(TrackSource.SCREEN_SHARE)
    assert not p.can(Grant.ADMIN, "r")


def test_livekit_admin_token_and_defaults() -> None:
    token = (
        AccessToken(KEY, SECRET).with_grants(LkVideoGrants(room_admin=True, room_list=True, room_record=True)).to_jwt()
    )
    p = verify(token, KEYS)
    assert p.room is None and p.can(Grant.ADMIN, "any") and p.can(Grant.LIST) and not p.can(Grant.JOIN, "any")


def test_livekit_token_of_unknown_key_or_expired() -> None:
    refused(AccessToken("stranger", SECRET).with_identity("x").to_jwt(), "unknown_key")
    expired = AccessToken(KEY, SECRET).with_identity("x").with_ttl(timedelta(seconds=-3600)).to_jwt()
    refused(expired, "token_expired")


def test_our_tokens_read_by_livekit_verifier() -> None:
    grants = grants_from_names(["join", "publish", "subscribe", "record"], room="r", sources=["camera"])
    token = mint(KEYS, identity="ann", name="Ann", metadata="m", grants=grants)
    lk = TokenVerifier(KEY, SECRET).verify(token)
    assert (lk.identity, lk.name, lk.metadata) == ("ann", "Ann", "m")
    assert lk.video is not None
    assert (lk.video.room, lk.video.room_join, lk.video.can_publish, lk.video.can_subscribe) == ("r", True, True, True)
    assert lk.video.can_publish_data is False and lk.video.room_record is True and lk.video.room_admin is False
    assert lk.video.can_publish_sources == ["camera"]
    # Same claim names as livekit-api's own AccessToken.
    ours = jwt.decode(token, options={"verify_signature": False})
    theirs = jwt.decode(
        AccessToken(KEY, SECRET)
        .with_identity("ann")
        .with_name("Ann")
        .with_metadata("m")
        .with_grants(LkVideoGrants(room_join=True, room="r"))
        .to_jwt(),
        options={"verify_signature": False},
    )
    assert set(ours) == set(theirs)

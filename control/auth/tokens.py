"""Access tokens: verify LiveKit-shaped JWTs, mint Parley's own.

Verification (PyJWT) pins HS256: a token whose header says ``none``, ``RS256`` or
anything else is refused before any key is used, so neither the ``none`` trick nor
RS/HS algorithm confusion can pass. The key is chosen by ``iss`` (the API key);
``exp`` is required, ``exp``/``nbf`` are checked with :data:`LEEWAY` seconds of
clock skew. Every refusal is a :class:`~control.errors.Unauthorized` with a stable
code: ``token_missing``, ``token_invalid``, ``token_expired``,
``token_not_yet_valid``, ``unknown_key``. Messages never contain the token.

:func:`mint` writes exactly the claims of ``livekit-api``'s ``AccessToken.to_jwt``
(``iss``, ``sub``, ``nbf``, ``exp``, ``name``, ``metadata``, ``video``), so a
LiveKit ``TokenVerifier`` reads them too.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from pydantic import SecretStr, ValidationError

from control.auth.grants import AuthMethod, Principal, VideoGrants
from control.auth.keys import KeyRing
from control.errors import Unauthorized

__all__ = ["ALGORITHM", "DEFAULT_TTL", "LEEWAY", "mint", "verify"]

ALGORITHM = "HS256"
#: Seconds of clock skew tolerated on ``exp`` and ``nbf``.
LEEWAY = 30
#: Lifetime of a minted token when none is given (LiveKit's default too).
DEFAULT_TTL = timedelta(hours=6)


def verify(token: str | None, keys: KeyRing) -> Principal:
    """The principal of a valid ``token``; raise :class:`Unauthorized` otherwise."""
    if not token:
        raise Unauthorized("access token required", code="token_missing")
    header, unverified = _peek(token)
    if header.get("alg") != ALGORITHM:
        raise Unauthorized(f"access token must be signed with {ALGORITHM}", code="token_invalid")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or issuer not in keys:
        raise Unauthorized("access token is signed by an unknown API key", code="unknown_key")
    claims = _decode(token, keys[issuer])
    return _principal(claims, issuer)


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims, unverified: only to refuse a foreign ``alg`` early and pick the key by ``iss``.

    Plain base64 + JSON rather than a second PyJWT decode: PyJWT checks every character of
    each segment in Python, which made the unverified look as costly as the verified decode
    (about half of a join's verification cost). PyJWT's verified decode then checks it all.
    """
    try:
        header_segment, payload_segment, _ = token.split(".")
        header = json.loads(_b64url(header_segment))
        payload = json.loads(_b64url(payload_segment))
    except (ValueError, binascii.Error, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Unauthorized("access token is malformed", code="token_invalid") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise Unauthorized("access token is malformed", code="token_invalid")
    return header, payload


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _decode(token: str, secret: SecretStr) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            secret.get_secret_value(),
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iss"], "verify_aud": False},
            leeway=LEEWAY,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("access token has expired", code="token_expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("access token is not valid yet", code="token_not_yet_valid") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("access token signature does not verify", code="token_invalid") from None
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"access token is invalid ({type(exc).__name__})", code="token_invalid") from None


def _principal(claims: dict[str, Any], issuer: str) -> Principal:
    video = claims.get("video") or {}
    if not isinstance(video, dict):
        raise Unauthorized("access token's video grants are malformed", code="token_invalid")
    try:
        grants = VideoGrants.model_validate(video)
    except ValidationError:
        raise Unauthorized("access token's video grants are malformed", code="token_invalid") from None
    identity, name, metadata = claims.get("sub", ""), claims.get("name", ""), claims.get("metadata", "")
    if not all(isinstance(v, str) for v in (identity, name, metadata)):
        raise Unauthorized("access token's sub, name or metadata is not a string", code="token_invalid")
    return Principal(
        identity=identity,
        name=name,
        metadata=metadata,
        grants=grants,
        method=AuthMethod.TOKEN,
        api_key=issuer,
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


def mint(
    keys: KeyRing,
    *,
    identity: str,
    grants: VideoGrants,
    name: str = "",
    metadata: str = "",
    ttl: timedelta = DEFAULT_TTL,
    api_key: str | None = None,
    now: float | None = None,
) -> str:
    """A token signed by ``api_key`` (default: the first key), in LiveKit's claim shape."""
    key = api_key or keys.default_key
    if key is None or key not in keys:
        raise ValueError("no API key to sign with")
    if grants.room_join and (not identity or not grants.room):
        raise ValueError("identity and room must be set when joining a room")  # as LiveKit's to_jwt
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": key,
        "sub": identity,
        "nbf": issued,
        "exp": issued + int(ttl.total_seconds()),
        "video": grants.to_claim(),
    }
    if name:
        claims["name"] = name
    if metadata:
        claims["metadata"] = metadata
    return jwt.encode(claims, keys[key].get_secret_value(), algorithm=ALGORITHM)

"""OpenID Connect sign-in (Google by default, any OIDC provider with ``OIDC_ISSUER``).

:class:`OidcClient` does the relying party's half of the authorization-code flow
with PKCE (RFC 7636, S256), ``state`` and ``nonce``, over aiohttp (never blocking
the loop): discovery (``/.well-known/openid-configuration``, its ``issuer`` must be
the configured one), the authorization URL, the code exchange at the token
endpoint, and the verification of the ID token (PyJWT):

- signature against the provider's JWKS (``kid``; fetched again once when a key
  rotated), asymmetric algorithms only (an ``HS256`` or ``none`` ID token is refused);
- ``iss``, ``aud`` (= the client id; ``azp`` too when several audiences), ``exp``,
  ``iat``, and ``nonce`` when the flow set one;
- ``email`` present with ``email_verified`` true, and its domain in
  ``GOOGLE_ALLOWED_DOMAINS`` when that is set.

Every refusal is an :class:`~control.errors.Unauthorized` (or ``Forbidden`` for a
domain that is not allowed) with an ``oidc_*`` code; an unreachable provider is
``Unavailable``. Neither tokens nor the client secret appear in messages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
from pydantic import SecretStr

from control.errors import Forbidden, Unauthorized, Unavailable

__all__ = ["GOOGLE_ISSUER", "LoginRequest", "OidcClient", "SignedInUser", "pkce_challenge"]

GOOGLE_ISSUER = "https://accounts.google.com"
#: Google's ID tokens may carry either form of its issuer.
_ISSUER_ALIASES = {GOOGLE_ISSUER: (GOOGLE_ISSUER, "accounts.google.com")}
#: Only signature algorithms with a public key: a shared-secret (HS*) ID token would
#: be verifiable with anything the attacker knows, and ``none`` is no signature.
_ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
#: Seconds of clock skew tolerated on ``exp``/``iat``.
_LEEWAY = 60
#: At most one JWKS refetch per this many seconds (an unknown ``kid`` cannot force a storm).
_JWKS_MIN_REFRESH = 30.0


@dataclass(frozen=True, slots=True)
class SignedInUser:
    """Who signed in: the IdP's ``sub`` (the identity of their tokens), name, e-mail."""

    sub: str
    email: str
    name: str
    issuer: str

    def to_session(self) -> dict[str, str]:
        return {"sub": self.sub, "email": self.email, "name": self.name, "iss": self.issuer}

    @classmethod
    def from_session(cls, data: Any) -> SignedInUser | None:
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("sub", "email", "name", "iss")):
            return None
        return cls(sub=data["sub"], email=data["email"], name=data["name"], issuer=data["iss"])


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """The secrets of one pending sign-in, kept in the (encrypted) session until the callback."""

    state: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    code_verifier: str = field(default_factory=lambda: secrets.token_urlsafe(64))
    next_path: str = "/"
    created: float = field(default_factory=time.time)

    def to_session(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "nonce": self.nonce,
            "verifier": self.code_verifier,
            "next": self.next_path,
            "created": self.created,
        }

    @classmethod
    def from_session(cls, data: Any) -> LoginRequest | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                state=str(data["state"]),
                nonce=str(data["nonce"]),
                code_verifier=str(data["verifier"]),
                next_path=str(data["next"]),
                created=float(data["created"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def matches(self, state: str) -> bool:
        return hmac.compare_digest(self.state.encode(), state.encode())


def pkce_challenge(verifier: str) -> str:
    """The S256 ``code_challenge`` of ``verifier``."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class _Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]


class OidcClient:
    """The relying party for one provider and one client id. Call :meth:`close` at shutdown."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: SecretStr,
        allowed_domains: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.allowed_domains = tuple(d.lower() for d in allowed_domains)
        self._http: aiohttp.ClientSession | None = None
        self._provider: _Provider | None = None
        self._jwks: dict[str, jwt.PyJWK] = {}
        self._jwks_fetched = 0.0

    def __repr__(self) -> str:
        return f"OidcClient(issuer={self.issuer!r}, client_id={self.client_id!r})"

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- HTTP --------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=_HTTP_TIMEOUT)
        return self._http

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._session().get(url) as response:
                if response.status != 200:
                    raise Unavailable(f"sign-in provider answered {response.status}", code="oidc_unavailable")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            raise Unavailable("sign-in provider unreachable", code="oidc_unavailable") from None
        if not isinstance(body, dict):
            raise Unavailable("sign-in provider sent an unexpected answer", code="oidc_unavailable")
        return body

    async def provider(self) -> _Provider:
        """The provider's metadata (discovery, once); its ``issuer`` must be the configured one."""
        if self._provider is None:
            meta = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
            if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
                raise Unavailable("sign-in provider's discovery names another issuer", code="oidc_unavailable")
            try:
                offered = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
                self._provider = _Provider(
                    issuer=str(meta["issuer"]),
                    authorization_endpoint=str(meta["authorization_endpoint"]),
                    token_endpoint=str(meta["token_endpoint"]),
                    jwks_uri=str(meta["jwks_uri"]),
                    algorithms=tuple(a for a in offered if a in _ASYMMETRIC) or ("RS256",),
                )
            except KeyError as exc:
                raise Unavailable(
                    f"sign-in provider's discovery lacks {exc.args[0]}", code="oidc_unavailable"
                ) from None
        return self._provider

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        provider = await self.provider()
        key = self._find_key(kid)
        if key is None and time.monotonic() - self._jwks_fetched > _JWKS_MIN_REFRESH:
            self._jwks_fetched = time.monotonic()
            try:
                keyset = jwt.PyJWKSet.from_dict(await self._get_json(provider.jwks_uri))
            except jwt.PyJWTError:
                raise Unavailable("sign-in provider's JWKS is unusable", code="oidc_unavailable") from None
            self._jwks = {k.key_id or "": k for k in keyset.keys}
            key = self._find_key(kid)
        if key is None:
            raise Unauthorized("ID token signed by an unknown key", code="oidc_invalid")
        return key

    def _find_key(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._jwks.get(kid)
        return next(iter(self._jwks.values())) if len(self._jwks) == 1 else None

    # -- the flow ------------------------------------------------------------

    async def authorization_url(self, login: LoginRequest, redirect_uri: str) -> str:
        provider = await self.provider()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid email profile",
                "state": login.state,
                "nonce": login.nonce,
                "code_challenge": pkce_challenge(login.code_verifier),
                "code_challenge_method": "S256",
            }
        )
        return f"{provider.authorization_endpoint}?{query}"

    async def exchange_code(self, code: str, *, redirect_uri: str, code_verifier: str) -> str:
        """Trade the authorization code for the ID token (client_secret_post, PKCE verifier)."""
        provider = await self.provider()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.client_id,
            "client_secret": self._client_secret.get_secret_value(),
            "code_verifier": code_verifier,
        }
        try:
            async with self._session().post(provider.token_endpoint, data=form) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            raise Unavailable("sign-in provider unreachable", code="oidc_unavailable") from None
        if status != 200 or not isinstance(body, dict):
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise Unauthorized(f"sign-in provider refused the code ({error or status})", code="oidc_code_refused")
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthorized("sign-in provider returned no ID token", code="oidc_invalid")
        return id_token

    async def verify_id_token(self, id_token: str, *, nonce: str | None) -> SignedInUser:
        """The user of a valid ``id_token`` (see the module doc for every check)."""
        provider = await self.provider()
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise Unauthorized("ID token is malformed", code="oidc_invalid") from None
        if header.get("alg") not in provider.algorithms:
            raise Unauthorized("ID token algorithm not accepted", code="oidc_invalid")
        key = await self._key(header.get("kid"))
        issuers = _ISSUER_ALIASES.get(self.issuer, (provider.issuer,))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=list(provider.algorithms),
                audience=self.client_id,
                issuer=list(issuers),
                leeway=_LEEWAY,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.InvalidAudienceError:
            raise Unauthorized("ID token was issued for another client", code="oidc_audience") from None
        except jwt.ExpiredSignatureError:
            raise Unauthorized("ID token has expired", code="oidc_expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"ID token is invalid ({type(exc).__name__})", code="oidc_invalid") from None
        return self._user(claims, nonce, provider.issuer)

    def _user(self, claims: dict[str, Any], nonce: str | None, issuer: str) -> SignedInUser:
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise Unauthorized("ID token was issued for another client", code="oidc_audience")
        if nonce is not None:
            got = claims.get("nonce")
            if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
                raise Unauthorized("ID token nonce does not match this sign-in", code="oidc_nonce")
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise Unauthorized("the sign-in provider shared no e-mail address", code="oidc_email_missing")
        if claims.get("email_verified") not in (True, "true"):
            raise Forbidden("the e-mail address is not verified", code="oidc_email_unverified")
        domain = email.rsplit("@", 1)[1].lower()
        if self.allowed_domains and domain not in self.allowed_domains:
            raise Forbidden(f"accounts of {domain} may not sign in here", code="oidc_domain_not_allowed")
        name = claims.get("name")
        return SignedInUser(
            sub=str(claims["sub"]), email=email, name=name if isinstance(name, str) else email, issuer=issuer
        )

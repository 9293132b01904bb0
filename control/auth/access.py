"""The one access check: who is calling (a :class:`Principal`) and the helpers that ask it.

:meth:`AccessControl.authenticate` is the only code that reads credentials, for REST
and for the WebSocket upgrade alike, in this order:

1. ``Authorization: Bearer <token>``;
2. ``?token=<token>``, on a WebSocket upgrade only (browsers cannot set headers on a
   WebSocket; anywhere else a token in the URL would end up in logs and histories);
3. the signed-in session cookie (Google/OIDC sign-in), refused cross-origin;
4. no credentials: the open principal in the open modes, else 401 ``token_missing``.

Modes (:func:`resolve_policy`, checked once at start):

- **keys** (``API_KEY``/``API_SECRET`` or ``API_KEYS_FILE``): a token is needed,
  everywhere, from every address; no loopback exception.
- **open join** (``AUTH_OPEN_JOIN=true``): token-less clients (mediasoup-demo's app,
  broadcaster scripts) are full participants of any room; tokens still work.
- **dev** (no keys, loopback-only ``HOST``): everything open, as LiveKit's ``--dev``.
- a non-loopback ``HOST`` with no keys and no ``AUTH_OPEN_JOIN`` refuses to start.

:func:`auth_middleware` authenticates every protected request (WebSocket upgrades,
``/api/...``, ``/rooms/...``) before its handler runs and stores the principal under
``request[PRINCIPAL]``; public routes (``/api/health``, ``/auth/...``, the web client's
files, presigned storage URLs) are not touched, and :func:`principal_of` authenticates
them lazily if a handler asks.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp_session import get_session

from control.auth.grants import (
    AuthMethod,
    Grant,
    Principal,
    grants_from_names,
    open_principal,
)
from control.auth.keys import KeyRing, KeysConfigError, dev_keyring
from control.auth.oidc import OidcClient, SignedInUser
from control.auth.tokens import mint, verify
from control.config import ConfigError, Settings
from control.errors import Forbidden, Unauthorized

__all__ = [
    "ACCESS",
    "PRINCIPAL",
    "SESSION_USER",
    "AccessControl",
    "AuthPolicy",
    "auth_middleware",
    "authenticate",
    "is_loopback_host",
    "principal_of",
    "require_chat_read",
    "require_ingress",
    "require_record",
    "require_room_admin",
    "require_room_list",
    "require_ws_join",
    "resolve_policy",
]

#: The principal of a request, set by :func:`auth_middleware` (or lazily by :func:`principal_of`).
PRINCIPAL: Final = web.RequestKey("parley_principal", Principal)
#: Key of the signed-in user in the session (a :meth:`SignedInUser.to_session` dict).
SESSION_USER: Final = "user"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback_host(host: str) -> bool:
    """True if binding ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AuthPolicy:
    """The keys and the mode, decided once at start from the settings."""

    keys: KeyRing
    open_join: bool
    dev: bool

    @property
    def configured_keys(self) -> bool:
        return not self.keys.ephemeral

    def describe(self) -> str:
        """One line for the start-up log (key names only, never secrets)."""
        if self.dev:
            return (
                "access control: DEV MODE, no API keys and a loopback-only HOST: anyone on this machine "
                "may join, publish and administer every room (set API_KEY/API_SECRET to require tokens)"
            )
        if self.open_join and not self.configured_keys:
            return (
                "access control: AUTH_OPEN_JOIN=true and no API keys: anyone who reaches this server joins "
                "any room as a full participant (join, publish, subscribe, data, record); "
                "admin routes are closed"
            )
        keys = ", ".join(sorted(self.keys))
        if self.open_join:
            return (
                f"access control: tokens of API key(s) {keys}; AUTH_OPEN_JOIN=true: clients without a token "
                "join any room as full participants (join, publish, subscribe, data, record)"
            )
        return f"access control: a token of API key(s) {keys} is required for every room and API route"


def resolve_policy(settings: Settings) -> AuthPolicy:
    """The policy of ``settings``; raise :class:`ConfigError` (one line) when it must not start."""
    try:
        keys = KeyRing.build(settings.api_key, settings.api_secret, settings.api_keys_file)
    except KeysConfigError as exc:
        raise ConfigError(str(exc)) from None
    if keys:
        return AuthPolicy(keys, open_join=settings.auth_open_join, dev=False)
    if settings.auth_open_join:
        return AuthPolicy(dev_keyring(), open_join=True, dev=False)
    if is_loopback_host(settings.host):
        return AuthPolicy(dev_keyring(), open_join=False, dev=True)
    raise ConfigError(
        f"HOST={settings.host} accepts remote clients but no API key is configured: set API_KEY and "
        "API_SECRET (or API_KEYS_FILE), or AUTH_OPEN_JOIN=true to let anyone join without a token"
    )


class AccessControl:
    """The auth service: verifies credentials, mints tokens. Stored under :data:`ACCESS`."""

    def __init__(self, settings: Settings, policy: AuthPolicy, oidc: OidcClient | None = None) -> None:
        self.policy = policy
        self.oidc = oidc
        self.default_grants: tuple[str, ...] = tuple(settings.default_grants)
        self.token_ttl = timedelta(seconds=settings.token_ttl_seconds)
        self.public_url = settings.public_url

    @property
    def keys(self) -> KeyRing:
        return self.policy.keys

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()

    # -- authentication ------------------------------------------------------

    async def authenticate(self, request: web.Request) -> Principal:
        """The caller's principal (see the module doc); raise :class:`Unauthorized` otherwise."""
        token = _presented_token(request)
        if token is not None:
            return verify(token, self.keys)
        user = await self.signed_in_user(request)
        if user is not None:
            _check_same_origin(request)
            return self.session_principal(user)
        if self.policy.dev or self.policy.open_join:
            return open_principal(admin=self.policy.dev)
        raise Unauthorized("access token required", code="token_missing")

    async def signed_in_user(self, request: web.Request) -> SignedInUser | None:
        """The user of the session cookie, if sign-in is configured and they signed in."""
        if self.oidc is None:
            return None
        session = await get_session(request)
        return SignedInUser.from_session(session.get(SESSION_USER))

    def session_principal(self, user: SignedInUser) -> Principal:
        """A signed-in user: ``DEFAULT_GRANTS`` in every room (what ``/api/token`` would mint)."""
        return Principal(
            identity=user.sub,
            name=user.name,
            email=user.email,
            grants=grants_from_names(self.default_grants),
            method=AuthMethod.SESSION,
            metadata=_user_metadata(user),
            all_rooms=True,
        )

    # -- minting -------------------------------------------------------------

    def mint_for_user(self, user: SignedInUser, room: str) -> str:
        """A token for ``room`` with ``DEFAULT_GRANTS``, identity = the IdP's ``sub``."""
        grants = grants_from_names(self.default_grants, room=room)
        return mint(
            self.keys,
            identity=user.sub,
            name=user.name,
            metadata=_user_metadata(user),
            grants=grants,
            ttl=self.token_ttl,
        )

    def mint_open(self, identity: str, name: str, room: str) -> str:
        """A token for a caller of an open mode (no sign-in): ``DEFAULT_GRANTS`` for ``room``."""
        grants = grants_from_names(self.default_grants, room=room)
        return mint(self.keys, identity=identity, name=name, grants=grants, ttl=self.token_ttl)


def _user_metadata(user: SignedInUser) -> str:
    return json.dumps({"email": user.email}, separators=(",", ":"))


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization must be 'Bearer <access token>'", code="token_invalid")
        return value.strip()
    if "token" in request.query:
        if not _is_websocket(request):
            raise Unauthorized(
                "?token= is accepted on WebSocket connections only; send Authorization: Bearer", code="token_invalid"
            )
        return request.query["token"]
    return None


def _check_same_origin(request: web.Request) -> None:
    """A session cookie authenticates only same-origin requests (no cross-site WebSocket hijacking)."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:  # not a browser, or a same-origin navigation
        return
    if urlsplit(origin).netloc.lower() != request.host.lower():
        raise Forbidden("a signed-in session is only accepted from this site's own pages", code="cross_origin")


# -- the helpers other subsystems call --------------------------------------------


def require_ws_join(principal: Principal, room_id: str, peer_id: str) -> None:
    """May this principal join ``room_id`` as ``peer_id``? (the WebSocket upgrade and reconnects)

    403 ``wrong_room`` when ``video.room`` is another room, ``missing_grant`` without
    ``roomJoin``, ``wrong_identity`` when ``sub`` is not ``peer_id`` (also when the token
    has no ``sub``). Only the open and dev principals (no credentials) may take any peerId.
    """
    principal.require(Grant.JOIN, room_id)
    anonymous = principal.method in (AuthMethod.OPEN, AuthMethod.DEV)
    if not anonymous and principal.identity != peer_id:  # a token without sub joins as nobody
        raise Forbidden("access token is for another participant (sub is not peerId)", code="wrong_identity")


def require_room_admin(principal: Principal, room_id: str) -> None:
    """Room details, meetings (with e-mails), chat deletion, recording control over REST."""
    principal.require(Grant.ADMIN, room_id)


def require_record(principal: Principal, room_id: str) -> None:
    """Start/stop a recording from inside the room (signaling)."""
    principal.require(Grant.RECORD, room_id)


def require_room_list(principal: Principal) -> None:
    """Global routes (room list, event outbox): ``roomList`` or a roomless ``roomAdmin``."""
    if principal.can(Grant.LIST) or (principal.can(Grant.ADMIN) and principal.room is None):
        return
    raise Forbidden("access token does not grant roomList (nor roomAdmin for every room)", code="missing_grant")


def require_node_admin(principal: Principal) -> None:
    """Operating the node itself (a cluster drain): a roomless ``roomAdmin`` (a server-API token)."""
    if principal.can(Grant.ADMIN) and principal.room is None:
        return
    raise Forbidden("access token does not grant roomAdmin for every room", code="missing_grant")


def require_ingress(principal: Principal, room_id: str) -> None:
    """Broadcaster API: ``ingressAdmin`` for the room, or a participant who may join and publish there."""
    if principal.can(Grant.INGRESS, room_id):
        return
    if principal.can(Grant.JOIN, room_id) and principal.can(Grant.PUBLISH, room_id):
        return
    principal.require(Grant.INGRESS, room_id)


def require_chat_read(principal: Principal, room_id: str) -> None:
    """A room's chat history: its participants (``roomJoin``) and its admins."""
    if principal.can(Grant.JOIN, room_id) or principal.can(Grant.ADMIN, room_id):
        return
    principal.require(Grant.JOIN, room_id)


# -- aiohttp ------------------------------------------------------------------------

#: The auth service (set by ``control.auth.setup``'s cleanup_ctx).
ACCESS: Final = web.AppKey("auth_access", AccessControl)

#: Routes that never need credentials (their own checks, or public by nature).
PUBLIC_PATHS: Final = frozenset({"/api/health", "/api/token"})
#: ``/cluster/``: node-to-node endpoints, which require the cluster relay token themselves.
PUBLIC_PREFIXES: Final = ("/auth/", "/api/storage/objects/", "/cluster/")
PROTECTED_PREFIXES: Final = ("/api/", "/rooms/")


def is_protected(request: web.Request) -> bool:
    """WebSocket upgrades, ``/api/...`` and ``/rooms/...``, except the public routes."""
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return False
    return _is_websocket(request) or path.startswith(PROTECTED_PREFIXES) or path in ("/api", "/rooms")


async def principal_of(request: web.Request) -> Principal:
    """The principal of ``request``: the middleware's, or authenticated now (public routes)."""
    principal = request.get(PRINCIPAL)
    if principal is None:
        principal = await request.app[ACCESS].authenticate(request)
        request[PRINCIPAL] = principal
    return principal


authenticate = principal_of  # the name the brief and DESIGN.md use


def auth_middleware(access_key: web.AppKey[AccessControl] = ACCESS) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Authenticate protected requests before their handler (install after ``error_middleware``)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_protected(request):
            request[PRINCIPAL] = await request.app[access_key].authenticate(request)
        return await handler(request)

    return middleware

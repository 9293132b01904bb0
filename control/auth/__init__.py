"""Access control: LiveKit-shaped access tokens, per-room grants, Google/OIDC sign-in.

One package, one check. :func:`setup` installs the service (under :data:`ACCESS`), the
session cookie (when sign-in is configured), the middleware that attaches a verified
:class:`Principal` to every protected request (``request[PRINCIPAL]``), and the
``/auth/*`` and ``/api/token`` routes. Other subsystems never parse credentials:
they read the principal and call the ``require_*`` helpers or ``principal.require(Grant.X, room)``.

Wiring (app.py)::

    auth.setup(app, settings)          # first: before any route that reads the principal

    # signaling, before the upgrade:
    principal = await auth.authenticate(request)
    auth.require_ws_join(principal, room_id, peer_id)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp_session import AbstractStorage, Session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from loguru import logger

from control.auth.access import (
    ACCESS,
    PRINCIPAL,
    AccessControl,
    AuthPolicy,
    auth_middleware,
    authenticate,
    is_loopback_host,
    principal_of,
    require_chat_read,
    require_ingress,
    require_node_admin,
    require_record,
    require_room_admin,
    require_room_list,
    require_ws_join,
    resolve_policy,
)
from control.auth.grants import (
    GRANT_NAMES,
    AuthMethod,
    Grant,
    Principal,
    TrackSource,
    VideoGrants,
    grants_from_names,
    open_principal,
    source_of,
)
from control.auth.oidc import OidcClient, SignedInUser
from control.auth.routes import routes
from control.auth.tokens import mint, verify
from control.config import Settings

__all__ = [
    "ACCESS",
    "GRANT_NAMES",
    "PRINCIPAL",
    "SESSION_COOKIE",
    "AccessControl",
    "AuthMethod",
    "AuthPolicy",
    "Grant",
    "OidcClient",
    "Principal",
    "SignedInUser",
    "TrackSource",
    "VideoGrants",
    "authenticate",
    "grants_from_names",
    "is_loopback_host",
    "mint",
    "open_principal",
    "principal_of",
    "require_chat_read",
    "require_ingress",
    "require_node_admin",
    "require_record",
    "require_room_admin",
    "require_room_list",
    "require_ws_join",
    "resolve_policy",
    "setup",
    "source_of",
    "verify",
]

#: Name of the session cookie (signed and encrypted: Fernet, AES-128-CBC + HMAC-SHA256).
SESSION_COOKIE = "parley_session"
#: Lifetime of a sign-in (seconds).
SESSION_MAX_AGE = 7 * 24 * 3600


class _SessionStorage(AbstractStorage):
    """aiohttp-session's encrypted cookie (HttpOnly, SameSite=Lax), ``Secure`` whenever the
    request came over TLS or ``PUBLIC_URL`` is https: two stock storages with one key,
    picked per request (no private member of aiohttp-session is touched)."""

    def __init__(self, key: bytes, *, always_secure: bool) -> None:
        params: dict[str, Any] = {
            "cookie_name": SESSION_COOKIE,
            "max_age": SESSION_MAX_AGE,
            "httponly": True,
            "samesite": "Lax",
            "path": "/",
        }
        super().__init__(**params)
        self._plain = EncryptedCookieStorage(key, secure=always_secure, **params)
        self._tls = EncryptedCookieStorage(key, secure=True, **params)

    def _storage(self, request: web.Request) -> EncryptedCookieStorage:
        return self._tls if request.secure else self._plain

    async def new_session(self) -> Session:
        return await self._plain.new_session()

    async def load_session(self, request: web.Request) -> Session:
        return await self._storage(request).load_session(request)

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        await self._storage(request).save_session(request, response, session)


def _session_key(settings: Settings) -> bytes:
    """The 32 raw bytes of the Fernet key: derived from ``SESSION_SECRET``, or random for this process (with a warning)."""
    if settings.session_secret is None:
        logger.warning(
            "sign-in: SESSION_SECRET is unset: sessions are signed with a per-process key "
            "(everyone is signed out at restart, and other nodes do not accept them)"
        )
        return os.urandom(32)
    return hashlib.sha256(b"parley-session\0" + settings.session_secret.get_secret_value().encode()).digest()


def _oidc_client(settings: Settings) -> OidcClient | None:
    if settings.google_client_id is None or settings.google_client_secret is None:
        return None
    return OidcClient(
        issuer=settings.oidc_issuer,
        client_id=settings.google_client_id,
        client_secret=settings.google_client_secret,
        allowed_domains=settings.google_allowed_domains,
    )


def session_storage(settings: Settings) -> AbstractStorage:
    secure = bool(settings.public_url and settings.public_url.startswith("https://"))
    return _SessionStorage(_session_key(settings), always_secure=secure)


def setup(app: web.Application, settings: Settings) -> AccessControl:
    """Install access control on ``app``; raise :class:`~control.config.ConfigError` if it must not start.

    Call it before the routes of the other subsystems are added; the middlewares are
    appended (after ``error_middleware``, so refusals get the JSON error shape).
    """
    policy = resolve_policy(settings)
    access = AccessControl(settings, policy, _oidc_client(settings))
    app[ACCESS] = access
    if access.oidc is not None:
        app.middlewares.append(session_middleware(session_storage(settings)))
    app.middlewares.append(auth_middleware())
    app.add_routes(routes)

    async def auth_ctx(_app: web.Application) -> AsyncIterator[None]:
        (logger.warning if policy.dev or policy.open_join else logger.info)(policy.describe())
        if access.oidc is not None:
            logger.info(
                "sign-in: OpenID Connect with {} (client {}), allowed domains: {}",
                access.oidc.issuer,
                access.oidc.client_id,
                ", ".join(access.oidc.allowed_domains) or "any verified e-mail",
            )
        try:
            yield
        finally:
            await access.close()

    app.cleanup_ctx.append(auth_ctx)
    return access

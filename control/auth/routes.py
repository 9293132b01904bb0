"""Sign-in and token routes.

- ``GET /auth/login?next=/path``: start the OIDC authorization-code flow (PKCE, state, nonce);
- ``GET /auth/callback``: finish it, set the session cookie, redirect to ``next``;
- ``POST /auth/google``: a Google Identity Services ID token (``credential``) from a
  single-page app, same checks, same session;
- ``POST /auth/logout``: forget the session;
- ``GET /auth/me``: who the session (or token) is, for the web client;
- ``GET /api/token?room=R``: a Parley access token for the signed-in user (identity =
  the IdP ``sub``, ``DEFAULT_GRANTS``); in the open and dev modes, for ``identity``/``name``
  given in the query, without sign-in.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import hdrs, web
from aiohttp_session import get_session, new_session
from loguru import logger

from control.auth.access import ACCESS, SESSION_USER, AccessControl
from control.auth.oidc import LoginRequest, OidcClient, SignedInUser
from control.errors import BadRequest, NotFound, ParleyError, Unauthorized
from control.http import error_response
from control.ids import InvalidId, validate_peer_id, validate_room_id

__all__ = ["routes"]

routes = web.RouteTableDef()

#: Session key of the pending sign-in.
_LOGIN = "oidc_login"
#: How long a user has to come back from the provider.
_LOGIN_MAX_AGE = 600.0


def _access(request: web.Request) -> AccessControl:
    return request.app[ACCESS]


def _oidc(request: web.Request) -> OidcClient:
    oidc = _access(request).oidc
    if oidc is None:
        raise NotFound("sign-in is not configured (GOOGLE_CLIENT_ID)", code="signin_disabled")
    return oidc


def _redirect_uri(request: web.Request) -> str:
    base = _access(request).public_url or f"{request.scheme}://{request.host}"
    return f"{base}/auth/callback"


def _safe_next(value: str | None) -> str:
    """Only a path of this site (no open redirect to ``//evil`` or ``https://evil``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


async def _sign_in(request: web.Request, user: SignedInUser) -> None:
    session = await new_session(request)  # a fresh session id on sign-in: no fixation
    session[SESSION_USER] = user.to_session()
    logger.info("sign-in: {} signed in", user.sub)  # the sub only: e-mails stay out of logs


def _user_json(user: SignedInUser) -> dict[str, str]:
    return {"identity": user.sub, "name": user.name, "email": user.email}


@routes.get("/auth/login")
async def login(request: web.Request) -> web.StreamResponse:
    oidc = _oidc(request)
    pending = LoginRequest(next_path=_safe_next(request.query.get("next")))
    url = await oidc.authorization_url(pending, _redirect_uri(request))
    session = await get_session(request)
    session[_LOGIN] = pending.to_session()
    raise web.HTTPFound(url)


@routes.get("/auth/callback")
async def callback(request: web.Request) -> web.StreamResponse:
    oidc = _oidc(request)
    session = await get_session(request)
    pending = LoginRequest.from_session(session.pop(_LOGIN, None))  # one use only, even when refused
    try:
        return await _finish_login(request, oidc, pending)
    except ParleyError as error:
        # Answered, not raised: the session middleware saves the session (the pending
        # sign-in is gone) only for a returned response.
        logger.warning("sign-in refused: {} ({})", error.message, error.code)
        return error_response(error)


async def _finish_login(request: web.Request, oidc: OidcClient, pending: LoginRequest | None) -> web.StreamResponse:
    if "error" in request.query:
        raise Unauthorized(f"sign-in refused by the provider ({request.query['error'][:64]})", code="oidc_denied")
    state, code = request.query.get("state", ""), request.query.get("code", "")
    if pending is None or time.time() - pending.created > _LOGIN_MAX_AGE:
        raise Unauthorized("no sign-in in progress (or it took too long): start again", code="oidc_state")
    if not state or not pending.matches(state):
        raise Unauthorized("sign-in state does not match", code="oidc_state")
    if not code:
        raise BadRequest("missing code", field="code")
    id_token = await oidc.exchange_code(code, redirect_uri=_redirect_uri(request), code_verifier=pending.code_verifier)
    user = await oidc.verify_id_token(id_token, nonce=pending.nonce)
    await _sign_in(request, user)
    # A plain 302 returned, not an HTTPException (returning one is deprecated in aiohttp,
    # and raising it would skip the session's save, see callback()).
    return web.Response(status=302, headers={hdrs.LOCATION: pending.next_path})


@routes.post("/auth/google")
async def google(request: web.Request) -> web.StreamResponse:
    """A GIS ``credential``: JSON ``{"credential": ...}`` or GIS's form post (``g_csrf_token`` checked)."""
    oidc = _oidc(request)
    if request.content_type == "application/json":
        try:
            body: Any = await request.json()
        except ValueError:
            raise BadRequest("body must be JSON") from None
        credential = body.get("credential") if isinstance(body, dict) else None
    else:
        form = await request.post()
        credential = form.get("credential")
        # GIS's redirect mode posts a form with g_csrf_token, also set as a cookie (double submit).
        csrf, cookie = form.get("g_csrf_token"), request.cookies.get("g_csrf_token", "")
        if not isinstance(csrf, str) or not csrf or not secrets.compare_digest(csrf, cookie):
            raise Unauthorized("g_csrf_token cookie and form value differ", code="oidc_csrf")
    if not isinstance(credential, str) or not credential:
        raise BadRequest("missing credential (the Google ID token)", field="credential")
    user = await oidc.verify_id_token(credential, nonce=None)
    await _sign_in(request, user)
    return web.json_response(_user_json(user))


@routes.post("/auth/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    if _access(request).oidc is not None:
        session = await get_session(request)
        session.invalidate()
    return web.Response(status=204)


@routes.get("/auth/me")
async def me(request: web.Request) -> web.StreamResponse:
    access = _access(request)
    user = await access.signed_in_user(request)
    return web.json_response(
        {
            "signedIn": user is not None,
            "user": _user_json(user) if user else None,
            "signInEnabled": access.oidc is not None,
            "openJoin": access.policy.open_join or access.policy.dev,
        }
    )


@routes.get("/api/token")
async def token(request: web.Request) -> web.StreamResponse:
    access = _access(request)
    try:
        room = validate_room_id(request.query.get("room"), field="room")
        identity = validate_peer_id(request.query.get("identity") or secrets.token_hex(8), field="identity")
    except InvalidId as exc:
        raise BadRequest(exc.message, field=exc.field) from None
    user = await access.signed_in_user(request)
    if user is not None:
        jwt_token, identity = access.mint_for_user(user, room), user.sub
    elif access.policy.open_join or access.policy.dev:
        name = request.query.get("name", "")[:256]
        jwt_token = access.mint_open(identity, name, room)
    else:
        raise Unauthorized("sign in first (GET /auth/login)", code="not_signed_in")
    expires = datetime.fromtimestamp(time.time() + access.token_ttl.total_seconds(), UTC)
    return web.json_response(
        {"token": jwt_token, "identity": identity, "room": room, "expiresAt": expires.isoformat(timespec="seconds")},
        headers={"Cache-Control": "no-store"},
    )

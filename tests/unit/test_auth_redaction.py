"""Log redaction of what access control handles: tokens, signatures, Authorization, cookies."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from control.auth.grants import VideoGrants
from control.auth.keys import KeyRing
from control.auth.tokens import mint
from control.logging import redact, redact_text

JWT = mint(KeyRing({"k": SecretStr("x" * 40)}), identity="ann", grants=VideoGrants(room="r", room_join=True))
FERNET = "gAAAAABnAbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_=="


@pytest.mark.parametrize(
    "line",
    [
        f"GET /?roomId=r&peerId=ann&token={JWT} HTTP/1.1",
        f"Authorization: Bearer {JWT}",
        f'127.0.0.1 "GET /api/rooms HTTP/1.1" 200 Authorization={JWT}',
        f"Cookie: parley_session={FERNET}",
        f"Cookie: theme=dark; parley_session={FERNET}",
        f'Set-Cookie: parley_session="{FERNET}"; HttpOnly; Path=/; SameSite=Lax',
        f"verifying {JWT} failed",  # a bare JWT, no name around it
        f"cookie value {FERNET}",
        f"/api/storage/objects/a/b?expires=1&signature={'ab12' * 16}",
        f"GET /auth/callback?code={'C' * 40}&state={'S' * 40} HTTP/1.1",
        f"POST /oauth2/authorize?client_id=p&nonce={'N' * 40}&code_challenge={'H' * 43}",
        f'{{"credential": "{JWT}"}}',
    ],
)
def test_secret_masked(line: str) -> None:
    masked = redact_text(line)
    for secret in (JWT, FERNET, "ab12" * 16, "C" * 40, "S" * 40, "N" * 40, "H" * 43):
        assert secret not in masked, masked
    assert "***" in masked


def test_ordinary_lines_untouched() -> None:
    for line in (
        "access token is signed by an unknown API key (unknown_key)",
        "error code=token_invalid",
        "GET /api/rooms/r1/meetings HTTP/1.1",
        "sign-in: alice-sub signed in",
    ):
        assert redact_text(line) == line


def test_settings_of_access_control_masked() -> None:
    masked = redact(
        {
            "API_SECRET": "s" * 40,
            "GOOGLE_CLIENT_SECRET": "c" * 40,
            "SESSION_SECRET": "z" * 40,
            "GOOGLE_CLIENT_ID": "id.apps.googleusercontent.com",
        }
    )
    assert masked["API_SECRET"] == masked["GOOGLE_CLIENT_SECRET"] == masked["SESSION_SECRET"] == "***"
    assert masked["GOOGLE_CLIENT_ID"] == "id.apps.googleusercontent.com"

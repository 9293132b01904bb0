"""The modes decided at start, and the access helpers other subsystems call."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from control.auth import (
    AuthMethod,
    Grant,
    Principal,
    VideoGrants,
    is_loopback_host,
    open_principal,
    require_chat_read,
    require_ingress,
    require_record,
    require_room_admin,
    require_room_list,
    require_ws_join,
    resolve_policy,
)
from control.config import ConfigError, Settings, load_settings
from control.errors import Forbidden

SECRET = "p" * 40


def settings(**values: object) -> Settings:
    return load_settings(_env_file=None, **values)


def token_principal(identity: str = "ann", **video: object) -> Principal:
    return Principal(identity=identity, grants=VideoGrants.model_validate(video), method=AuthMethod.TOKEN)


def test_host_defaults_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOST", raising=False)
    assert settings().host == "127.0.0.1"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_public_hosts(host: str) -> None:
    assert not is_loopback_host(host)


def test_dev_mode_on_loopback_without_keys() -> None:
    policy = resolve_policy(settings(host="127.0.0.1"))
    assert policy.dev and not policy.open_join and policy.keys.ephemeral and "DEV MODE" in policy.describe()


def test_public_host_without_keys_refuses_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_policy(settings(host="0.0.0.0"))
    assert "\n" not in str(err.value) and "API_KEY" in str(err.value)


def test_open_join_without_keys() -> None:
    policy = resolve_policy(settings(host="0.0.0.0", auth_open_join=True))
    assert policy.open_join and not policy.dev and "AUTH_OPEN_JOIN" in policy.describe()


def test_keys_mean_no_open_mode_even_on_loopback() -> None:
    policy = resolve_policy(settings(host="127.0.0.1", api_key="k", api_secret=SECRET))
    assert not policy.dev and not policy.open_join and list(policy.keys) == ["k"]
    assert SECRET not in policy.describe() and "k" in policy.describe()


def test_keys_file_error_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("k: short\n")
    with pytest.raises(ConfigError, match="shorter than 32"):
        resolve_policy(settings(api_keys_file=path))


def test_settings_lists() -> None:
    s = settings(default_grants="join, subscribe", google_allowed_domains="@Example.org,corp.example")
    assert s.default_grants == ["join", "subscribe"] and s.google_allowed_domains == ["example.org", "corp.example"]
    with pytest.raises(ConfigError, match="DEFAULT_GRANTS"):
        settings(default_grants="join,sudo")
    with pytest.raises(ConfigError, match="SESSION_SECRET"):
        settings(session_secret="short")
    with pytest.raises(ConfigError, match="GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET"):
        settings(google_client_id="id")
    assert "***" in repr(settings(google_client_id="id", google_client_secret=SecretStr("x" * 40)))


# -- helpers ------------------------------------------------------------------------


def test_ws_join() -> None:
    require_ws_join(token_principal(room="r", roomJoin=True), "r", "ann")
    with pytest.raises(Forbidden) as err:
        require_ws_join(token_principal(room="r", roomJoin=True), "other", "ann")
    assert err.value.code == "wrong_room"
    with pytest.raises(Forbidden) as err:
        require_ws_join(token_principal(room="r", roomJoin=True), "r", "bob")
    assert err.value.code == "wrong_identity"
    with pytest.raises(Forbidden) as err:
        require_ws_join(token_principal(room="r", roomJoin=False), "r", "ann")
    assert err.value.code == "missing_grant" and "roomJoin" in err.value.message
    with pytest.raises(Forbidden):
        require_ws_join(token_principal(room="r"), "r", "ann")  # roomJoin unset
    with pytest.raises(Forbidden):
        require_ws_join(token_principal(roomJoin=True, roomAdmin=True), "r", "ann")  # roomless
    with pytest.raises(Forbidden) as err:
        require_ws_join(token_principal(identity="", room="r", roomJoin=True), "r", "ann")  # no sub
    assert err.value.code == "wrong_identity"
    require_ws_join(open_principal(admin=False), "any", "whoever")
    require_ws_join(open_principal(admin=True), "any", "whoever")


def test_room_admin() -> None:
    require_room_admin(token_principal(room="r", roomAdmin=True), "r")
    require_room_admin(token_principal(roomAdmin=True), "r")  # roomless admin: every room
    with pytest.raises(Forbidden):
        require_room_admin(token_principal(room="other", roomAdmin=True), "r")
    with pytest.raises(Forbidden):
        require_room_admin(token_principal(room="r", roomJoin=True), "r")
    with pytest.raises(Forbidden):
        require_room_admin(open_principal(admin=False), "r")
    require_room_admin(open_principal(admin=True), "r")


def test_room_list() -> None:
    require_room_list(token_principal(roomList=True))
    require_room_list(token_principal(roomAdmin=True))
    with pytest.raises(Forbidden):
        require_room_list(token_principal(room="r", roomAdmin=True))  # admin of one room only
    with pytest.raises(Forbidden):
        require_room_list(token_principal(room="r", roomJoin=True))
    with pytest.raises(Forbidden):
        require_room_list(open_principal(admin=False))


def test_ingress() -> None:
    require_ingress(token_principal(ingressAdmin=True), "r")
    require_ingress(token_principal(room="r", ingressAdmin=True), "r")
    require_ingress(token_principal(room="r", roomJoin=True), "r")  # canPublish defaults to true
    require_ingress(open_principal(admin=False), "r")
    with pytest.raises(Forbidden):
        require_ingress(token_principal(room="r", roomJoin=True, canPublish=False), "r")
    with pytest.raises(Forbidden):
        require_ingress(token_principal(room="other", roomJoin=True), "r")
    with pytest.raises(Forbidden):
        require_ingress(token_principal(room="r", roomRecord=True), "r")  # not a participant


def test_chat_read_and_record() -> None:
    require_chat_read(token_principal(room="r", roomJoin=True), "r")
    require_chat_read(token_principal(roomAdmin=True), "r")
    with pytest.raises(Forbidden):
        require_chat_read(token_principal(room="other", roomJoin=True), "r")
    require_record(token_principal(room="r", roomJoin=True, roomRecord=True), "r")
    with pytest.raises(Forbidden):
        require_record(token_principal(room="r", roomJoin=True), "r")
    assert open_principal(admin=False).can(Grant.RECORD, "r")

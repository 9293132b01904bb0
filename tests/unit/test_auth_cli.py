"""``parley token create`` and the start-up refusal of ``parley run``."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest
from livekit.api import TokenVerifier

from control.cli import EXIT_CONFIG, EXIT_OK, main, parse_duration

KEY, SECRET = "clikey", "c" * 40


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> pytest.MonkeyPatch:
    monkeypatch.chdir(str(tmp_path))  # no ./.env
    for name in ("API_KEY", "API_SECRET", "API_KEYS_FILE", "AUTH_OPEN_JOIN", "HOST", "DEFAULT_GRANTS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_token_create(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env.setenv("API_KEY", KEY)
    env.setenv("API_SECRET", SECRET)
    argv = [
        "token",
        "create",
        "--room",
        "r1",
        "--identity",
        "ann",
        "--name",
        "Ann",
        "--grants",
        "join,subscribe,data,hidden",
        "--ttl",
        "30m",
    ]
    assert main(argv) == EXIT_OK
    out, err = capsys.readouterr()
    token = out.strip()
    assert "\n" not in token and not err
    claims = TokenVerifier(KEY, SECRET).verify(token)
    assert claims.identity == "ann" and claims.name == "Ann" and claims.video is not None
    assert claims.video.room == "r1" and claims.video.room_join and claims.video.hidden
    assert claims.video.can_publish is False and claims.video.can_subscribe is True


def test_token_create_default_grants_and_sources(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env.setenv("API_KEY", KEY)
    env.setenv("API_SECRET", SECRET)
    assert main(["token", "create", "--room", "r", "--identity", "i", "--sources", "camera,microphone"]) == EXIT_OK
    video = TokenVerifier(KEY, SECRET).verify(capsys.readouterr().out.strip()).video
    assert video is not None and video.room_join and video.can_publish and video.can_publish_data
    assert video.can_publish_sources == ["camera", "microphone"] and not video.room_admin


def test_token_create_admin_token_without_room(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env.setenv("API_KEY", KEY)
    env.setenv("API_SECRET", SECRET)
    assert main(["token", "create", "--grants", "admin,list"]) == EXIT_OK
    video = TokenVerifier(KEY, SECRET).verify(capsys.readouterr().out.strip()).video
    assert video is not None and video.room_admin and video.room_list and not video.room


def test_token_create_needs_keys(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "create", "--room", "r", "--identity", "i"]) == EXIT_CONFIG
    assert "API_KEY" in capsys.readouterr().err


def test_token_create_bad_grant(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env.setenv("API_KEY", KEY)
    env.setenv("API_SECRET", SECRET)
    assert main(["token", "create", "--room", "r", "--identity", "i", "--grants", "join,root"]) == EXIT_CONFIG
    assert "unknown grant" in capsys.readouterr().err


def test_join_token_needs_identity(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env.setenv("API_KEY", KEY)
    env.setenv("API_SECRET", SECRET)
    assert main(["token", "create", "--room", "r"]) == EXIT_CONFIG
    assert "identity and room" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6h", timedelta(hours=6)),
        ("30m", timedelta(minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("90", timedelta(seconds=90)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "0s", "6x"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_run_refuses_public_host_without_keys(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env.setenv("HOST", "0.0.0.0")
    assert main(["run"]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "HOST=0.0.0.0" in err and "API_KEY" in err and "AUTH_OPEN_JOIN" in err

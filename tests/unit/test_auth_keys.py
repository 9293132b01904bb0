"""API keys: the pair, the keys file, secret length; secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from control.auth.keys import MIN_SECRET_LENGTH, KeyRing, KeysConfigError, dev_keyring, parse_keys_file
from control.config import ConfigError, load_settings

SECRET = "s" * MIN_SECRET_LENGTH


def test_pair() -> None:
    keys = KeyRing.build("key1", SecretStr(SECRET))
    assert list(keys) == ["key1"] and keys.default_key == "key1" and not keys.ephemeral
    assert SECRET not in repr(keys)


def test_pair_must_be_complete() -> None:
    with pytest.raises(KeysConfigError, match="together"):
        KeyRing.build("key1", None)


def test_short_secret_refused_without_echoing_it() -> None:
    with pytest.raises(KeysConfigError) as err:
        KeyRing.build("key1", SecretStr("short-secret"))
    assert "32" in str(err.value) and "short-secret" not in str(err.value)


def test_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"# rotation\nold: {'o' * 40}\n\nnew:   {'n' * 48}  \n")
    keys = parse_keys_file(path)
    assert {k: v.get_secret_value() for k, v in keys.items()} == {"old": "o" * 40, "new": "n" * 48}
    ring = KeyRing.build("main", SecretStr(SECRET), path)
    assert list(ring) == ["main", "old", "new"] and ring.default_key == "main"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no 'key: secret' line"),
        ("just-a-key\n", "line 1: expected 'key: secret'"),
        (f"a: {'x' * 40}\na: {'y' * 40}\n", "line 2: key 'a' appears twice"),
        ("a: tooshortsecret\n", "line 1: the secret of key 'a' is shorter than 32"),
        (f"two words: {'x' * 40}\n", "without spaces"),
    ],
)
def test_keys_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(KeysConfigError, match=message) as err:
        parse_keys_file(path)
    assert "tooshortsecret" not in str(err.value)


def test_keys_file_missing(tmp_path: Path) -> None:
    with pytest.raises(KeysConfigError, match="cannot read"):
        parse_keys_file(tmp_path / "absent")


def test_file_and_pair_disagree(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"main: {'z' * 40}\n")
    with pytest.raises(KeysConfigError, match="another secret"):
        KeyRing.build("main", SecretStr(SECRET), path)


def test_dev_keyring_is_random_and_ephemeral() -> None:
    a, b = dev_keyring(), dev_keyring()
    assert a.ephemeral and len(a) == 1 and list(a) != list(b)
    assert len(a[a.default_key or ""].get_secret_value()) >= MIN_SECRET_LENGTH


def test_settings_refuse_short_api_secret_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_env_file=None, api_key="k", api_secret="tooshort")
    text = str(err.value)
    assert "API_SECRET" in text and "32" in text and "tooshort" not in text and "\n" not in text


def test_settings_refuse_half_a_pair() -> None:
    with pytest.raises(ConfigError, match="API_KEY and API_SECRET must be set together"):
        load_settings(_env_file=None, api_key="k")

"""API keys: which secret signs the tokens of which key (``iss``).

Keys come from ``API_KEY`` + ``API_SECRET`` and from ``API_KEYS_FILE`` (LiveKit's
format: one ``key: secret`` per line, ``#`` comments and blank lines ignored), so a
new key can be added before the old one is retired. Every secret is at least
:data:`MIN_SECRET_LENGTH` characters (HS256 with a short secret can be brute
forced offline from any token); a shorter one refuses the start with one line.

Secrets are held as :class:`pydantic.SecretStr`: ``repr``/``str`` show ``**********``
and nothing here logs them; error messages name the key and the line, never the secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

__all__ = ["MIN_SECRET_LENGTH", "KeyRing", "KeysConfigError", "dev_keyring", "parse_keys_file"]

#: Shortest accepted secret (LiveKit's server refuses shorter ones too).
MIN_SECRET_LENGTH = 32


class KeysConfigError(ValueError):
    """Unusable key configuration; ``str()`` is one line naming the variable or line, never a secret."""


@dataclass(frozen=True)
class KeyRing(Mapping[str, SecretStr]):
    """API key -> secret. ``ephemeral`` is true for the per-process dev key."""

    entries: Mapping[str, SecretStr] = field(default_factory=dict)
    ephemeral: bool = False

    def __getitem__(self, key: str) -> SecretStr:
        return self.entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"KeyRing(keys={sorted(self.entries)!r}, ephemeral={self.ephemeral})"

    @property
    def default_key(self) -> str | None:
        """The key that signs Parley's own tokens: the first configured one."""
        return next(iter(self.entries), None)

    @classmethod
    def build(cls, api_key: str | None, api_secret: SecretStr | None, keys_file: Path | None = None) -> KeyRing:
        """The keys of the settings; raise :class:`KeysConfigError` on anything unusable."""
        found: dict[str, SecretStr] = {}
        if (api_key is None) != (api_secret is None):
            raise KeysConfigError("API_KEY and API_SECRET must be set together")
        if api_key is not None and api_secret is not None:
            _check(api_key, api_secret, "API_SECRET")
            found[api_key] = api_secret
        if keys_file is not None:
            for key, secret in parse_keys_file(keys_file).items():
                if key in found and found[key].get_secret_value() != secret.get_secret_value():
                    raise KeysConfigError(f"API_KEYS_FILE: key {key!r} also set by API_KEY with another secret")
                found.setdefault(key, secret)
        return cls(found)


def _check(key: str, secret: SecretStr, where: str) -> None:
    if not key or any(c.isspace() for c in key) or ":" in key:
        raise KeysConfigError(f"{where}: API key {key!r} must be non-empty, without spaces or ':'")
    if len(secret.get_secret_value()) < MIN_SECRET_LENGTH:
        raise KeysConfigError(
            f"{where}: the secret of key {key!r} is shorter than {MIN_SECRET_LENGTH} characters "
            f"(generate one with: openssl rand -base64 48)"
        )


def parse_keys_file(path: Path) -> dict[str, SecretStr]:
    """Read ``key: secret`` lines (LiveKit's ``--key-file`` format)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeysConfigError(f"API_KEYS_FILE: cannot read {path}: {exc.strerror or exc}") from None
    keys: dict[str, SecretStr] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, secret = line.partition(":")
        key, secret = key.strip(), secret.strip()
        where = f"API_KEYS_FILE {path} line {number}"
        if not sep or not key or not secret:
            raise KeysConfigError(f"{where}: expected 'key: secret'")
        if key in keys:
            raise KeysConfigError(f"{where}: key {key!r} appears twice")
        _check(key, SecretStr(secret), where)
        keys[key] = SecretStr(secret)
    if not keys:
        raise KeysConfigError(f"API_KEYS_FILE {path}: no 'key: secret' line")
    return keys


def dev_keyring() -> KeyRing:
    """A per-process random key for dev mode (no keys configured, loopback-only bind).

    It signs the tokens ``GET /api/token`` hands out in dev mode; they stop verifying
    when the process restarts, which is what a dev server wants.
    """
    return KeyRing({"dev-" + secrets.token_hex(4): SecretStr(secrets.token_urlsafe(48))}, ephemeral=True)

"""The credential vault: connection secrets encrypted at rest with MultiFernet.

Keys come from RELINK_SECRET_KEYS (comma-separated, the first one encrypts,
all of them decrypt) or, on the embedded default, from a key file created once
with 0600 permissions. Errors name the connection, never a key or ciphertext.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from relink.errors import VaultError
from relink.settings import Settings


class Vault:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise VaultError("no encryption key configured: set RELINK_SECRET_KEYS")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except (ValueError, TypeError):
            raise VaultError(
                "RELINK_SECRET_KEYS holds a value that is not a Fernet key "
                "(32 url-safe base64 bytes; make one with `relink keys generate`)"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        configured = settings.secret_keys.get_secret_value()
        if configured.strip():
            return cls([k.strip() for k in configured.split(",") if k.strip()])
        return cls(load_or_create_key_file(settings.key_file))

    def encrypt(self, credentials: Mapping[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(dict(credentials)).encode()).decode()

    def decrypt(self, token: str, *, connection: str) -> dict[str, str]:
        """The credentials of `connection` (its name or id, used only in the error)."""
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError, TypeError):
            raise VaultError(
                f"the credentials of connection {connection} do not decrypt with the "
                "configured keys (wrong or missing key in RELINK_SECRET_KEYS, or corrupted data)"
            ) from None

    def rotate(self, token: str, *, connection: str) -> str:
        """The same credentials, encrypted under the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise VaultError(
                f"the credentials of connection {connection} do not decrypt with the "
                "configured keys; nothing was re-encrypted"
            ) from None


def generate_key() -> str:
    return Fernet.generate_key().decode()


def load_or_create_key_file(path: Path) -> list[str]:
    """Keys from the key file, one per line, newest first; created on first use."""
    if path.exists():
        keys = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if keys:
            return keys
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    print(
        f"relink: created encryption key file {path} (0600); back it up, or set "
        "RELINK_SECRET_KEYS in production",
        file=sys.stderr,
    )
    return [key]


def prepend_key_file(path: Path, key: str) -> None:
    """Put a new key first in the key file (the old ones still decrypt)."""
    existing = path.read_text() if path.exists() else ""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n" + existing)
    tmp.replace(path)

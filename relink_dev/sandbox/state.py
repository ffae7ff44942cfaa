"""The sandbox's optional state file: clients, live token sets and API keys as JSON,
written atomically and owner-only (it holds demo secrets) after every change, and read
back when a provider starts on the same file, so tokens survive a restart."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .models import SandboxClient, SandboxToken

STATE_VERSION = 1


@dataclass(frozen=True)
class SandboxState:
    clients: list[SandboxClient]
    tokens: list[SandboxToken]
    api_keys: dict[str, bool]  # key -> forbidden


def save_state(
    path: Path,
    clients: Iterable[SandboxClient],
    tokens: Iterable[SandboxToken],
    api_keys: Mapping[str, bool],
) -> None:
    snapshot = {
        "version": STATE_VERSION,
        "clients": [asdict(c) for c in clients],
        "tokens": [asdict(t) for t in tokens],
        "api_keys": dict(api_keys),
    }
    _write_private(path, json.dumps(snapshot, indent=1, sort_keys=True))


def load_state(path: Path) -> SandboxState:
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: unsupported sandbox state version")
    return SandboxState(
        clients=[SandboxClient(**raw) for raw in data.get("clients", [])],
        tokens=[SandboxToken(**raw) for raw in data.get("tokens", [])],
        api_keys={str(k): bool(v) for k, v in data.get("api_keys", {}).items()},
    )


def _write_private(path: Path, text: str) -> None:
    """Atomic write, owner-only (the file holds demo secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)

"""What the demo and the tests find in the sandbox: the ``relink-demo`` OAuth client (any
loopback callback), the ``demo-api-key`` API key (`seed_demo`), and the deterministic
rows its record APIs answer (`demo_records`)."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .models import SandboxClient

if TYPE_CHECKING:
    from .provider import SandboxProvider

DEMO_CLIENT_ID = "relink-demo"
DEMO_CLIENT_SECRET = "relink-demo-secret"  # public demo credential, not a secret
DEMO_REDIRECT_URI = "http://127.0.0.1:8000/oauth/callback"
DEMO_API_KEY = "demo-api-key"
# what the demo's connections ask for (Salesforce's scopes), and the sandbox's own
DEMO_SCOPE = "api refresh_token profile openid email"
_RECORDS_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def seed_demo(provider: SandboxProvider) -> SandboxClient:
    """Register the ``relink-demo`` client (any loopback callback) and ``demo-api-key``."""
    provider.add_api_key(DEMO_API_KEY)
    return provider.register_client(
        DEMO_CLIENT_ID,
        DEMO_CLIENT_SECRET,
        [DEMO_REDIRECT_URI],
        DEMO_SCOPE,
        allow_loopback_redirects=True,
    )


def demo_records(name: str, limit: int | None = None, total: int = 25) -> list[dict[str, Any]]:
    """Deterministic demo rows for dataset refresh, ``total`` per ``name``."""
    count = total if limit is None else max(0, min(limit, total))
    return [_demo_record(name, i) for i in range(1, count + 1)]


def _demo_record(name: str, index: int) -> dict[str, Any]:
    seed = zlib.crc32(f"{name}:{index}".encode())
    created = _RECORDS_EPOCH + timedelta(hours=index * 7, minutes=seed % 60)
    return {
        "id": index,
        "name": f"{name} #{index}",
        "amount": round((seed % 100_000) / 100, 2),
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }

"""Local OAuth 2.0 sandbox provider (Authlib + Flask) for tests, demos and benchmarks:
`SandboxProvider` is the provider and its public API, `SandboxServer` runs it on a
loopback port, `seed_demo` gives it the demo's client and API key."""

from .demo import (
    DEMO_API_KEY,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_REDIRECT_URI,
    demo_records,
    seed_demo,
)
from .faults import FaultMode
from .models import (
    ADMIN_PREFIX,
    DEFAULT_SCOPE,
    SandboxClient,
    SandboxToken,
    SandboxUser,
    is_loopback_callback,
)
from .provider import SandboxProvider
from .server import DEFAULT_PORT, SandboxServer, serve

__all__ = [
    "ADMIN_PREFIX",
    "DEFAULT_PORT",
    "DEFAULT_SCOPE",
    "DEMO_API_KEY",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_REDIRECT_URI",
    "FaultMode",
    "SandboxClient",
    "SandboxProvider",
    "SandboxServer",
    "SandboxToken",
    "SandboxUser",
    "demo_records",
    "is_loopback_callback",
    "seed_demo",
    "serve",
]

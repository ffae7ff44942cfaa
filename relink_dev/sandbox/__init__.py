"""Local OAuth 2.0 sandbox provider (Authlib + Flask) for tests, demos and benchmarks."""

from .oauth import (
    ADMIN_PREFIX,
    DEFAULT_SCOPE,
    DEMO_API_KEY,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_REDIRECT_URI,
    FaultMode,
    SandboxClient,
    SandboxProvider,
    SandboxToken,
    SandboxUser,
    demo_records,
    seed_demo,
)
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
    "seed_demo",
    "serve",
]

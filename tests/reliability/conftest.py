"""The reliability and security promises (docs/reliability.md) use the same real peers
as the integration tests: their fixtures, shared here."""

from tests.integration.conftest import *  # noqa: F403

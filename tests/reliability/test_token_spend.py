# ruff: noqa: F811 - pytest fixtures imported from oauth_fixtures are parameters here
"""Two processes refreshing one connection at once, on the embedded default (SQLite).

Two real `relink check` processes, started 0.3 s apart, check the same OAuth connection
against a sandbox provider that takes 1 s to answer a grant and, like providers with
reuse detection, revokes the whole grant when a spent refresh token comes back. Both
must find the token expiring, so both want to refresh: only one may spend it. SQLite
has no row locks; the connection's lock file (`relink.locks`) is what orders them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from relink.app import Relink
from relink.models import Connection, Disconnection
from relink.settings import Settings
from relink.vault import generate_key
from relink_dev.sandbox import SandboxProvider
from tests.integration.oauth_fixtures import (  # noqa: F401 - fixtures
    OAuthClient,
    insert_connection,
    issue,
    new_client,
    oauth_settings,
    owner,
    provider,
    refresh_at_sandbox,
    sandbox,
    sandbox_server,
    store_credentials,
    stored,
    token_hits,
)
from tests.support.promises import scale

PROMISE = "Relink never spends the same refresh token twice, on SQLite too"
GRANT_DELAY = 1.0  # seconds the provider takes to answer a grant
STAGGER = 0.3  # seconds between the two processes' starts
ROUNDS = scale(1, 5)
RELINK = Path(sys.executable).with_name("relink")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The embedded default: no database URL, so a SQLite file in the data folder."""
    return Settings(
        _env_file=None,
        database_url="",
        data_dir=tmp_path / "data",
        secret_keys=generate_key(),
        base_url="http://relink.test",
    )


@pytest.fixture
def reuse_detecting(provider: SandboxProvider) -> OAuthClient:
    return new_client(provider, revoke_on_reuse=True)


def relink_check(settings: Settings, connection_id: int, cwd: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "RELINK_DATABASE_URL": "",
        "RELINK_DATA_DIR": str(settings.data_dir),
        "RELINK_SECRET_KEYS": settings.secret_keys.get_secret_value(),
    }
    return subprocess.Popen(
        [str(RELINK), "check", "--connection", str(connection_id), "--json"],
        env=env,
        cwd=cwd,  # no .env of the developer's
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outcomes(proc: subprocess.Popen[str]) -> dict[str, int]:
    """The check's outcome counts (non-zero only) from its --json summary, and
    "skipped": a result not recorded because the other process recorded its own in
    the meantime (the connection's version moved)."""
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    counts = {**summary["outcomes"], "skipped": summary["skipped"]}
    return {k: v for k, v in counts.items() if v}


def expire(app: Relink, connection_id: int) -> None:
    """Mark the stored access token expired (as an hour passing would): the next check
    refreshes it."""
    credentials = stored(app, connection_id)[0]
    store_credentials(app, connection_id, {**credentials, "expires_at": "0"})


@pytest.mark.promise(PROMISE)
def test_two_check_processes_at_once_spend_the_refresh_token_once(
    relink_app, settings, owner, sandbox, provider, reuse_detecting, tmp_path, record_property
):
    assert relink_app.engine.url.database == str(settings.data_dir / "relink.db")
    now = datetime.now(UTC)
    connection_id = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, reuse_detecting.client_id),
        credentials=issue(provider, reuse_detecting, now),
    ).id
    reuses = provider.reuses()
    for _ in range(ROUNDS):
        expire(relink_app, connection_id)  # both checks see a token to refresh
        grants = token_hits(provider)
        provider.set_fault("slow", path_prefix="/oauth/token", delay=GRANT_DELAY)
        first = relink_check(settings, connection_id, tmp_path)
        time.sleep(STAGGER)  # the issue's reproduction: two runs 0.3 s apart
        second = relink_check(settings, connection_id, tmp_path)

        seen = [outcomes(first), outcomes(second)]
        assert {"ok": 1} in seen and all(s in ({"ok": 1}, {"skipped": 1}) for s in seen), seen
        assert token_hits(provider) == grants + 1  # one grant; the other used its tokens
        assert provider.reuses() == reuses

    provider.clear_fault()
    assert outcomes(relink_check(settings, connection_id, tmp_path)) == {"ok": 1}
    with relink_app.sessions() as session:
        status = session.scalar(sa.select(Connection.status).where(Connection.id == connection_id))
        opened = session.scalar(sa.select(sa.func.count()).select_from(Disconnection))
    assert (status, opened) == ("connected", 0)
    refresh_token = stored(relink_app, connection_id)[0]["refresh_token"]
    assert refresh_at_sandbox(sandbox.url, reuse_detecting, refresh_token).status_code == 200
    assert provider.reuses() == reuses
    record_property("trials", ROUNDS)
    record_property(
        "outcome",
        f"{ROUNDS} pair(s) of `relink check` processes {STAGGER:g} s apart, a provider "
        f"answering in {GRANT_DELAY:g} s and revoking on reuse: {ROUNDS} grant(s), 0 reuses, "
        "connected; the stored refresh token works",
    )

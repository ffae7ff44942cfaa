"""The vault's keys, end to end: `relink keys rotate` on a real database, then the old key
dropped; and a wrong or rotated-away key, met by the CLI and the web pages.

Connections are real ones to the sandbox provider on loopback (API keys it knows, OAuth
token sets it issued), so "every credential still decrypts" is shown the way a user
sees it: a check sweep with only the new key finds every one of them `ok`. A pending
OAuth sign-in (its PKCE verifier is vault ciphertext too) is finished after the old key
is gone. Unit tests of the vault itself: tests/unit/test_vault.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from relink.app import Relink
from relink.errors import VaultError
from relink.models import AuditEvent, Connection, OAuthState
from relink.reconnecting.oauth import finish_oauth, start_oauth
from relink.timeutil import utcnow
from relink.vault import Vault, generate_key
from relink.web import create_app
from relink_dev.sandbox import SandboxServer
from tests.integration.oauth_fixtures import (  # noqa: F401 - fixtures
    REDIRECT_URI,
    T0,
    OAuthClient,
    Owner,
    insert_connection,
    issue,
    oauth_client,
    oauth_settings,
    owner,
    provider,
    sandbox,
    sandbox_server,
)
from tests.support.promises import scale
from tests.support.reconnect import Cli, snapshot
from tests.support.web import (
    build_world,
    client_for,
    consent,
    error_message,
    make_relink,
    page_csrf,
)

ROTATION = (
    "`relink keys rotate` re-encrypts every credential and pending OAuth sign-in under "
    "the newest key, after which the old key can be dropped"
)
CLEAR_ERRORS = (
    "Credentials that do not decrypt (wrong key, rotated-away key, corrupted ciphertext) "
    "give one clear line naming the connection, never a key or ciphertext"
)
OWNER_EMAIL = "owner@acme.test"  # oauth_fixtures.owner


@dataclass
class Seeded:
    """Connections encrypted under `old`, the secrets each must still decrypt to, and a
    pending OAuth sign-in (started and allowed at the provider, not yet finished)."""

    old: str
    secrets: dict[int, dict[str, str]]
    pending: dict[str, Any]


@pytest.fixture
def seeded(
    relink_app: Relink,
    settings: Any,
    owner: Owner,  # noqa: F811 - the fixture imported above
    sandbox: SandboxServer,  # noqa: F811
    oauth_client: OAuthClient,  # noqa: F811
) -> Seeded:
    count = scale(12, 300)
    secrets = {}
    for i in range(count):
        type_, conn_settings, credentials = (
            api_key_source(sandbox) if i % 2 else oauth_source(sandbox, oauth_client)
        )
        spec = insert_connection(
            relink_app, owner, type_=type_, settings=conn_settings, credentials=credentials
        )
        secrets[spec.id] = credentials
    oauth_id = min(secrets)  # the first one is an OAuth connection
    started = start_oauth(relink_app, oauth_id, actor=OWNER_EMAIL, redirect_uri=REDIRECT_URI)
    pending = {**consent(started.url), "connection_id": oauth_id}
    return Seeded(settings.secret_keys.get_secret_value(), secrets, pending)


def api_key_source(server: SandboxServer) -> tuple[str, dict, dict]:
    """An API key the sandbox knows."""
    key = f"api-key-{uuid.uuid4().hex}"
    server.provider.add_api_key(key)
    source = {"base_url": server.url, "probe_path": "/apikey/me", "header": "X-API-Key"}
    return "api_key", source, {"api_key": key}


def oauth_source(server: SandboxServer, client: OAuthClient) -> tuple[str, dict, dict]:
    """A token set the sandbox issued, valid for an hour."""
    credentials = issue(server.provider, client, utcnow())
    return "oauth2", oauth_settings(server.url, client.client_id), credentials


@pytest.fixture
def cli(settings: Any) -> Cli:
    return Cli(settings)


def with_keys(cli: Cli, *keys: str) -> Cli:
    """The CLI configured with RELINK_SECRET_KEYS = these keys, newest first."""
    cli.env["RELINK_SECRET_KEYS"] = ",".join(keys)
    return cli


def ciphertexts(relink: Relink) -> dict[int, str]:
    with relink.engine.connect() as conn:
        return dict(conn.execute(sa.select(Connection.id, Connection.credentials)).all())


def check_outcomes(cli: Cli) -> dict[str, int]:
    """A check sweep through the CLI: how many connections ended in each outcome."""
    summary = json.loads(cli.ok("check", "--json").stdout)
    return {outcome: n for outcome, n in summary["outcomes"].items() if n}


@pytest.fixture
def encrypted(relink_app: Relink, owner: Owner) -> list[int]:  # noqa: F811
    """Two connections encrypted under the app's key (nothing is asked of their sources)."""
    return [
        insert_connection(
            relink_app,
            owner,
            type_="api_key",
            settings={"base_url": "http://127.0.0.1:9"},
            credentials={"api_key": f"key-{n}"},
        ).id
        for n in range(2)
    ]


# --- rotation -----------------------------------------------------------------------------


@pytest.mark.promise(ROTATION)
def test_keys_rotate_then_drop_the_old_key_and_everything_still_works(
    relink_app: Relink, seeded: Seeded, cli: Cli, record_property: Any
) -> None:
    new = generate_key()
    before = ciphertexts(relink_app)

    rotated = with_keys(cli, new, seeded.old).ok("keys", "rotate")

    count = len(seeded.secrets)
    assert f"re-encrypted the credentials of {count} connection(s)" in rotated.stdout
    after = ciphertexts(relink_app)
    assert all(after[i] != before[i] for i in before), "a connection was not re-encrypted"
    only_new, only_old = Vault([new]), Vault([seeded.old])
    for connection_id, secrets in seeded.secrets.items():
        assert only_new.decrypt(after[connection_id], connection="x") == secrets
        with pytest.raises(VaultError):
            only_old.decrypt(after[connection_id], connection="x")
    with relink_app.sessions() as session:
        audit = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "keys.rotated"))
        assert [event.details["connections"] for event in audit] == [count]

    # the old key dropped: every source accepts its credentials, the pending sign-in finishes
    assert check_outcomes(with_keys(cli, new)) == {"ok": count}
    only_new_key = Relink(relink_app.settings.model_copy(update={"secret_keys": SecretStr(new)}))
    try:
        done = asyncio.run(
            finish_oauth(
                only_new_key,
                actor=OWNER_EMAIL,
                refresh=False,
                replace_account=True,  # the sandbox's consent signs in another account
                **seeded.pending,
            )
        )
    finally:
        only_new_key.close()
    assert done.connection_id == seeded.pending["connection_id"]
    record_property("trials", count + 1)
    record_property(
        "outcome",
        f"{count} of {count} connections re-encrypted and checked ok with only the new key; "
        "the pending OAuth sign-in finished",
    )


@pytest.mark.promise(ROTATION)
def test_spent_sign_ins_under_a_long_dropped_key_do_not_block_a_rotation(
    relink_app: Relink,
    owner: Owner,  # noqa: F811
    encrypted: list[int],
    cli: Cli,
    record_property: Any,
) -> None:
    """Used or expired sign-ins are never read again: their ciphertext is left as it is."""
    dropped = Vault([generate_key()])
    with relink_app.transaction() as session:
        for used_at in (T0, None):  # one used, one expired (started long ago)
            session.add(
                OAuthState(
                    state_hash=uuid.uuid4().hex,
                    connection_id=encrypted[0],
                    user_id=owner.user_id,
                    code_verifier=dropped.encrypt({"code_verifier": "v" * 64}),
                    redirect_uri=REDIRECT_URI,
                    created_at=T0,
                    expires_at=T0,
                    used_at=used_at,
                )
            )
    old = cli.env["RELINK_SECRET_KEYS"]

    rotated = with_keys(cli, generate_key(), old).ok("keys", "rotate")

    assert "re-encrypted the credentials of 2 connection(s)" in rotated.stdout
    record_property("trials", 2)
    record_property("outcome", "spent sign-ins under a dropped key do not block a rotation")


# --- wrong keys ---------------------------------------------------------------------------


def assert_one_clear_line(line: str, connection_id: int, relink: Relink, key: str) -> None:
    """Names the connection, says what is wrong, shows no key and no ciphertext."""
    assert f"connection {connection_id} (" in line and "do not decrypt" in line, line
    assert "\n" not in line.strip()
    for leaked in (key, *ciphertexts(relink).values()):
        assert leaked not in line


@pytest.mark.promise(CLEAR_ERRORS)
@pytest.mark.parametrize("key", ["wrong", "rotated away"])
def test_the_cli_with_a_wrong_or_rotated_away_key_says_one_line_and_changes_nothing(
    relink_app: Relink, encrypted: list[int], cli: Cli, key: str, record_property: Any
) -> None:
    old = cli.env["RELINK_SECRET_KEYS"]
    if key == "rotated away":
        with_keys(cli, generate_key(), old).ok("keys", "rotate")
        configured = old
    else:
        configured = generate_key()
    before = snapshot(relink_app)

    line = with_keys(cli, configured).fails("keys", "rotate")

    assert_one_clear_line(line, encrypted[0], relink_app, configured)
    assert snapshot(relink_app) == before
    record_property("trials", 1)
    record_property("outcome", "exit 1, one line naming the connection; nothing written")


@pytest.mark.promise(CLEAR_ERRORS)
def test_the_reconnect_page_with_a_wrong_key_names_the_connection_and_changes_nothing(
    database_url: str, tmp_path: Path, record_property: Any
) -> None:
    relink = make_relink(database_url, tmp_path / "data")
    world = build_world(relink)
    wrong_key = make_relink(database_url, tmp_path / "data")  # a key of its own
    owned = world.ids["Owned DB"]
    before = snapshot(relink)
    try:
        client = client_for(create_app(wrong_key), "owner")
        assert client.get(f"/connections/{owned}").status_code == 200  # pages still work
        response = client.post(
            f"/connections/{owned}/reconnect",
            data={"csrf_token": page_csrf(client), "password": "a-new-password"},
        )
        assert response.status_code == 500
        line = error_message(response.text)
        key = wrong_key.settings.secret_keys.get_secret_value()
        assert_one_clear_line(line, owned, relink, key)
        assert "a-new-password" not in response.text
        assert snapshot(relink) == before
    finally:
        wrong_key.close()
        relink.close()
    record_property("trials", 1)
    record_property("outcome", "a 500 page naming the connection; nothing written")

"""A small demo account: an admin, members, connections of several kinds.

Against the sandbox provider and the loopback databases, the demo connections show
each outcome of a check: the PostgreSQL warehouse and "Sales" (OAuth) are healthy,
though Sales' credentials end for good in 5 days (its org's refresh-token policy,
`SALES_EXPIRES_IN`), so the first email run gives its owner the expiry heads-up;
"Support" (OAuth) has a revoked token and has been disconnected for 26 hours (demo data,
said so in its history), so the first email run emails its owner; "Finance" (MariaDB)
has a user that does not exist (access denied: 1045 or 1698, which MariaDB sends for the
same refusal): its owner fixes it on its page
by reconnecting with the loopback MariaDB's own user (`FINANCE_FIX`, printed by
`relink run`). The sandbox learns the demo's OAuth tokens from `sandbox_tokens`
(`relink run` writes them into the sandbox's state file before starting it).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from connectors.outcomes import TokenEndpointError
from relink import audit
from relink.connections import NewConnection, add_connection, share
from relink.datasets import add_dataset, add_metric
from relink.directory import add_account, add_user
from relink.domain.expiry import ExpiryKind
from relink.domain.identity import identity
from relink.domain.words import Outcome, Status
from relink.models import Account, Connection, Disconnection, User
from relink.vault import Vault

ACCOUNT = "Demo Co"
ADMIN = ("ada@demo.relink.test", "Ada Admin")
MEMBER = ("max@demo.relink.test", "Max Member")
OTHER = ("olga@demo.relink.test", "Olga Other")
SANDBOX_URL = "http://127.0.0.1:8765"
# The sandbox account the demo's OAuth connections use ("Connected as …"); a reconnect that
# consents as another one is a replacement, confirmed first
OAUTH_ACCOUNT = MEMBER[0]
HEALTHY_OAUTH = "Sales (Salesforce sandbox)"
REVOKED_OAUTH = "Support (Salesforce sandbox)"
DEMO_PASSWORD = "relink-demo-password"  # a public demo sign-in, printed by `relink run`
FINANCE = "Finance (MariaDB)"
# What a reconnect of "Finance" enters to fix it: the loopback MariaDB's root user, which
# has no password there (as on every development and CI machine).
FINANCE_FIX = {"username": "root", "password": ""}
SALES_EXPIRES_IN = timedelta(days=5, hours=1)
"""How long "Sales" has left of its org's 90-day refresh-token policy when the demo is
loaded (demo data: as if consented 85 days before): the list shows "expires in 5 days"
and the first email run sends its heads-up."""
BROKEN_FOR = timedelta(hours=26)
"""How long "Support" has been disconnected when the demo is loaded: past the 24 hours
after which its owner is emailed, so the first email run has an email to send."""


def demo_connections(sandbox_url: str) -> list[tuple[NewConnection, list[tuple[str, str]]]]:
    """The connections and, for each, its datasets (name, query)."""
    oauth_endpoints = {
        "authorize_url": f"{sandbox_url}/oauth/authorize",
        "token_url": f"{sandbox_url}/oauth/token",
        "introspection_url": f"{sandbox_url}/oauth/introspect",
        "revocation_url": f"{sandbox_url}/oauth/revoke",
        "probe_url": f"{sandbox_url}/api/me",
        "client_id": "relink-demo",
        # OpenID Connect: a reconnect's consent answers an ID token, verified with these
        "scope": "api refresh_token openid email",
        "issuer": sandbox_url,
        "jwks_uri": f"{sandbox_url}/oauth/jwks",
    }

    def sandbox_token() -> dict[str, str]:
        return {
            "access_token": secrets.token_urlsafe(24),
            "refresh_token": secrets.token_urlsafe(24),
        }

    return [
        (
            NewConnection(
                type="postgres",
                name="Warehouse (PostgreSQL)",
                owner=ADMIN[0],
                mode="warehouse",
                settings={
                    "host": "127.0.0.1",
                    "port": "5432",
                    "database": "test",
                    "username": "postgres",
                },
                secrets={"password": "demo-not-checked-under-trust"},
            ),
            [
                (
                    "Table sizes",
                    "SELECT relname AS table_name, n_live_tup AS rows FROM pg_stat_user_tables",
                )
            ],
        ),
        (
            NewConnection(
                type="mysql",
                name=FINANCE,
                owner=MEMBER[0],
                mode="direct",
                settings={
                    "host": "127.0.0.1",
                    "port": "3306",
                    "database": "test",
                    "username": "relink_demo_finance",
                },
                secrets={"password": "an-old-password"},
            ),
            [("Invoices", "SELECT 1 AS invoice_id, 120.5 AS amount")],
        ),
        (
            NewConnection(
                type="salesforce",
                name=HEALTHY_OAUTH,
                owner=MEMBER[0],
                mode="warehouse",
                # the org's Refresh Token Policy: "expire refresh token after 90 days"
                settings={**oauth_endpoints, "refresh_token_lifetime": "90 days"},
                secrets={**sandbox_token(), "client_secret": "relink-demo-secret"},
            ),
            [("Opportunities", "/api/records?path=opportunities | data.records")],
        ),
        (
            NewConnection(
                type="salesforce",
                name=REVOKED_OAUTH,
                owner=MEMBER[0],
                mode="direct",
                settings=oauth_endpoints,
                secrets={**sandbox_token(), "client_secret": "relink-demo-secret"},
            ),
            [("Cases", "/api/records?path=cases | data.records")],
        ),
        (
            NewConnection(
                type="api_key",
                name="Billing API",
                owner=OTHER[0],
                mode="direct",
                settings={
                    "base_url": sandbox_url,
                    "probe_path": "/apikey/me",
                    "header": "X-API-Key",
                },
                secrets={"api_key": "demo-api-key"},
            ),
            [("Payments", "/apikey/records?path=payments | data.records")],
        ),
    ]


def seed(session: Session, vault: Vault, *, now: datetime, sandbox_url: str = SANDBOX_URL) -> bool:
    """Create the demo account; False when it is already there (nothing changes)."""
    if session.scalar(sa.select(Account.id).where(Account.name == ACCOUNT)) is not None:
        return False
    loaded_at = now
    broken_at = now - BROKEN_FOR
    now = broken_at - timedelta(days=1)  # the demo was made before "Support" broke
    add_account(session, ACCOUNT, now=now)
    users = {}
    for (email, name), role in ((ADMIN, "admin"), (MEMBER, "member"), (OTHER, "member")):
        users[email] = add_user(
            session, email=email, name=name, role=role, account=ACCOUNT, now=now
        )
    for new, datasets in demo_connections(sandbox_url):
        conn = add_connection(session, vault, new, now=now)
        ids = [
            add_dataset(session, connection_id=conn.id, name=n, query=q, now=now).id
            for n, q in datasets
        ]
        add_metric(session, name=f"{conn.name}: {datasets[0][0]}", dataset_ids=ids, now=now)
    billing = session.scalar(sa.select(Connection).where(Connection.name == "Billing API"))
    assert billing is not None
    share(session, billing.id, with_email=MEMBER[0], actor=users[ADMIN[0]], now=now)
    for name in (HEALTHY_OAUTH, REVOKED_OAUTH):  # as their consent named it (demo data)
        oauth = session.scalar(sa.select(Connection).where(Connection.name == name))
        assert oauth is not None
        oauth.identity = identity(OAUTH_ACCOUNT, OAUTH_ACCOUNT)
    _broken_since(session, REVOKED_OAUTH, broken_at)
    sales = session.scalar(sa.select(Connection).where(Connection.name == HEALTHY_OAUTH))
    assert sales is not None
    sales.credentials_expire_at = loaded_at + SALES_EXPIRES_IN  # demo data (see above)
    sales.credentials_expiry_kind = str(ExpiryKind.HARD)
    return True


def _broken_since(session: Session, name: str, since: datetime) -> None:
    """Record `name` as disconnected since `since`, as a failing check would have, with
    an audit entry that says it is demo data (no check ran then)."""
    conn = session.scalar(sa.select(Connection).where(Connection.name == name))
    assert conn is not None
    session.flush()
    message = "the refresh token was revoked"
    code = str(TokenEndpointError.INVALID_GRANT)
    conn.status = Status.DISCONNECTED
    conn.invalid_since = since
    conn.last_checked_at = since
    conn.last_error_code = code
    conn.last_error_message = message
    conn.last_outcome = Outcome.AUTH_FAILED
    conn.last_outcome_code = code
    session.add(Disconnection(connection_id=conn.id, started_at=since, reason_code=code))
    audit.record(
        session,
        "connection.status_changed",
        at=since,
        connection=conn,
        before=Status.UNCHECKED,
        after=Status.DISCONNECTED,
        code=code,
        message=f"demo data: broken since {since:%Y-%m-%d %H:%M} UTC ({message})",
    )


def set_demo_passwords(session: Session, *, now: datetime) -> list[str]:
    """Give the demo users without a password `DEMO_PASSWORD`; the emails it set."""
    from relink.passwords import set_password

    emails = [email for email, _ in (ADMIN, MEMBER, OTHER)]
    without = session.scalars(
        sa.select(User.email).where(User.email.in_(emails), User.password_hash.is_(None))
    ).all()
    for email in without:
        set_password(session, email, DEMO_PASSWORD, now=now)
    return list(without)


def sandbox_tokens(session: Session, vault: Vault) -> list[dict[str, Any]]:
    """The demo OAuth connections' current tokens, for the sandbox provider to know:
    `revoked` is True for the connection the demo shows as disconnected."""
    tokens = []
    for name in (HEALTHY_OAUTH, REVOKED_OAUTH):
        conn = session.scalar(sa.select(Connection).where(Connection.name == name))
        if conn is None:
            continue
        creds = vault.decrypt(conn.credentials, connection=f"{conn.id} ({name!r})")
        tokens.append(
            {
                "access_token": creds["access_token"],
                "refresh_token": creds.get("refresh_token"),
                "revoked": name == REVOKED_OAUTH,
                "username": conn.identity_subject or OAUTH_ACCOUNT,
            }
        )
    return tokens

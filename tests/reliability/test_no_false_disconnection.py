# ruff: noqa: F811 - pytest fixtures imported from oauth_fixtures are parameters here
"""No false disconnection: an outage of the sources never breaks a connection nor moves
its `invalid_since`, and revoked credentials are all found by the first sweep after.

Connections of every kind (API key; OAuth checked through the token endpoint, the
introspection endpoint or userinfo; PostgreSQL; MariaDB) reach their source through a
`FaultySource` (tests/support/faulty_sources.py), a proxy in front of the real peer. The
production sweep (`relink.sweep.run.sweep`, what `relink check` and the check-connections
flow's batches run, on a PostgreSQL app database) checks them all while every source
fails in its own way; then the sources recover, the credentials are revoked at the real
peers, and one more sweep must find every connection broken.

A quarter of the connections were broken before the outage (an open disconnection
since SINCE, with credentials that really are dead): their `invalid_since` must not
move through either sweep.

An installation fault is no proof either: when the operators rotate the secret of the
installation's OAuth app and forget the setting (or remove the setting), every
connection through the app is `misconfigured`; no disconnection opens, none moves, and
the daily email run, a day later, emails nobody. Once the setting is right, the next
sweep finds each connection as it really is.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from relink.app import Relink
from relink.emailing.run import send_due
from relink.models import Connection, Disconnection, Notification
from relink.sweep.run import sweep
from relink.sweep.validate import CheckPolicy
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.conftest import DbUser, MariaAdmin, PgAdmin
from tests.integration.oauth_fixtures import (  # noqa: F401 - fixtures
    REDIRECT_URI,
    OAuthClient,
    Owner,
    installation_app,
    issue,
    oauth_client,
    oauth_settings,
    owner,
    provider,
    sandbox,
    sandbox_server,
)
from tests.support.faulty_sources import (
    CUT,
    HEADERS_THEN_CLOSE,
    PASS,
    REFUSE,
    SILENT,
    Fault,
    FaultySource,
    FaultySources,
    slow,
    status,
)
from tests.support.promises import scale
from tests.support.reconnect import pg_settings

# The app database on PostgreSQL, as in production.
pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

CHECKS = scale(200, 2000)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # the sweep during the outage
T1 = T0 + timedelta(days=1)  # the sweep after the revocation
SINCE = T0 - timedelta(days=3)  # when the connections broken before the outage broke
TIMEOUT = 1.0
# The sweep's own caps (50 checks in flight, 20 per provider), one batch, one retry.
POLICY = CheckPolicy(batch_size=CHECKS, attempts=2, backoff=0.1, timeout=TIMEOUT)

# fault -> the error code the outage sweep leaves on a connection that worked before
HTTP_OUTAGES: dict[Fault, str] = {
    REFUSE: "connection_refused",
    SILENT: "timeout",
    status(500): "http_500",
    status(502): "http_502",
    status(503): "http_503",
    status(504): "http_504",
    status(429): "http_429",
    slow(TIMEOUT * 3): "timeout",  # answered, but long after the timeout
    HEADERS_THEN_CLOSE: "connection_lost",
}
# Slow, but answered within the timeout: a real answer. The margins both ways are wide
# because the sources share this process's CPU with the sweep, so a loaded machine
# delays answers and timeouts alike.
IN_TIME = slow(TIMEOUT * 0.5)
# fault -> (PostgreSQL's code, MariaDB's code)
DB_OUTAGES: dict[Fault, tuple[str, str]] = {
    REFUSE: ("connection_refused", "connection_refused"),
    SILENT: ("timeout", "timeout"),
    # PyMySQL keeps the socket error (connection_lost) or only its errno (2013)
    CUT: ("connection_lost", "connection_lost|2013"),
}
OAUTH_KINDS = ("oauth_token", "oauth_introspection", "oauth_userinfo")


@dataclass(frozen=True)
class Group:
    kind: str  # api_key, oauth_token (the faulty endpoint), ..., postgres, mysql
    fault: Fault
    outage_code: str | None  # None: answered in time; "a|b": either


GROUPS = [
    Group(kind, fault, code)
    for kind in ("api_key", *OAUTH_KINDS)
    for fault, code in [*HTTP_OUTAGES.items(), (IN_TIME, None)]
] + [
    Group(kind, fault, code)
    for fault, codes in DB_OUTAGES.items()
    for kind, code in zip(("postgres", "mysql"), codes, strict=True)
]


@dataclass(frozen=True)
class Member:
    """One connection of the fleet: its group, and whether it was broken before."""

    group: Group
    broken: bool

    @property
    def refused_code(self) -> str:
        """What the source answers to dead credentials."""
        return {"api_key": "401", "postgres": "28P01", "mysql": "1045"}.get(
            self.group.kind, "invalid_grant"
        )

    def expects(self, code: str | None) -> bool:
        """Whether the outage sweep may leave this error code on the connection."""
        if self.group.outage_code is not None:
            return code in self.group.outage_code.split("|")
        return code == (self.refused_code if self.broken else None)


@dataclass
class Peers:
    """The real credentials behind the fleet: what the test revokes."""

    provider: SandboxProvider
    sandbox: SandboxServer
    client: OAuthClient
    username: str
    api_key: str
    pg_admin: PgAdmin
    pg_role: DbUser
    maria_admin: MariaAdmin
    maria_user: DbUser

    def revoke_everything(self) -> None:
        self.provider.revoke_user_tokens(self.username)
        self.provider.remove_api_key(self.api_key)
        self.pg_admin.set_password(self.pg_role.name, secrets.token_urlsafe(16))
        self.maria_admin.set_password(self.maria_user.name, secrets.token_urlsafe(16))


@pytest.fixture
def peers(provider, sandbox, oauth_client, pg_admin, maria_admin) -> Peers:
    api_key = f"live-{uuid.uuid4().hex}"
    provider.add_api_key(api_key)
    return Peers(
        provider=provider,
        sandbox=sandbox,
        client=oauth_client,
        username=f"user-{uuid.uuid4().hex[:8]}",
        api_key=api_key,
        pg_admin=pg_admin,
        pg_role=pg_admin.create_role(),
        maria_admin=maria_admin,
        maria_user=maria_admin.create_user(),
    )


class Fleet:
    """The connections, each behind the faulty source of its group."""

    def __init__(self, app: Relink, owner: Owner, peers: Peers, sources: FaultySources) -> None:
        self.app = app
        self.owner = owner
        self.peers = peers
        self.sources = sources
        self._source: dict[tuple[str, Fault], FaultySource] = {}
        self.members: dict[str, Member] = {}  # connection name -> member

    def source(self, upstream: str, fault: Fault) -> FaultySource:
        if (upstream, fault) not in self._source:
            port = {
                "sandbox": self.peers.sandbox.port,
                "postgres": sa.make_url(self.peers.pg_admin.url).port,
                "mysql": 3306,
            }[upstream]
            self._source[upstream, fault] = self.sources.add("127.0.0.1", port, fault)
        return self._source[upstream, fault]

    def heal(self) -> None:
        for source in self._source.values():
            source.set(PASS)

    def add(self, count: int) -> None:
        rows = []
        for i in range(count):
            member = Member(GROUPS[i % len(GROUPS)], broken=(i // len(GROUPS)) % 4 == 0)
            name = f"{i:05d} {member.group.kind} {member.group.fault}"
            self.members[name] = member
            rows.append(self._row(name, member))
        with self.app.transaction() as session:
            session.execute(sa.insert(Connection), rows)
            broken = session.execute(
                sa.select(Connection.id, Connection.last_error_code).where(
                    Connection.status == "disconnected"
                )
            ).all()
            session.execute(
                sa.insert(Disconnection),
                [dict(connection_id=i, started_at=SINCE, reason_code=code) for i, code in broken],
            )

    def seen(self) -> list[Seen]:
        with self.app.sessions() as session:
            rows = session.execute(
                sa.select(
                    Connection.name,
                    Connection.status,
                    Connection.invalid_since,
                    Connection.last_outcome_code,  # what the last check met
                ).order_by(Connection.id)
            ).all()
        return [Seen(*row, member=self.members[row.name]) for row in rows]

    def _row(self, name: str, member: Member) -> dict[str, Any]:
        settings, credentials = self._connection(member)
        state = (
            dict(status="disconnected", invalid_since=SINCE, last_error_code=member.refused_code)
            if member.broken
            else dict(status="connected")
        )
        return dict(
            account_id=self.owner.account_id,
            type="oauth2" if member.group.kind in OAUTH_KINDS else member.group.kind,
            name=name,
            mode="direct",
            settings=settings,
            credentials=self.app.vault.encrypt(credentials),
            owner_id=self.owner.user_id,
            version=1,
            created_at=SINCE - timedelta(days=30),
            updated_at=SINCE,
            **state,
        )

    def _connection(self, member: Member) -> tuple[dict[str, Any], dict[str, str]]:
        """Settings (the group's endpoint behind its faulty source) and credentials."""
        kind, fault, p = member.group.kind, member.group.fault, self.peers
        dead = f"dead-{secrets.token_hex(4)}"
        if kind in ("postgres", "mysql"):
            source = self.source(kind, fault)
            user = p.pg_role if kind == "postgres" else p.maria_user
            settings = pg_settings(f"postgresql://127.0.0.1:{source.port}/test", user.name)
            if kind == "mysql":
                settings["sslmode"] = "disabled"
            return settings, {"password": dead if member.broken else user.password}
        url = self.source("sandbox", fault).url
        if kind == "api_key":
            settings = {"base_url": url, "probe_path": "/apikey/me", "header": "X-API-Key"}
            return settings, {"api_key": dead if member.broken else p.api_key}
        settings = oauth_settings(
            p.sandbox.url, p.client.client_id, introspection=kind != "oauth_userinfo"
        )
        endpoint = {
            "oauth_token": ("token_url", "/oauth/token"),
            "oauth_introspection": ("introspection_url", "/oauth/introspect"),
            "oauth_userinfo": ("probe_url", "/api/me"),
        }[kind]
        settings[endpoint[0]] = url + endpoint[1]
        # the token endpoint is only asked when the access token needs a refresh
        expiry = T0 - timedelta(minutes=1) if kind == "oauth_token" else T0 + timedelta(days=7)
        credentials = issue(
            p.provider, p.client, T0, username=p.username, expires_at=expiry.timestamp()
        )
        if member.broken:
            p.provider.revoke_token(credentials["refresh_token"])  # the whole token set
        return settings, credentials


@dataclass(frozen=True)
class Seen:
    """A connection as the database holds it after a sweep, and its member."""

    name: str
    status: str
    invalid_since: datetime | None
    code: str | None
    member: Member

    @property
    def broken_before(self) -> bool:
        return self.member.broken


def disconnections(app: Relink) -> set[tuple[int, int, datetime, datetime | None]]:
    with app.sessions() as session:
        rows = session.execute(
            sa.select(
                Disconnection.id,
                Disconnection.connection_id,
                Disconnection.started_at,
                Disconnection.ended_at,
            )
        ).all()
    return {tuple(row) for row in rows}  # type: ignore[misc]


@pytest.mark.promise(
    "An outage of the sources never breaks a connection nor moves its invalid_since; "
    "revoked credentials are all found by the next sweep"
)
def test_outages_break_nothing_and_revocations_are_all_found_in_one_sweep(
    relink_app, owner, peers, record_property
):
    with FaultySources() as sources:
        fleet = Fleet(relink_app, owner, peers, sources)
        fleet.add(CHECKS)
        broken_before = disconnections(relink_app)

        outage = asyncio.run(sweep(relink_app, now=T0, policy=POLICY))

        seen = fleet.seen()
        assert outage.checked == CHECKS and outage.opened == 0, outage.as_dict()
        assert [s.name for s in seen if s.status == "disconnected" and not s.broken_before] == []
        # a connection broken before the outage still shows it, the outage a second fact
        assert [s.name for s in seen if s.broken_before and s.status != "disconnected"] == []
        moved = [s.name for s in seen if s.invalid_since != (SINCE if s.broken_before else None)]
        assert moved == []
        assert disconnections(relink_app) == broken_before
        # every fault was met (its own error code), and slow answers in time were answered
        wrong_code = [(s.name, s.code) for s in seen if not s.member.expects(s.code)]
        assert wrong_code == []

        peers.revoke_everything()
        fleet.heal()
        after = asyncio.run(sweep(relink_app, now=T1, policy=POLICY))

    seen = fleet.seen()
    assert after.outcomes == {
        "ok": 0,
        "auth_failed": CHECKS,
        "misconfigured": 0,
        "unreachable": 0,
        "error": 0,
    }
    assert [s.name for s in seen if s.status != "disconnected"] == []
    moved = [s.name for s in seen if s.invalid_since != (SINCE if s.broken_before else T1)]
    assert moved == []
    episodes = disconnections(relink_app)
    assert {e for e in episodes if e[2] == SINCE} == broken_before
    assert len(episodes) == CHECKS and {e[3] for e in episodes} == {None}
    record_property("trials", 2 * CHECKS)
    record_property(
        "outcome",
        f"{CHECKS} checks under {len(HTTP_OUTAGES) + len(DB_OUTAGES)} kinds of outage "
        "(and slow answers in time): 0 newly disconnected, 0 invalid_since moved; after "
        f"revocation, {CHECKS} of {CHECKS} disconnected by one sweep",
    )


# --- an installation fault ---------------------------------------------------------------

FLEET = scale(40, 400)


def installation_fleet(app: Relink, owner: Owner, provider: SandboxProvider, url: str):
    """Salesforce connections through the installation's app (RELINK_OAUTH__SALESFORCE__):
    half checked at the token endpoint (an expired access token), half by introspection;
    every fourth broken since SINCE (its grant revoked at the provider, an open
    disconnection). Returns the app's client."""
    app_client = OAuthClient(f"app-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18))
    provider.register_client(app_client.client_id, app_client.client_secret, [REDIRECT_URI])
    rows = []
    for i in range(FLEET):
        by_token, broken = i % 2 == 0, i % 4 == 1
        expiry = T0 - timedelta(minutes=1) if by_token else T0 + timedelta(days=7)
        creds = issue(provider, app_client, T0, username=f"u{i}", expires_at=expiry.timestamp())
        del creds["client_secret"]  # the installation's app, not a client of its own
        if broken:
            provider.revoke_token(creds["refresh_token"])
        state = (
            dict(status="disconnected", invalid_since=SINCE, last_error_code="invalid_grant")
            if broken
            else dict(status="connected")
        )
        rows.append(
            dict(
                account_id=owner.account_id,
                type="salesforce",
                name=f"sf {i:04d}",
                mode="direct",
                settings={
                    "token_url": f"{url}/oauth/token",
                    "introspection_url": f"{url}/oauth/introspect",
                    "probe_url": f"{url}/api/me",  # without the app: no introspection
                },
                credentials=app.vault.encrypt(creds),
                owner_id=owner.user_id,
                version=1,
                created_at=SINCE - timedelta(days=30),
                updated_at=SINCE,
                **state,
            )
        )
    with app.transaction() as session:
        session.execute(sa.insert(Connection), rows)
        broken = session.scalars(
            sa.select(Connection.id).where(Connection.status == "disconnected")
        ).all()
        session.execute(
            sa.insert(Disconnection),
            [dict(connection_id=i, started_at=SINCE, reason_code="invalid_grant") for i in broken],
        )
    return app_client


def use_app(app: Relink, client_id: str | None, secret: str = "") -> None:
    """RELINK_OAUTH__SALESFORCE__CLIENT_ID / __CLIENT_SECRET (None: not set at all)."""
    app.settings.oauth = installation_app(client_id, secret) if client_id else {}


def states(app: Relink) -> dict[str, tuple[str, datetime | None, str | None]]:
    with app.sessions() as session:
        rows = session.execute(
            sa.select(
                Connection.name,
                Connection.status,
                Connection.invalid_since,
                Connection.last_error_code,
            )
        ).all()
    return {name: (status, since, code) for name, status, since, code in rows}


def emails(app: Relink) -> int:
    with app.sessions() as session:
        return session.scalar(sa.select(sa.func.count(Notification.id))) or 0


@pytest.mark.promise(
    "A rotated or missing OAuth app secret opens no disconnection, moves no "
    "invalid_since and emails nobody; once the setting is right, one sweep finds every "
    "connection as it is"
)
def test_a_rotated_app_secret_breaks_nothing_and_emails_nobody(
    relink_app, owner, provider, sandbox, record_property
):
    app_client = installation_fleet(relink_app, owner, provider, sandbox.url)
    use_app(relink_app, app_client.client_id, app_client.client_secret)
    send_due(relink_app, now=T0 - timedelta(hours=1))  # the broken ones' one email
    emailed, broken_before = emails(relink_app), disconnections(relink_app)
    before = states(relink_app)
    assert emailed == len(broken_before) == FLEET // 4

    rotated = secrets.token_urlsafe(18)  # at the provider; the setting keeps the old one
    provider.register_client(app_client.client_id, rotated, [REDIRECT_URI])
    first = asyncio.run(sweep(relink_app, now=T0, policy=POLICY))

    assert first.outcomes["misconfigured"] == FLEET and (first.opened, first.closed) == (0, 0)
    assert [(p.code, p.connections) for p in first.installation_problems] == [
        ("invalid_client", FLEET)
    ]
    after = states(relink_app)
    was_broken = {name for name, state in before.items() if state[0] == "disconnected"}
    # the broken ones stay as their owners were told; the others wait for an admin
    assert {name: after[name] for name in was_broken} == {n: before[n] for n in was_broken}
    assert {after[name][:2] for name in before.keys() - was_broken} == {("misconfigured", None)}

    # An admin removes the setting: the refreshes (half the fleet) cannot be made, which
    # is the installation's fault again; a live access token is still checked (the probe).
    use_app(relink_app, None)
    second = asyncio.run(sweep(relink_app, now=T1, policy=POLICY))
    send_due(relink_app, now=T1 + timedelta(hours=1))  # 25 h after the first fault

    assert [(p.code, p.connections) for p in second.installation_problems] == [
        ("oauth_app_not_configured", FLEET // 2)
    ]
    assert (second.opened, second.closed) == (0, 0)
    assert disconnections(relink_app) == broken_before
    assert emails(relink_app) == emailed  # nobody emailed for the installation's fault
    assert {states(relink_app)[name][:2] for name in was_broken} == {("disconnected", SINCE)}

    use_app(relink_app, app_client.client_id, rotated)  # the admin sets the new secret
    fixed = asyncio.run(sweep(relink_app, now=T1 + timedelta(hours=2), policy=POLICY))

    broken = FLEET // 4
    assert fixed.outcomes["ok"] == FLEET - broken and fixed.outcomes["auth_failed"] == broken
    assert (fixed.opened, fixed.closed) == (0, 0)
    assert disconnections(relink_app) == broken_before
    final = states(relink_app)
    assert {final[name][:2] for name in was_broken} == {("disconnected", SINCE)}
    assert {final[name][0] for name in before.keys() - was_broken} == {"connected"}
    record_property("trials", 3 * FLEET)
    record_property(
        "outcome",
        f"{FLEET} connections through the app, {broken} of them broken before: a rotated "
        "secret, then no setting at all, 25 h apart: 0 disconnections opened or moved, 0 "
        f"emails; with the new secret, {FLEET - broken} connected and {broken} still "
        "disconnected since before",
    )

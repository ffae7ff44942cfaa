"""The credential sweep against real peers: the sandbox provider's API-key endpoint
and a closed port. Counts per outcome, the state rules in the database, and one bad
connection never stopping the sweep."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from relink.directory import add_account, add_user
from relink.models import AuditEvent, Connection, Disconnection
from relink.sweep.record import last_sweep
from relink.sweep.run import SweepPolicy, SweepSteps, plain_steps, run_sweep, sweep
from relink.sweep.validate import CheckPolicy
from relink_dev.sandbox import SandboxProvider, SandboxServer

pytestmark = pytest.mark.both_backends  # a sweep claims its connections with row locks

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FAST = CheckPolicy(
    batch_size=200, concurrency=32, per_provider=32, attempts=2, backoff=0.0, timeout=5.0
)


@pytest.fixture(scope="module")
def sandbox():
    provider = SandboxProvider()
    provider.add_api_key("good-key")
    provider.add_api_key("forbidden-key")
    provider.forbid_api_key("forbidden-key")
    with SandboxServer(provider) as server:
        yield server


@pytest.fixture(scope="module")
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def owner(relink_app):
    with relink_app.transaction() as session:
        add_account(session, "Acme", now=T0)
        return add_user(
            session, email="o@acme.test", name="O", role="member", account="Acme", now=T0
        ).id


def add_api_connections(relink_app, owner, base_url: str, key: str, count: int, prefix: str):
    token = relink_app.vault.encrypt({"api_key": key})
    rows = [
        dict(
            account_id=1,
            type="api_key",
            name=f"{prefix}-{i}",
            mode="direct",
            settings={"base_url": base_url, "probe_path": "/apikey/me", "header": "X-API-Key"},
            credentials=token,
            owner_id=owner,
            status="connected",
            version=1,
            created_at=T0,
            updated_at=T0,
        )
        for i in range(count)
    ]
    with relink_app.transaction() as session:
        session.execute(sa.insert(Connection), rows)


def statuses(relink_app) -> dict[str, int]:
    with relink_app.sessions() as session:
        return dict(
            session.execute(
                sa.select(Connection.status, sa.func.count()).group_by(Connection.status)
            ).all()
        )


def open_disconnections(relink_app) -> list[Disconnection]:
    with relink_app.sessions() as session:
        return list(
            session.scalars(sa.select(Disconnection).where(Disconnection.ended_at.is_(None)))
        )


def test_a_sweep_of_1000_connections_counts_every_outcome(relink_app, owner, sandbox, closed_port):
    add_api_connections(relink_app, owner, sandbox.url, "good-key", 600, "ok")
    add_api_connections(relink_app, owner, sandbox.url, "forbidden-key", 150, "forbidden")
    add_api_connections(relink_app, owner, sandbox.url, "unknown-key", 150, "revoked")
    add_api_connections(
        relink_app, owner, f"http://127.0.0.1:{closed_port}", "good-key", 100, "down"
    )

    summary = asyncio.run(sweep(relink_app, now=T0, policy=FAST))

    assert summary.checked == 1000
    # a bare 403 (the forbidden key) is no proof the key is bad: only the 401s break
    assert summary.outcomes == {
        "ok": 600,
        "auth_failed": 150,
        "misconfigured": 0,
        "unreachable": 250,
        "error": 0,
    }
    assert summary.batches == 5
    assert summary.opened == 150
    assert statuses(relink_app) == {"connected": 600, "disconnected": 150, "unreachable": 250}
    opened = open_disconnections(relink_app)
    assert len(opened) == 150 and {d.started_at for d in opened} == {T0}
    with relink_app.sessions() as session:
        codes = dict(
            session.execute(
                sa.select(Connection.last_error_code, sa.func.count())
                .where(Connection.status == "disconnected")
                .group_by(Connection.last_error_code)
            ).all()
        )
        assert codes == {"401": 150}
        changes = session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "connection.status_changed")
        )
        assert changes == 400


def test_failing_again_keeps_the_first_failure_time_and_recovery_closes(relink_app, owner, sandbox):
    add_api_connections(relink_app, owner, sandbox.url, "rotating-key", 3, "c")
    asyncio.run(sweep(relink_app, now=T0, policy=FAST))
    later = T0 + timedelta(hours=30)
    second = asyncio.run(sweep(relink_app, now=later, policy=FAST))
    assert second.opened == 0 and second.status_changes == 0
    with relink_app.sessions() as session:
        assert set(session.scalars(sa.select(Connection.invalid_since))) == {T0}
    sandbox.provider.add_api_key("rotating-key")
    try:
        third = asyncio.run(sweep(relink_app, now=later + timedelta(hours=1), policy=FAST))
    finally:
        sandbox.provider.remove_api_key("rotating-key")
    assert third.closed == 3 and third.outcomes["ok"] == 3
    assert open_disconnections(relink_app) == []
    with relink_app.sessions() as session:
        ended = set(session.scalars(sa.select(Disconnection.ended_at)))
        assert ended == {later + timedelta(hours=1)}
        assert set(session.scalars(sa.select(Connection.invalid_since))) == {None}


def test_an_outage_never_opens_a_disconnection_nor_moves_invalid_since(
    relink_app, owner, sandbox, closed_port
):
    add_api_connections(relink_app, owner, f"http://127.0.0.1:{closed_port}", "good-key", 5, "d")
    add_api_connections(relink_app, owner, sandbox.url, "unknown-key", 2, "broken")
    asyncio.run(sweep(relink_app, now=T0, policy=FAST))
    with relink_app.transaction() as session:  # the broken ones' source goes down too
        for conn in session.scalars(sa.select(Connection).where(Connection.name.like("broken-%"))):
            conn.settings = {**conn.settings, "base_url": f"http://127.0.0.1:{closed_port}"}
    summary = asyncio.run(sweep(relink_app, now=T0 + timedelta(hours=2), policy=FAST))
    assert summary.outcomes["unreachable"] == 7 and summary.opened == 0
    opened = open_disconnections(relink_app)
    assert len(opened) == 2 and {d.started_at for d in opened} == {T0}
    with relink_app.sessions() as session:
        since = dict(session.execute(sa.select(Connection.name, Connection.invalid_since)).all())
    assert since == {**{f"d-{i}": None for i in range(5)}, "broken-0": T0, "broken-1": T0}


def test_a_bad_connection_is_recorded_and_never_stops_the_sweep(relink_app, owner, sandbox):
    add_api_connections(relink_app, owner, sandbox.url, "good-key", 3, "fine")
    with relink_app.transaction() as session:
        bad_cipher, bad_type = session.scalars(
            sa.select(Connection).order_by(Connection.id).limit(2)
        ).all()
        bad_cipher.credentials = bad_cipher.credentials[:-6] + "AAAAAA"
        bad_type.type = "retired_connector"
    summary = asyncio.run(sweep(relink_app, now=T0, policy=FAST))
    assert summary.outcomes == {
        "ok": 1,
        "auth_failed": 0,
        "misconfigured": 0,
        "unreachable": 0,
        "error": 2,
    }
    with relink_app.sessions() as session:
        errors = dict(session.execute(sa.select(Connection.name, Connection.last_error_code)).all())
        message = session.scalar(
            sa.select(Connection.last_error_message).where(Connection.name == "fine-0")
        )
    assert errors == {"fine-0": "vault_error", "fine-1": "unknown_type", "fine-2": None}
    assert "do not decrypt" in message and "good-key" not in message


def test_most_connections_of_a_provider_failing_alike_flag_an_incident(relink_app, owner, sandbox):
    add_api_connections(relink_app, owner, sandbox.url, "good-key", 10, "inc")
    sandbox.provider.set_fault("error500", path_prefix="/apikey/me")
    try:
        summary = asyncio.run(sweep(relink_app, now=T0, policy=FAST))
    finally:
        sandbox.provider.clear_fault()
    assert summary.outcomes["unreachable"] == 10 and summary.opened == 0
    assert [i.describe() for i in summary.incidents] == [
        "api_key: 10 of 10 connections failed with unreachable http_500"
    ]


def test_only_the_given_connections_are_checked(relink_app, owner, sandbox):
    add_api_connections(relink_app, owner, sandbox.url, "good-key", 5, "one")
    summary = asyncio.run(sweep(relink_app, now=T0, policy=FAST, connection_ids=[2, 4]))
    assert summary.checked == 2
    with relink_app.sessions() as session:
        checked = set(
            session.scalars(sa.select(Connection.id).where(Connection.last_checked_at.is_not(None)))
        )
    assert checked == {2, 4}


def test_run_sweep_with_plain_steps_checks_batches_side_by_side_and_records_the_sweep(
    relink_app, owner, sandbox, closed_port
):
    """The sweep service itself, as `relink check` runs it: its plain steps, two batches
    in flight sharing the sweep's caps, every check and the sweep's record at `now`."""
    add_api_connections(relink_app, owner, sandbox.url, "good-key", 5, "ok")
    add_api_connections(relink_app, owner, sandbox.url, "revoked-key", 2, "revoked")
    add_api_connections(relink_app, owner, f"http://127.0.0.1:{closed_port}", "good-key", 1, "down")
    calls: list[tuple[datetime, int, int | None, dict]] = []
    plain = plain_steps(relink_app)

    async def check_batch(now, after_id, upto_id, policy, only):
        calls.append((now, after_id, upto_id, policy))
        return await plain.check_batch(now, after_id, upto_id, policy, only)

    policy = SweepPolicy(
        check=dataclasses.replace(FAST, batch_size=3, concurrency=8, per_provider=5),
        parallel_batches=2,
    )
    report = asyncio.run(
        run_sweep(
            relink_app,
            now=T0,
            steps=SweepSteps(check_batch=check_batch),
            policy=policy,
            source="a test",
            details={"by": "test_check_sweep"},
        )
    )

    assert report.summary.checked == 8 and report.summary.batches == 3
    assert report.summary.outcomes == {
        "ok": 5,
        "auth_failed": 2,
        "misconfigured": 0,
        "unreachable": 1,
        "error": 0,
    }
    assert not report.failed and report.failure() == ""
    assert [(a, b) for _, a, b, _ in sorted(calls, key=lambda c: c[1])] == [
        (0, 3),
        (3, 6),
        (6, None),
    ]
    assert {c[0] for c in calls} == {T0}
    # each of the two batches in flight gets half the sweep's caps
    assert {(c[3]["concurrency"], c[3]["per_provider"]) for c in calls} == {(4, 3)}
    with relink_app.sessions() as session:
        assert set(session.scalars(sa.select(Connection.last_checked_at))) == {T0}
        last = last_sweep(session)
    assert last["at"] == T0.isoformat()
    assert (last["source"], last["outcome"], last["by"]) == (
        "a test",
        "completed",
        "test_check_sweep",
    )
    assert last["summary"]["checked"] == 8 and last["summary"]["opened"] == 2

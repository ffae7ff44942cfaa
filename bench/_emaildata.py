"""The email benchmarks' data and loops (used by `bench.emails` and `bench.due_selection`).

- `Endpoint`: the standalone SendGrid-compatible endpoint in its own process;
- `raw_post_loop` / `sdk_loop`: the baselines the email run is compared with;
- `sample_mails`: the SDK `Mail` objects `send_due` would send;
- `sqlite_fill` / `postgres_fill`: 1,000,000 connections with one disconnection each,
  of every kind (closed, open and recent, open and due, open and emailed), written by
  one INSERT ... SELECT per table.
"""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from bench._common import make_app
from relink.emailing.due import due_ids, load_due
from relink.emailing.mailer import SendGridMailer, to_mail
from relink.emailing.sender import build_email
from tests.support.emaildata import World

RUN = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
API_KEY = "SG.bench-key"


def raw_post_loop(url: str, bodies: Sequence[bytes], threads: int) -> float:
    """POST every body with http.client, one keep-alive connection per thread."""
    parts = urlsplit(url)
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/json",
    }
    chunks = [bodies[i::threads] for i in range(threads)]
    errors: list[int] = []

    def worker(chunk: Sequence[bytes]) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        for body in chunk:
            conn.request("POST", "/v3/mail/send", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 202:
                errors.append(response.status)
        conn.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, chunks))
    elapsed = time.perf_counter() - started
    assert not errors, errors[:5]
    return elapsed


def sdk_loop(url: str, mails: Sequence[Any], threads: int) -> float:
    """The SDK alone (no database): one client per thread, like one mailer per batch."""
    chunks = [mails[i::threads] for i in range(threads)]

    def worker(chunk: Sequence[Any]) -> None:
        mailer = SendGridMailer(API_KEY, url, timeout=30)
        for mail in chunk:
            assert mailer.client.send(mail).status_code == 202

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, chunks))
    return time.perf_counter() - started


def sample_mails(emails: int, workdir: Path) -> list[Any]:
    """The SDK `Mail` objects `send_due` would send for `emails` due disconnections."""
    app = make_app(f"sqlite:///{workdir / 'sample.db'}", workdir / "data-sample")
    World(app).many_broken(emails, RUN - timedelta(hours=25))
    with app.sessions() as session:
        ids = due_ids(session, now=RUN)
    items = load_due(app, ids)
    app.close()
    return [
        to_mail(build_email(i, sender="alerts@relink.example", base_url="https://x")) for i in items
    ]


# One disconnection per connection, kinds interleaved by id (i % 100) as episodes of
# every kind open over time: 90 in 100 closed (half of them emailed), 1 open < 24 h,
# 1 open and due, 8 open and already emailed. With 1,000,000 connections: 100,000 open.
KIND = "(i % 100)"
IS_CLOSED, IS_RECENT = f"{KIND} < 90", f"{KIND} = 90"  # 91: due
EMAILED_WHERE = f"({KIND} < 90 AND i % 2 = 0) OR {KIND} >= 92"


def kinds(connections: int) -> dict[str, int]:
    hundredth = connections // 100
    return {
        "closed": 90 * hundredth,
        "recent": hundredth,
        "due": hundredth,
        "emailed": 8 * hundredth,
    }


def sqlite_fill(engine: sa.Engine, connections: int) -> None:
    stamp = "'{}'".format(RUN.strftime("%Y-%m-%d %H:%M:%S"))
    total = connections

    def ts(hours: str) -> str:
        return f"datetime({stamp}, '-' || ({hours}) || ' hours') || '.000000'"

    started = f"""CASE
        WHEN {IS_CLOSED} THEN {ts("48 + i % 1440")}
        WHEN {IS_RECENT} THEN {ts("i % 23")}
        ELSE {ts("24 + i % 1000")} END"""
    seq = "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n})"
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA synchronous=OFF")
        conn.exec_driver_sql(
            "INSERT INTO connections (id, account_id, type, name, mode, settings, credentials,"
            " owner_id, status, version, created_at, updated_at) "
            + seq.format(n=connections)
            + f" SELECT i, 1, 'postgres', 'c' || i, 'direct', '{{}}', 'x', 1, 'connected', 1,"
            f" {ts('2000')}, {ts('2000')} FROM seq"
        )
        conn.exec_driver_sql(
            "INSERT INTO disconnections (id, connection_id, started_at, ended_at, reason_code,"
            " awaiting_email) "
            + seq.format(n=total)
            + f" SELECT i, i, {started}, CASE WHEN {IS_CLOSED} THEN {ts('46 + i % 1440')}"
            f" END, '28P01', NOT ({EMAILED_WHERE}) FROM seq"
        )
        conn.exec_driver_sql(
            "INSERT INTO notifications (disconnection_id, state, recipients, attempts,"
            " claimed_at, updated_at) "
            + seq.format(n=total)
            + f" SELECT i, 'sent', '[]', 1, {ts('1')}, {ts('1')} FROM seq WHERE {EMAILED_WHERE}"
        )
        conn.exec_driver_sql("ANALYZE")


def postgres_fill(engine: sa.Engine, connections: int) -> None:
    run = f"TIMESTAMP '{RUN:%Y-%m-%d %H:%M:%S}'"
    total = connections

    def ts(hours: str) -> str:
        return f"{run} - make_interval(hours => ({hours})::int)"

    started = f"""CASE
        WHEN {IS_CLOSED} THEN {ts("48 + i % 1440")}
        WHEN {IS_RECENT} THEN {ts("i % 23")}
        ELSE {ts("24 + i % 1000")} END"""
    emailed = EMAILED_WHERE
    with engine.begin() as conn:
        execute = lambda sql: conn.exec_driver_sql(re.sub(r"i % (\d+)", r"mod(i, \1)", sql))  # noqa: E731
        execute(
            "INSERT INTO connections (id, account_id, type, name, mode, settings, credentials,"
            " owner_id, status, version, created_at, updated_at)"
            f" SELECT i, 1, 'postgres', 'c' || i, 'direct', '{{}}', 'x', 1, 'connected', 1,"
            f" {ts('2000')}, {ts('2000')} FROM generate_series(1, {connections}) AS i"
        )
        execute(
            "INSERT INTO disconnections (id, connection_id, started_at, ended_at, reason_code,"
            " awaiting_email)"
            f" SELECT i, i, {started}, CASE WHEN {IS_CLOSED} THEN {ts('46 + i % 1440')} END,"
            f" '28P01', NOT ({emailed}) FROM generate_series(1, {total}) AS i"
        )
        execute(
            "INSERT INTO notifications (disconnection_id, state, recipients, attempts,"
            " claimed_at, updated_at)"
            f" SELECT i, 'sent', '[]', 1, {ts('1')}, {ts('1')}"
            f" FROM generate_series(1, {total}) AS i WHERE {emailed}"
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")


def capture_sql(engine: sa.Engine, fn: Callable[[], Any]) -> list[tuple[str, Any]]:
    captured: list[tuple[str, Any]] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        captured.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        fn()
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    return captured

"""Production mode, end to end: a real Prefect server, `prefect deploy --all` from
`prefect.yaml` onto a `process` work pool, TWO workers, the app database on PostgreSQL.

A check sweep over enough connections for several shards fans out: both workers take
shards, each shard is claimed once; the disconnection emails go to the outbox; the
email deployment's schedule puts its runs at 14:00 UTC in January and in July; a web
page's reconnect follow-up is a reconnect-connection run that a worker runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from relink import db
from relink.app import Relink
from relink.connections import NewConnection, add_connection
from relink.directory import add_account, add_user
from relink.followup import pending
from relink.models import Connection, Disconnection, Followup, Notification, SweepShard, User
from relink.settings import Settings
from relink.vault import generate_key
from relink.web import followups
from relink_dev.runner import Supervisor
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.support.pg import temporary_schema

pytestmark = [pytest.mark.prefect, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
GOOD, BAD = 6, 3  # connections whose API key works / was revoked
SHARD_SIZE = 3  # 9 connections: 3 shards


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(base: str, path: str, body: object | None = None) -> object:
    request = urllib.request.Request(
        f"{base}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    for attempt in range(20):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
            return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            # a busy server on SQLite answers 503 ("database is locked"): ask again
            if exc.code != 503 or attempt == 19:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def ids_and_names(app: Relink) -> list[tuple[int, str]]:
    with app.sessions() as session:
        return [tuple(r) for r in session.execute(sa.select(Connection.id, Connection.name))]


def user_id_of(app: Relink, email: str) -> int:
    with app.sessions() as session:
        return session.scalar(sa.select(User.id).where(User.email == email))


@pytest.fixture
def app_db(postgres_url: str) -> Iterator[str]:
    """A fresh schema in the test PostgreSQL, migrated."""
    with temporary_schema(postgres_url, prefix="relink_e2e") as url:
        yield url


def phase(started: float, what: str) -> None:
    print(f"{time.monotonic() - started:6.1f} s  {what}", flush=True)


def run_deployment(env: dict[str, str], name: str, *params: str) -> str:
    """`prefect deployment run NAME --watch`; the flow run's id. The watch timeout is a
    liveness bound, not a speed goal: a worker on a loaded 2-core machine takes minutes."""
    args = [*PREFECT, "deployment", "run", name, "--watch", "--watch-interval", "1"]
    for param in params:
        args += ["-p", param]
    result = subprocess.run(
        [*args, "--watch-timeout", "300"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Completed" in result.stdout, result.stdout
    return re.search(r"UUID: ([0-9a-f-]{36})", result.stdout).group(1)


def test_deployed_sweep_fans_out_over_two_workers_and_emails_go_out(app_db, tmp_path):
    started = time.monotonic()
    settings = Settings(
        _env_file=None,
        database_url=app_db,
        data_dir=tmp_path / "data",
        secret_keys=generate_key(),
        base_url="http://relink.test",
    )
    app = Relink(settings)
    db.upgrade(app.engine)
    provider = SandboxProvider()
    sandbox = SandboxServer(provider).start()
    supervisor = Supervisor(log_dir=tmp_path / "logs", grace=3.0)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("RELINK_", "PREFECT_"))}
    prefect_env = {
        **base_env,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": os.environ.get("RELINK_E2E_LOG_LEVEL", "WARNING"),
    }
    client_env = {**prefect_env, "PREFECT_API_URL": api_url, "RELINK_HOME": str(ROOT)}
    try:
        now = datetime.now(UTC)
        with app.transaction() as session:
            add_account(session, "E2E Co", now=now)
            add_user(
                session,
                email="owner@e2e.test",
                name="Owner",
                role="admin",
                account="E2E Co",
                now=now,
            )
            for n in range(GOOD + BAD):
                key = f"key-{n:02d}-{uuid.uuid4().hex[:8]}"
                if n < GOOD:
                    provider.add_api_key(key)
                add_connection(
                    session,
                    app.vault,
                    NewConnection(
                        type="api_key",
                        name=f"API {n:02d}",
                        owner="owner@e2e.test",
                        settings={
                            "base_url": sandbox.url,
                            "probe_path": "/apikey/me",
                            "header": "X-API-Key",
                        },
                        secrets={"api_key": key},
                    ),
                    now=now,
                )

        supervisor.start(
            "prefect-server",
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            prefect_env,
        )
        deadline = time.monotonic() + 60
        while True:
            supervisor.check_alive()
            try:
                if api(api_url, "/health") is True:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the Prefect server did not start"
            time.sleep(0.25)

        phase(started, "server healthy")
        cli_options = {
            "cwd": ROOT,
            "env": client_env,
            "capture_output": True,
            "text": True,
            "timeout": 60,
        }
        pool = subprocess.run(
            [*PREFECT, "work-pool", "create", "relink", "--type", "process"], **cli_options
        )
        assert pool.returncode == 0, pool.stdout + pool.stderr
        worker_env = {
            **client_env,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "RELINK_DATABASE_URL": app_db,
            "RELINK_DATA_DIR": str(settings.data_dir),
            "RELINK_SECRET_KEYS": settings.secret_keys.get_secret_value(),
            "RELINK_BASE_URL": settings.base_url,
            "RELINK_CHECK_TIMEOUT": "5",
        }
        # two slots each: whichever worker holds the sweep's own run has one left, so
        # the three shards land on both workers
        for name in ("worker-a", "worker-b"):
            supervisor.start(
                name,
                [*PREFECT, "worker", "start", "--pool", "relink", "--name", name, "--limit", "2"],
                {**worker_env, "RELINK_WORKER_NAME": name},
                cwd=tmp_path,  # the pull step, not the worker's directory, finds the flows
            )
        deploy = subprocess.run([*PREFECT, "--no-prompt", "deploy", "--all"], **cli_options)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr

        phase(started, "deployed, workers starting")
        deployed = {
            d["name"]: d
            for d in api(api_url, "/deployments/filter", {})  # type: ignore[union-attr]
        }
        assert set(deployed) == {
            "check-connections",
            "check-connections-shard",
            "send-disconnection-emails",
            "reconnect-connection",
            "refresh-datasets",
        }
        assert deployed["check-connections"]["concurrency_options"] == {
            "collision_strategy": "CANCEL_NEW",
            "grace_period_seconds": None,
        }

        # -- a sweep that fans out --------------------------------------------------
        sweep_run = run_deployment(
            client_env, "check-connections/check-connections", f"shard_size={SHARD_SIZE}"
        )
        with app.sessions() as session:
            shards = session.scalars(
                sa.select(SweepShard).where(SweepShard.sweep_id == sweep_run)
            ).all()
            statuses = dict(session.execute(sa.select(Connection.name, Connection.status)).all())
        assert len(shards) == (GOOD + BAD) // SHARD_SIZE
        assert all(s.finished_at is not None and s.claimed_by for s in shards)
        assert sum(s.summary["checked"] for s in shards) == GOOD + BAD
        workers = {s.claimed_by.split(":")[0] for s in shards}
        assert workers == {"worker-a", "worker-b"}, [s.claimed_by for s in shards]
        assert sorted(statuses.values()) == ["connected"] * GOOD + ["disconnected"] * BAD

        phase(started, "sweep done")
        # -- the emails: disconnections open for 25 hours are due ---------------------
        with app.transaction() as session:
            session.execute(
                sa.update(Disconnection).values(started_at=datetime.now(UTC) - timedelta(hours=25))
            )
        run_deployment(client_env, "send-disconnection-emails/send-disconnection-emails")
        with app.sessions() as session:
            states = session.scalars(sa.select(Notification.state)).all()
        assert sorted(states) == ["outbox"] * BAD
        assert len(list((settings.data_dir / "outbox").glob("*.eml"))) == BAD

        phase(started, "emails done")
        # -- a web page's reconnect follow-up: a reconnect-connection run on a worker ----
        good = next(cid for cid, name in ids_and_names(app) if name == "API 00")
        settings.prefect_api_url = api_url
        admin_id = user_id_of(app, "owner@e2e.test")
        handed = asyncio.run(
            followups.start(
                app, good, requested_by="owner@e2e.test", requested_by_id=admin_id, background=set()
            )
        )
        assert handed.flow_run and handed.report is None
        with app.sessions() as session:
            (followup,) = session.scalars(sa.select(Followup)).all()
        assert followup.flow_run_id and followup.finished_at is None
        deadline = time.monotonic() + 300  # a liveness bound: the worker polls every second
        while True:
            run = api(api_url, f"/flow_runs/{followup.flow_run_id}")
            if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            assert time.monotonic() < deadline, run["state_type"]
            time.sleep(1)
        assert run["state_type"] == "COMPLETED" and run["name"] == handed.flow_run
        assert run["parameters"] == {"connection_id": good, "requested_by": "owner@e2e.test"}
        assert pending.unfinished(app) == []  # the web pages' restart leaves it to the run

        phase(started, "follow-up done")
        # -- the email schedule, as the server plans it ---------------------------------
        (email,) = api(
            api_url,
            "/deployments/filter",
            {"deployments": {"name": {"any_": ["send-disconnection-emails"]}}},
        )
        # `prefect deploy` resolves `{{ $RELINK_HOME }}` (left to the worker when unset)
        assert email["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]
        for start in ("2027-01-10T00:00:00Z", "2027-07-10T00:00:00Z"):
            api(
                api_url,
                f"/deployments/{email['id']}/schedule",
                {"start_time": start, "end_time": start.replace("10T", "12T"), "max_runs": 10},
            )
        runs = api(
            api_url,
            "/flow_runs/filter",
            {
                "flow_runs": {
                    "deployment_id": {"any_": [email["id"]]},
                    "state": {"type": {"any_": ["SCHEDULED"]}},
                }
            },
        )
        times = sorted(datetime.fromisoformat(r["expected_start_time"]) for r in runs)
        in_2027 = [t for t in times if t.year == 2027]
        assert {t.month for t in in_2027} == {1, 7}
        assert all((t.astimezone(UTC).hour, t.minute) == (14, 0) for t in times), times
    finally:
        phase(started, "stopping")
        supervisor.stop_all()  # workers first (SIGINT, then SIGTERM), the server last
        sandbox.stop()
        app.close()
    assert not [c for c in supervisor.children if c.alive()]

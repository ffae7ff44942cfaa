"""The web pages' reconnect follow-up (re-check, then refresh the datasets) is never lost:
run in the web process, one the process did not finish is run again when it starts; with
a Prefect server configured it is a reconnect-connection flow run instead. Real parts:
the loopback PostgreSQL as the source, the app database, a real (temporary) Prefect
server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from relink.followup import pending
from relink.models import AuditEvent, Dataset, Followup
from relink.timeutil import utcnow
from relink.web import create_app, followups
from tests.support.reconnect import (
    OWNER,
    T0,
    add_broken_pg_connection,
    add_people,
    add_pg_connection,
    pg_settings,
    user_id,
    warehouse_rows,
)
from tests.support.web import TestClient, free_port

THREE_FRUITS = "SELECT * FROM (VALUES (1, 'apple'), (2, 'pear'), (3, 'fig')) AS t(id, name)"


@pytest.fixture
def shop(relink_app, postgres_url):
    """A working connection (the trusted `postgres` role) with one warehouse dataset."""
    add_people(relink_app)
    return add_pg_connection(
        relink_app,
        settings=pg_settings(postgres_url, "postgres"),
        password="trusted",
        queries=[("Fruits", THREE_FRUITS)],
    )


def dataset_status(app, dataset_id: int) -> str:
    with app.sessions() as session:
        ds = session.get(Dataset, dataset_id)
        assert ds is not None
        return ds.status


def followup_row(app, followup_id: int) -> Followup:
    with app.sessions() as session:
        row = session.get(Followup, followup_id)
        assert row is not None
        session.expunge(row)
        return row


@pytest.mark.both_backends  # the claim's conditional UPDATE, the timestamps
def test_a_followup_the_web_process_did_not_finish_runs_again_when_it_starts(relink_app, shop):
    followup_id = pending.submit(relink_app, shop.connection_id, user_id(relink_app, OWNER), now=T0)

    async def first_web_process() -> None:
        """Re-checks, then stops (a deploy, a crash) before the datasets are refreshed."""
        rechecked = asyncio.Event()

        async def stopped_before_refresh(connection_id: int, requested_by: str) -> dict:
            rechecked.set()
            await asyncio.Event().wait()  # the process stops here
            raise AssertionError("unreachable")

        steps = dataclasses.replace(pending.web_steps(relink_app), refresh=stopped_before_refresh)
        task = asyncio.create_task(pending.run_pending(relink_app, followup_id, steps=steps))
        await rechecked.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(first_web_process())
    assert pending.unfinished(relink_app) == [followup_id]
    assert dataset_status(relink_app, shop.dataset_ids[0]) == "pending"

    with TestClient(create_app(relink_app)):  # the web process starts again
        deadline = time.monotonic() + 60
        while pending.unfinished(relink_app) and time.monotonic() < deadline:
            time.sleep(0.1)

    assert pending.unfinished(relink_app) == []
    row = followup_row(relink_app, followup_id)
    assert row.verdict == "works" and row.finished_at is not None and row.flow_run_id is None
    assert dataset_status(relink_app, shop.dataset_ids[0]) == "ok"
    assert warehouse_rows(relink_app, f"ds_{shop.dataset_ids[0]}") == [
        (1, "apple"),
        (2, "pear"),
        (3, "fig"),
    ]
    with relink_app.sessions() as session:  # visible in the audit trail, by whom it was asked
        (event,) = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "connection.followup")
        )
        assert event.actor_id == user_id(relink_app, OWNER)
        assert event.details["verdict"] == "works"
        assert event.details["datasets_refreshed"] == 1


def test_a_followup_a_flow_run_took_over_is_not_run_again_here(relink_app, shop):
    followup_id = pending.submit(relink_app, shop.connection_id, user_id(relink_app, OWNER), now=T0)
    pending.handed_over(relink_app, followup_id, "8e4f1c2a-0000-4000-8000-000000000000")
    assert pending.unfinished(relink_app) == []
    assert asyncio.run(pending.run_pending(relink_app, followup_id)) is None
    assert dataset_status(relink_app, shop.dataset_ids[0]) == "pending"


@pytest.mark.usefixtures("prefect_server")
def test_with_a_prefect_server_the_followup_is_a_reconnect_connection_flow_run(relink_app, shop):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from flows.reconnect_connection import reconnect_connection

    async def deploy() -> None:
        deployment = await reconnect_connection.ato_deployment(name="reconnect-connection")
        await deployment.aapply()

    asyncio.run(deploy())
    relink_app.settings.prefect_api_url = PREFECT_API_URL.value()
    background: set[asyncio.Task] = set()

    started = asyncio.run(
        followups.start(
            relink_app,
            shop.connection_id,
            requested_by=OWNER,
            requested_by_id=user_id(relink_app, OWNER),
            background=background,
        )
    )

    assert started.flow_run and started.report is None and not background
    ((_, flow_run_id),) = pending_rows(relink_app)
    assert flow_run_id is not None
    assert pending.unfinished(relink_app) == []  # a restart leaves it to the flow run

    async def read_run():
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)

    run = asyncio.run(read_run())
    assert run.name == started.flow_run
    assert run.parameters == {"connection_id": shop.connection_id, "requested_by": OWNER}
    assert dataset_status(relink_app, shop.dataset_ids[0]) == "pending"  # not run here


def pending_rows(app) -> list[tuple[int, str | None]]:
    with app.sessions() as session:
        return [tuple(r) for r in session.execute(sa.select(Followup.id, Followup.flow_run_id))]


def test_a_finished_followup_is_not_run_again(relink_app, shop):
    followup_id = pending.submit(relink_app, shop.connection_id, user_id(relink_app, OWNER), now=T0)
    report = asyncio.run(pending.run_pending(relink_app, followup_id))
    assert report is not None and report.verdict == "works"
    assert asyncio.run(pending.run_pending(relink_app, followup_id)) is None
    with relink_app.sessions() as session:
        events = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "connection.followup")
        ).all()
    assert len(events) == 1


def web_process(app, tmp_path, **more_env: str) -> subprocess.Popen:
    """`relink web` in a process of its own, on the test's app database (no PREFECT_*
    variable: only what `more_env` adds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELINK_", "PREFECT_"))}
    env |= {
        "RELINK_DATABASE_URL": app.settings.effective_database_url,
        "RELINK_DATA_DIR": str(app.settings.data_dir),
        "RELINK_SECRET_KEYS": app.settings.secret_keys.get_secret_value(),
        "RELINK_BASE_URL": app.settings.base_url,
        **more_env,
    }
    command = "from relink.cli import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", command, "web", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def set_query(app, dataset_id: int, query: str) -> None:
    with app.transaction() as session:
        session.execute(sa.update(Dataset).where(Dataset.id == dataset_id).values(query=query))


def wait_for(condition, what: str, seconds: float = 90) -> None:
    """A liveness bound, not a clock: a process starting on a loaded machine takes seconds."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.2)


def test_a_web_process_killed_during_a_followup_leaves_it_to_the_next_one(
    relink_app, shop, tmp_path, postgres_url
):
    """Real processes: the first `relink web` starts the follow-up and is killed (SIGKILL)
    while the source is still answering the refresh; the next one runs it to the end."""
    dataset_id = shop.dataset_ids[0]
    slow = "SELECT pg_sleep(20) AS slept"
    set_query(relink_app, dataset_id, slow)  # a slow source
    source = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)

    def answering() -> list[int]:  # the source's sessions running the slow query
        with source.connect() as conn:
            return list(
                conn.scalars(
                    sa.text("SELECT pid FROM pg_stat_activity WHERE query = :q"), {"q": slow}
                )
            )

    followup_id = pending.submit(relink_app, shop.connection_id, user_id(relink_app, OWNER), now=T0)

    first = web_process(relink_app, tmp_path)
    try:
        wait_for(answering, "the first process re-checks, then asks the source for the rows")
    finally:
        first.kill()
        first.wait(timeout=30)
        with source.connect() as conn:  # its query outlives it at the source: end it
            for pid in answering():
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        source.dispose()
    assert pending.unfinished(relink_app) == [followup_id]
    assert dataset_status(relink_app, dataset_id) == "pending"

    set_query(relink_app, dataset_id, THREE_FRUITS)  # the source answers quickly again
    second = web_process(relink_app, tmp_path)
    try:
        wait_for(lambda: not pending.unfinished(relink_app), "the next one finishes it")
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert followup_row(relink_app, followup_id).verdict == "works"
    assert dataset_status(relink_app, dataset_id) == "ok"
    assert warehouse_rows(relink_app, f"ds_{dataset_id}") == [(1, "apple"), (2, "pear"), (3, "fig")]


@pytest.mark.usefixtures("prefect_server")
def test_relink_prefect_api_url_alone_sends_the_web_process_events_there(
    relink_app, pg_admin, tmp_path
):
    """RELINK_PREFECT_API_URL and no PREFECT_API_URL: the web process's events reach that
    Prefect server (here the recovery its resumed follow-up's re-check finds), as its
    follow-ups do."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    from deployments.definitions import by_name
    from tests.integration.test_events_server import read_events

    async def no_reconnect_deployment() -> None:
        """One another test applied on the session's server would take the follow-up over
        (and with no worker, nothing would run it)."""
        async with get_client() as client:
            try:
                found = await client.read_deployment_by_name(
                    by_name(followups.DEPLOYMENT).full_name
                )
            except ObjectNotFound:
                return
            await client.delete_deployment(found.id)

    asyncio.run(no_reconnect_deployment())
    world, role = add_broken_pg_connection(relink_app, pg_admin)
    pg_admin.set_password(role.name, role.password)  # fixed at the source
    followup_id = pending.submit(
        relink_app, world.connection_id, user_id(relink_app, OWNER), now=T0
    )
    since = utcnow() - timedelta(seconds=1)

    def recovered() -> bool:
        return any(
            e["event"] == "relink.connection.recovered"
            and e["resource"]["prefect.resource.id"] == f"relink.connection.{world.connection_id}"
            for e in asyncio.run(read_events(since))
        )

    web = web_process(relink_app, tmp_path, RELINK_PREFECT_API_URL=PREFECT_API_URL.value())
    try:  # no reconnect-connection deployment on that server: the follow-up runs here
        wait_for(lambda: not pending.unfinished(relink_app), "the web process runs it")
        assert followup_row(relink_app, followup_id).verdict == "works"
        wait_for(recovered, "the recovery event reaches the Prefect server")
    finally:
        web.terminate()
        web.wait(timeout=30)

"""The deployments' schedules, read from the schedule objects Prefect's scheduler uses
(no server): the email run stays at 14:00 UTC across both US DST changes."""

import asyncio
from datetime import UTC, datetime

import pytest
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.schedules import Cron
from prefect.server.schemas import schedules as server_schedules

from deployments.definitions import (
    DEPLOYMENTS,
    DeploymentSpec,
    by_name,
    schedule_of,
    schedule_words,
)
from relink.domain.schedule import next_email_run


def next_runs(schedule, start: datetime, n: int = 3) -> list[datetime]:
    """What the server's scheduler would plan after `start` (its own schedule model)."""
    client_side = DeploymentScheduleCreate.from_schedule(schedule).schedule
    server_side = getattr(server_schedules, type(client_side).__name__)(**client_side.model_dump())
    dates = asyncio.run(server_side.get_dates(n=n, start=start))
    return [d.astimezone(UTC) for d in dates]


@pytest.mark.parametrize(
    "start",
    [
        datetime(2026, 1, 10, tzinfo=UTC),  # winter
        datetime(2026, 3, 7, tzinfo=UTC),  # across the US DST start (Sunday 8 March)
        datetime(2026, 3, 9, tzinfo=UTC),  # after it
        datetime(2026, 7, 1, tzinfo=UTC),  # summer
        datetime(2026, 10, 31, tzinfo=UTC),  # across the US DST end (Sunday 1 November)
        datetime(2026, 11, 2, tzinfo=UTC),  # after it
    ],
)
def test_email_run_is_at_14_00_utc_all_year(start):
    runs = next_runs(schedule_of(by_name("send-disconnection-emails")), start)
    assert len(runs) == 3
    assert all((r.hour, r.minute) == (14, 0) for r in runs), runs
    assert runs[0].date() == start.date()


def test_denver_would_drift_to_13_00_utc_in_summer():
    """Why the time zone is America/Phoenix: the same cron in a DST zone moves."""
    (run,) = next_runs(
        Cron("0 7 * * *", timezone="America/Denver"), datetime(2026, 7, 1, tzinfo=UTC), 1
    )
    assert run.hour == 13


def test_email_deployment_definition():
    spec = by_name("send-disconnection-emails")
    assert spec.entrypoint == "flows/send_disconnection_emails.py:send_disconnection_emails"
    assert (spec.cron, spec.timezone, spec.interval_minutes) == (
        "0 7 * * *",
        "America/Phoenix",
        None,
    )


def test_each_description_says_when_it_runs_with_the_time_zone():
    """The Prefect UI shows "At 07:00 AM every day" without a zone; the description says it."""
    email, checks = by_name("send-disconnection-emails"), by_name("check-connections")
    assert email.description.startswith("Daily at 07:00 MST (14:00 UTC): email the owner")
    assert checks.description.startswith("Every 15 minutes from 00:00 UTC: check every")
    assert by_name("refresh-datasets").description.startswith("On demand: refresh")


def test_a_zone_with_daylight_saving_time_names_both_utc_times():
    denver = DeploymentSpec("x", "flows/x.py:x", "x", cron="30 7 * * *", timezone="America/Denver")
    assert schedule_words(denver) == "Daily at 07:30 MST (13:30 or 14:30 UTC)"


def test_checks_run_every_15_minutes_one_at_a_time():
    spec = by_name("check-connections")
    assert spec.entrypoint == "flows/check_connections.py:check_connections"
    assert spec.interval_minutes == 15 and spec.concurrency_limit == 1
    runs = next_runs(schedule_of(spec), datetime(2026, 3, 8, 8, 50, tzinfo=UTC), 4)
    assert [r.strftime("%H:%M") for r in runs] == ["09:00", "09:15", "09:30", "09:45"]


def test_every_entrypoint_names_a_flow_and_every_name_is_unique():
    import importlib

    assert len({s.name for s in DEPLOYMENTS}) == len(DEPLOYMENTS)
    for spec in DEPLOYMENTS:
        path, _, function = spec.entrypoint.partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert getattr(module, function).name == spec.name


def test_a_spec_needs_exactly_one_schedule():
    with pytest.raises(ValueError, match="exactly one"):
        DeploymentSpec("x", "flows/x.py:x", "x", cron="0 7 * * *", interval_minutes=5)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 1, 10, 12, 0, tzinfo=UTC), datetime(2026, 1, 10, 14, 0, tzinfo=UTC)),
        (datetime(2026, 1, 10, 14, 0, tzinfo=UTC), datetime(2026, 1, 10, 14, 0, tzinfo=UTC)),
        (datetime(2026, 1, 10, 14, 1, tzinfo=UTC), datetime(2026, 1, 11, 14, 0, tzinfo=UTC)),
        (datetime(2026, 7, 10, 20, 0, tzinfo=UTC), datetime(2026, 7, 11, 14, 0, tzinfo=UTC)),
        (datetime(2026, 3, 8, 13, 0, tzinfo=UTC), datetime(2026, 3, 8, 14, 0, tzinfo=UTC)),
    ],
)
def test_the_next_email_run_is_14_00_utc_all_year(now, expected):
    assert next_email_run(now) == expected

"""docs/benchmarks.md regenerated after `python -m bench --only NAME` keeps what the
other benchmarks said, marked as from their earlier run."""

from __future__ import annotations

from bench import report

MACHINE = {
    "cpus": 2,
    "memory_gib": 4.0,
    "load_average_at_start": [0.5, 0.5, 0.5],
    **{
        k: "1"
        for k in ("python", "prefect", "sqlalchemy", "httpx", "authlib", "sendgrid", "werkzeug")
    },
    "sqlite": "3",
}
OLD_RUN = {
    "date": "2026-11-29 09:22 UTC",
    "command": "python -m bench --large",
    "seconds": 1736,
    "machine": MACHINE,
}
NEW_RUN = {
    **OLD_RUN,
    "date": "2026-12-05 06:00 UTC",
    "command": "python -m bench --only token_spend",
}


def result(run: dict, label: str, text: str) -> dict:
    figure = {"label": label, "value": 0.5, "unit": "", "goal": "", "met": None}
    return {
        "run": run,
        "started": run["date"],
        "figures": [figure],
        "markdown": [text],
        "notes": [],
    }


def test_only_one_benchmark_keeps_the_others_rows_and_sections():
    old = report.render(
        {
            "sweep": result(OLD_RUN, "flow / raw throughput", "the sweep's table"),
            "emails": result(OLD_RUN, "send_due / raw", "the email run's table"),
        },
        ["<!-- findings: kept across regenerations -->", "- a finding", "<!-- /findings -->"],
    )

    new = report.render(
        {"token_spend": result(NEW_RUN, "instant grant: ratio", "the lock's table")},
        report._kept_findings(old),
        report._kept(old),
    )

    assert "Last run: 2026-12-05 06:00 UTC" in new
    for line in (
        "| sweep | flow / raw throughput | 0.50 |  |",
        "| emails | send_due / raw | 0.50 |  |",
        "| token_spend | instant grant: ratio | 0.50 |  |",
        "- a finding",
        "the sweep's table",
        "the email run's table",
        "the lock's table",
    ):
        assert line in new
    kept_from = "From an earlier run: 2026-11-29 09:22 UTC, `python -m bench --large`."
    assert new.count(kept_from) == 2  # the sweep's and the email run's sections
    again = report.render(
        {"token_spend": result(NEW_RUN, "instant grant: ratio", "the lock's table")},
        report._kept_findings(new),
        report._kept(new),
    )
    assert again == new  # regenerating keeps them once, not twice

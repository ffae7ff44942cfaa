"""CLI start-up: cold `relink --help` and `relink status` processes (the demo account on
a SQLite file), median of 7 each, beside a bare `python -c pass` in the same run."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import Report, table

RUNS = 7
GOALS = {"help": 0.3, "status": 0.8}  # seconds, issue 18
RELINK = [sys.executable, "-c", "from relink.cli import main; main()"]


def cold(argv: list[str], env: dict[str, str]) -> float:
    """The median wall time of RUNS fresh processes (after one warm-up for the disk cache)."""
    times = []
    for attempt in range(RUNS + 1):
        began = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=120)
        if attempt:
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def run(large: bool, cache: dict[str, Any]) -> Report:
    report = Report("cli_startup", "CLI start-up: cold processes")
    with tempfile.TemporaryDirectory(prefix="relink-bench-cli-") as tmp:
        env = {
            **os.environ,
            "RELINK_DATA_DIR": tmp,
            "RELINK_DATABASE_URL": f"sqlite:///{Path(tmp) / 'relink.db'}",
        }
        for setup in (["db", "upgrade"], ["demo", "seed"]):
            subprocess.run([*RELINK, *setup], env=env, check=True, capture_output=True)
        seconds = {
            "python": cold([sys.executable, "-c", "pass"], env),
            "help": cold([*RELINK, "--help"], env),
            "status": cold([*RELINK, "status"], env),
        }
    report.figure("python_s", "bare `python -c pass` (median)", round(seconds["python"], 3), "s")
    for name, goal in GOALS.items():
        value = seconds[name]
        report.figure(
            f"{name}_s",
            f"`relink {'--help' if name == 'help' else name}` (median of {RUNS} cold runs)",
            round(value, 3),
            "s",
            goal=f"< {goal}",
            met=value < goal,
        )
    report.markdown = [
        f"Median of {RUNS} cold processes each (after one warm-up), the demo account on a "
        "SQLite file. `relink --help` is printed from the command table in "
        "`relink/cli/__init__.py` without importing a command; `relink status` imports "
        "what it reads.",
        "",
        *table(
            ["process", "median s", "goal", "× bare python"],
            [
                ("python -c pass", f"{seconds['python']:.3f}", "", "1.0"),
                *(
                    (
                        f"relink {'--help' if n == 'help' else n}",
                        f"{seconds[n]:.3f}",
                        f"< {g}",
                        f"{seconds[n] / seconds['python']:.1f}",
                    )
                    for n, g in GOALS.items()
                ),
            ],
        ),
    ]
    report.details = {"seconds": seconds, "runs": RUNS}
    return report

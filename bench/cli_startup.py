"""CLI start-up: cold `relink --help` and `relink status` processes (the demo account on
a SQLite file, after one check sweep), median of 7 each, beside a bare `python -c pass`
in the same run: wall time (the goal) and the CPU time the process used (user + system),
which other work on a shared machine inflates less."""

from __future__ import annotations

import os
import resource
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


def cold(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """The median wall time and median CPU time (user + system) of RUNS fresh processes
    (after one warm-up for the disk cache)."""
    walls, cpus = [], []
    for attempt in range(RUNS + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=120)
        wall = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if attempt:
            walls.append(wall)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


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
        # one sweep, so that status reads a last sweep as after `make run` (the demo's
        # sandbox is not running here: its connections are unreachable, which is quick)
        subprocess.run([*RELINK, "check"], env=env, capture_output=True, timeout=300)
        measured = {
            "python": cold([sys.executable, "-c", "pass"], env),
            "help": cold([*RELINK, "--help"], env),
            "status": cold([*RELINK, "status"], env),
        }
    seconds = {name: wall for name, (wall, _) in measured.items()}
    cpu = {name: used for name, (_, used) in measured.items()}
    report.figure("python_s", "bare `python -c pass` (median)", round(seconds["python"], 3), "s")
    for name, goal in GOALS.items():
        value = seconds[name]
        command = f"relink {'--help' if name == 'help' else name}"
        report.figure(
            f"{name}_s",
            f"`{command}` (median of {RUNS} cold runs)",
            round(value, 3),
            "s",
            goal=f"< {goal}",
            met=value < goal,
        )
        report.figure(
            f"{name}_cpu_s",
            f"`{command}`: CPU user + system (median of {RUNS})",
            round(cpu[name], 3),
            "s",
        )
    report.markdown = [
        f"Median of {RUNS} cold processes each (after one warm-up), the demo account on a "
        "SQLite file after one `relink check`. `relink --help` is printed from the command "
        "table in `relink/cli/__init__.py` without importing a command; `relink status` imports "
        "what it reads. The goal is on wall time; the CPU time (user + system) is what the "
        "process itself used, which other work on a shared machine inflates less.",
        "",
        *table(
            ["process", "median wall s", "median CPU s", "goal", "× bare python"],
            [
                ("python -c pass", f"{seconds['python']:.3f}", f"{cpu['python']:.3f}", "", "1.0"),
                *(
                    (
                        f"relink {'--help' if n == 'help' else n}",
                        f"{seconds[n]:.3f}",
                        f"{cpu[n]:.3f}",
                        f"< {g}",
                        f"{seconds[n] / seconds['python']:.1f}",
                    )
                    for n, g in GOALS.items()
                ),
            ],
        ),
    ]
    report.details = {"seconds": seconds, "cpu_seconds": cpu, "runs": RUNS}
    return report

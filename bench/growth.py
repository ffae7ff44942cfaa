"""Growth: the sweep (flow and raw) and the email run at 1k and 10k (and 100k with
--large): the time per item must stay flat (no hidden quadratic).

Reuses the sweep's and the email run's measurements when they ran in the same
invocation (same sizes, same session); otherwise measures flow, raw and `send_due` at
each size itself. Draws `bench/results/bench-growth.png` (without plotting libraries),
which goes to `docs/` with `docs/benchmarks.md` (not with --no-docs).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench._common import GROWTH_PNG, REPO, Report, table

FLAT = 1.25  # per-item time at the largest size / at the smallest: at most this


def sizes(large: bool) -> list[int]:
    return [1_000, 10_000] + ([100_000] if large else [])


def run(large: bool, cache: dict[str, Any]) -> Report:
    from bench import emails, sweep

    wanted = sizes(large)
    report = Report("growth", "Growth: time per item at 1k, 10k" + (", 100k" if large else ""))
    ladder = cache.get("sweep_ladder")
    if ladder is None or ladder.sizes != wanted:
        ladder = sweep.measure_ladder(wanted, variants=False)
    mail = cache.get("email_ladder")
    if mail is None or mail.sizes != wanted:
        with tempfile.TemporaryDirectory(prefix="relink-bench-") as tmp:
            mail = emails.measure(wanted, headline=None, pg=None, workdir=Path(tmp))

    flows = {n: ladder.flow[n][0] for n in wanted}
    raws = {n: ladder.raw[n][0] for n in wanted}
    mails = {n: mail.send_due[n] for n in wanted}
    series: dict[str, dict[int, float]] = {  # wall ms per item
        "flow": {n: r.seconds / n * 1000 for n, r in flows.items()},
        "raw": {n: r.seconds / n * 1000 for n, r in raws.items()},
        "send_due": {n: r.seconds / n * 1000 for n, r in mails.items()},
    }
    cpu: dict[str, dict[int, float]] = {  # CPU ms per item, the Prefect server's included
        "flow": {n: sweep.cpu_ms(r, "bench", "prefect_server") for n, r in flows.items()},
        "raw": {n: sweep.cpu_ms(r) for n, r in raws.items()},
        "send_due": {n: r.processes["bench"]["cpu_s"] / n * 1000 for n, r in mails.items()},
    }
    small, big = wanted[0], wanted[-1]
    for name in series:
        factor = cpu[name][big] / cpu[name][small]
        report.figure(
            f"{name}_cpu_growth",
            f"{name}: CPU ms per item at {big:,} / at {small:,}",
            round(factor, 2),
            "x",
            goal=f"<= {FLAT}",
            met=factor <= FLAT,
        )
        report.figure(
            f"{name}_wall_growth",
            f"{name}: wall ms per item at {big:,} / at {small:,}",
            round(series[name][big] / series[name][small], 2),
            "x",
        )
    rows = [
        (
            f"{n:,}",
            f"{flows[n].seconds:.1f}",
            f"{series['flow'][n]:.2f}",
            f"{cpu['flow'][n]:.2f}",
            f"{raws[n].seconds:.1f}",
            f"{series['raw'][n]:.2f}",
            f"{cpu['raw'][n]:.2f}",
            f"{mails[n].seconds:.1f}",
            f"{series['send_due'][n]:.2f}",
            f"{cpu['send_due'][n]:.2f}",
        )
        for n in wanted
    ]
    drawn = draw(series, wanted)
    if not drawn:
        report.note(f"could not write {GROWTH_PNG.relative_to(REPO)}")
    report.details = {
        "sizes": wanted,
        "wall_ms_per_item": {
            k: {str(n): round(v, 4) for n, v in s.items()} for k, s in series.items()
        },
        "cpu_ms_per_item": {k: {str(n): round(v, 4) for n, v in s.items()} for k, s in cpu.items()},
        "flow_task_runs": {str(n): flows[n].extra.get("task_runs") for n in wanted},
        "png": str(GROWTH_PNG.relative_to(REPO)) if drawn else None,
    }
    report.markdown = [
        *table(
            [
                "items",
                "flow s",
                "flow ms/conn",
                "flow CPU ms/conn",
                "raw s",
                "raw ms/conn",
                "raw CPU ms/conn",
                "send_due s",
                "ms/email",
                "CPU ms/email",
            ],
            rows,
        ),
        "",
        f"Flat means: CPU ms per item at {big:,} at most {FLAT}x the figure at {small:,}. "
        "CPU is the bench process's (plus the Prefect server's for the flow): other work on "
        "this machine moves wall times between runs far more than it moves CPU per item. "
        "Fixed costs (a flow run's start and end) make the small size the dearer one.",
    ]
    if drawn:
        report.markdown += [
            "",
            "![time per item by size](bench-growth.png)",
            "",
            "The plot: wall ms per item (y, from 0) against size (x, log scale): the flow "
            "and raw httpx per connection, `send_due` per email.",
        ]
    return report


def draw(series: dict[str, dict[int, float]], wanted: list[int]) -> bool:
    from bench._png import Chart

    colours = {"flow": (31, 119, 180), "raw": (127, 127, 127), "send_due": (255, 127, 14)}
    try:
        chart = Chart(640, 360)
        chart.plot({k: (colours[k], v) for k, v in series.items()}, wanted)
        GROWTH_PNG.parent.mkdir(parents=True, exist_ok=True)
        GROWTH_PNG.write_bytes(chart.png())
        return True
    except OSError:
        return False

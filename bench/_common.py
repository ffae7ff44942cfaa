"""What every benchmark shares: figures and their JSON file, the machine, clocks for the
database and for processes (CPU seconds, peak RSS), subprocess peers, the app."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
GROWTH_PNG = RESULTS / "bench-growth.png"  # copied to docs/ with docs/benchmarks.md
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# --- figures ---------------------------------------------------------------------------


@dataclass
class Figure:
    key: str
    label: str
    value: float | int | str
    unit: str = ""
    goal: str = ""  # e.g. ">= 0.8": shown in the docs' table with whether it was met
    met: bool | None = None

    def text(self) -> str:
        value = fmt(self.value)
        goal = "" if not self.goal else f"  (goal {self.goal}: {'met' if self.met else 'MISSED'})"
        return f"{value} {self.unit}".rstrip() + goal


@dataclass
class Report:
    """One benchmark's outcome: figures (one printed line each), markdown, raw details."""

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    markdown: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    seconds: float = 0.0

    def figure(
        self,
        key: str,
        label: str,
        value: float | int | str,
        unit: str = "",
        *,
        goal: str = "",
        met: bool | None = None,
    ) -> Figure:
        fig = Figure(key, label, value, unit, goal, met)
        self.figures.append(fig)
        print(f"{self.name}.{key}: {fig.text()}  # {label}", flush=True)
        return fig

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"{self.name}: note: {text}", flush=True)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, run: dict[str, Any]) -> Path:
        """`bench/results/<name>.json` (the latest) and a dated copy."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        data = {"run": run, **self.as_dict()}
        text = json.dumps(data, indent=1, default=str)
        stamp = self.started.replace(":", "").replace("-", "")[:15]
        (RESULTS / f"{self.name}-{stamp}.json").write_text(text, "utf-8")
        latest = RESULTS / f"{self.name}.json"
        latest.write_text(text, "utf-8")
        return latest


def fmt(value: float | int | str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 100):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _cell(value: Any) -> str:
    text = fmt(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    return str(text).replace("|", "\\|")


# --- the machine -------------------------------------------------------------------------


def memory_total_gib() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
        return int(re.search(r"MemTotal:\s+(\d+)", text).group(1)) / 1024**2  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return 0.0


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    import sqlite3

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_total_gib(), 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "prefect": version("prefect"),
        "sqlalchemy": version("sqlalchemy"),
        "httpx": version("httpx"),
        "authlib": version("authlib"),
        "sendgrid": version("sendgrid"),
        "werkzeug": version("werkzeug"),
        "sqlite": sqlite3.sqlite_version,
    }


# --- clocks ----------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def best_of(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    runs = [timed(fn) for _ in range(n)]
    return min(r[0] for r in runs), runs[0][1]


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mib(pid: int | str = "self") -> float:
    """VmHWM: the peak resident set since the process started or `reset_peak_rss`."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"VmHWM:\s+(\d+)", text)
    if found is None:  # not Linux: getrusage's lifetime peak
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return int(found.group(1)) / 1024


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM (so each run gets its own peak)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def children(pid: int | None = None) -> list[int]:
    """Every descendant process of `pid` (default: this one)."""
    root = pid or os.getpid()
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[1])
    found, frontier = [], [root]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == current]
        found += kids
        frontier += kids
    return found


@dataclass
class ProcessClock:
    """CPU seconds and peak RSS of named processes over one measured stretch."""

    pids: dict[str, int]
    _cpu: dict[str, float] = field(default_factory=dict)
    _wall: float = 0.0

    def start(self) -> None:
        for pid in self.pids.values():
            reset_peak_rss(pid)
        self._cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._wall = time.perf_counter()

    def stop(self) -> dict[str, dict[str, float]]:
        wall = time.perf_counter() - self._wall
        out = {}
        for name, pid in self.pids.items():
            cpu = cpu_seconds(pid) - self._cpu[name]
            out[name] = {
                "cpu_s": round(cpu, 2),
                "cpu_share": round(cpu / wall, 2) if wall else 0.0,
                "peak_rss_mib": round(peak_rss_mib(pid), 1),
            }
        return out


class DbClock:
    """Time spent executing statements on an engine (cursor execute, all threads)."""

    def __init__(self, engine: Any) -> None:
        import sqlalchemy as sa

        self.engine = engine
        self.seconds = 0.0
        self.statements = 0
        self._lock = threading.Lock()
        self._sa = sa
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, *_: Any) -> None:
        conn.info.setdefault("bench_t0", []).append(time.perf_counter())

    def _after(self, conn: Any, *_: Any) -> None:
        spent = time.perf_counter() - conn.info["bench_t0"].pop()
        with self._lock:
            self.seconds += spent
            self.statements += 1

    def reset(self) -> None:
        with self._lock:
            self.seconds, self.statements = 0.0, 0

    def reading(self) -> dict[str, float]:
        return {"db_s": round(self.seconds, 3), "statements": self.statements}

    def close(self) -> None:
        self._sa.event.remove(self.engine, "before_cursor_execute", self._before)
        self._sa.event.remove(self.engine, "after_cursor_execute", self._after)


# --- peers -------------------------------------------------------------------------------


class Peer:
    """A helper server in its own process (its own GIL): prints `ready <url>` when up."""

    def __init__(self, args: Sequence[str], *, timeout: float = 120.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().strip()
            if line.startswith("ready ") or self.proc.poll() is not None:
                break
        ready, _, self.url = line.partition(" ")
        if ready != "ready":
            self.stop()
            raise RuntimeError(f"{' '.join(args)} did not start: {line!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextmanager
def peer(args: Sequence[str]) -> Iterator[Peer]:
    server = Peer(args)
    try:
        yield server
    finally:
        server.stop()


# --- the app -------------------------------------------------------------------------------


def make_app(url: str, data_dir: Path) -> Any:
    """A Relink on a migrated database at `url` (settings from here only, not `.env`)."""
    from relink import db
    from relink.app import Relink
    from relink.settings import Settings
    from relink.vault import generate_key

    settings = Settings(
        _env_file=None,
        database_url=url,
        data_dir=data_dir,
        secret_keys=generate_key(),
        base_url="https://relink.example",
        email_from="alerts@relink.example",
    )
    app = Relink(settings)
    db.upgrade(app.engine)
    return app


def postgres_url() -> str | None:
    """The loopback PostgreSQL (RELINK_TEST_POSTGRES_URL or the default), None if down."""
    import sqlalchemy as sa

    url = os.environ.get("RELINK_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return url
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        print(f"PostgreSQL not reachable at {url}: {type(exc).__name__}", flush=True)
        return None
    finally:
        engine.dispose()


def postgres_version(url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar())
    finally:
        engine.dispose()

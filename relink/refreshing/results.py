"""What a dataset refresh did, plain and JSON-able (never a secret): one dataset's
`Refreshed`, a run's `RefreshSummary` (counts, the markdown table of the flow-run
artifact), and the `RefreshPolicy` a run follows (concurrency, attempts, backoff, timeout)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from relink.domain.words import Mode

OK, ERROR, SKIPPED = "ok", "error", "skipped"


@dataclass(frozen=True)
class RefreshPolicy:
    concurrency: int = 4  # datasets refreshed at once
    attempts: int = 3  # an unreachable source is asked this many times
    backoff: float = 1.0  # seconds before the first retry, doubled after each
    timeout: float = 60.0  # seconds per source request (a dataset query may be slow)


@dataclass(frozen=True)
class Refreshed:
    """What one dataset's refresh did: plain, JSON-able, never a secret."""

    dataset_id: int
    dataset: str
    connection_id: int
    status: str  # ok | error | skipped
    mode: str = Mode.DIRECT
    row_count: int | None = None
    columns: tuple[str, ...] = ()
    error_code: str | None = None
    error: str | None = None
    attempts: int = 0
    duration_s: float = 0.0
    table: str | None = None  # the warehouse table, warehouse mode only

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = list(self.columns)
        return data


@dataclass(frozen=True)
class RefreshSummary:
    results: tuple[Refreshed, ...]
    duration_s: float

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return self.count(ERROR) == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "datasets": len(self.results),
            "ok": self.count(OK),
            "error": self.count(ERROR),
            "skipped": self.count(SKIPPED),
            "rows": sum(r.row_count or 0 for r in self.results if r.status == OK),
            "duration_s": round(self.duration_s, 3),
            "results": [r.as_dict() for r in self.results],
        }

    @classmethod
    def from_dicts(cls, results: Sequence[dict[str, Any]], duration_s: float) -> RefreshSummary:
        return cls(
            tuple(Refreshed(**{**r, "columns": tuple(r["columns"])}) for r in results), duration_s
        )

    def markdown(self, title: str = "Dataset refresh") -> str:
        lines = [
            f"# {title}: {self.count(OK)} ok, {self.count(ERROR)} failed, "
            f"{self.count(SKIPPED)} skipped ({self.duration_s:.1f} s)",
            "",
            "| dataset | connection | status | rows | columns | attempts | error |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in self.results:
            lines.append(
                f"| {_md(r.dataset)} ({r.dataset_id}) | {r.connection_id} | {r.status} | "
                f"{'' if r.row_count is None else r.row_count} | {len(r.columns) or ''} | "
                f"{r.attempts} | {_md(r.error or '')} |"
            )
        return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")

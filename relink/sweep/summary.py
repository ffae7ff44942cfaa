"""What a sweep tells the people watching it: the counts of one batch (`BatchSummary`,
a Prefect task's result: plain and JSON-able, no secrets), batches added up
(`merge_batches`), and the whole sweep (`SweepSummary`): outcomes, disconnections opened
and closed, the provider incidents (most connections of a provider failing alike), the
installation problems (`misconfigured` results by provider and code, with what an admin
fixes) and the connections this sweep did not check."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from relink.domain.state import Incident, detect_incidents
from relink.domain.words import CHECK_ERROR as ERROR
from relink.domain.words import Outcome

COUNT_KEYS = ("checked", "opened", "closed", "status_changes", "skipped")


@dataclass(frozen=True, slots=True)
class ResultKey:
    """What a batch counts its results by: provider, outcome (or `CHECK_ERROR`) and code.
    Written as ``"provider|outcome|code"`` (`key`), a JSON object's key in a task result."""

    provider: str
    outcome: str
    code: str | None = None

    def key(self) -> str:
        return f"{self.provider}|{self.outcome}|{self.code or ''}"

    def installation_key(self) -> str:
        """The key of a `misconfigured` result's fix: ``"provider|code"``."""
        return f"{self.provider}|{self.code or ''}"

    @classmethod
    def parse(cls, key: str) -> ResultKey:
        provider, outcome, code = key.split("|", 2)
        return cls(provider, outcome, code or None)


@dataclass
class BatchSummary:
    """Plain, JSON-able counts of one batch (a Prefect task result: no secrets)."""

    checked: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    opened: int = 0
    closed: int = 0
    status_changes: int = 0
    skipped: int = 0  # changed by someone else (a reconnect) during the check
    # `ResultKey.key()` -> count, for incident detection across batches
    by_provider: dict[str, int] = field(default_factory=dict)
    # `ResultKey.installation_key()` -> the message of a misconfigured result (its fix)
    installation: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class InstallationProblem:
    """Connections of one provider that the installation fails alike (`misconfigured`)."""

    provider: str
    code: str | None
    connections: int
    fix: str  # the checks' message: what is wrong and what an admin sets (never a secret)

    def describe(self) -> str:
        return f"{self.provider}: {self.connections} connection(s), {self.code}: {self.fix}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "code": self.code,
            "connections": self.connections,
            "fix": self.fix,
        }


def merge_batches(batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch summaries (`BatchSummary.as_dict()`) added up into one of the same shape."""
    totals: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    by_provider: Counter[str] = Counter()
    installation: dict[str, str] = {}
    for batch in batches:
        for key in COUNT_KEYS:
            totals[key] += batch.get(key, 0)
        outcomes.update(batch.get("outcomes", {}))
        by_provider.update(batch.get("by_provider", {}))
        for key, fix in batch.get("installation", {}).items():
            installation.setdefault(key, fix)
    return {
        **{key: totals[key] for key in COUNT_KEYS},
        "outcomes": dict(outcomes),
        "by_provider": dict(by_provider),
        "installation": installation,
    }


@dataclass
class SweepSummary:
    checked: int
    outcomes: dict[str, int]
    opened: int
    closed: int
    status_changes: int
    skipped: int
    batches: int
    incidents: list[Incident]
    installation_problems: list[InstallationProblem]
    duration_s: float
    # connections this sweep did not check, by why ("not_started": their shard's run never
    # started); the next sweep checks them
    not_checked: dict[str, int] = field(default_factory=dict)
    # connections checked by provider: enough of them found well ends a provider incident
    checked_by_provider: dict[str, int] = field(default_factory=dict)

    @classmethod
    def combine(
        cls,
        batches: Sequence[dict[str, Any]],
        *,
        duration_s: float,
        not_checked: dict[str, int] | None = None,
    ) -> SweepSummary:
        total = merge_batches(batches)
        results = []
        problems = []
        checked_by_provider: Counter[str] = Counter()
        for key, count in sorted(total["by_provider"].items()):
            found = ResultKey.parse(key)
            results.extend([(found.provider, found.outcome, found.code)] * count)
            checked_by_provider[found.provider] += count
            if found.outcome == Outcome.MISCONFIGURED:
                fix = total["installation"].get(found.installation_key(), "")
                problems.append(InstallationProblem(found.provider, found.code, count, fix))
        return cls(
            checked=total["checked"],
            outcomes={k: total["outcomes"].get(k, 0) for k in (*Outcome, ERROR)},
            opened=total["opened"],
            closed=total["closed"],
            status_changes=total["status_changes"],
            skipped=total["skipped"],
            batches=len(batches),
            incidents=detect_incidents(results),
            installation_problems=problems,
            duration_s=round(duration_s, 3),
            not_checked=dict(not_checked or {}),
            checked_by_provider=dict(checked_by_provider),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "outcomes": self.outcomes,
            "opened": self.opened,
            "closed": self.closed,
            "status_changes": self.status_changes,
            "skipped": self.skipped,
            "batches": self.batches,
            "incidents": [i.describe() for i in self.incidents],
            "installation_problems": [p.as_dict() for p in self.installation_problems],
            "not_checked": self.not_checked,
            "duration_s": self.duration_s,
        }

    def markdown(self) -> str:
        lines = [
            f"# Connection check: {self.checked} connections in {self.duration_s:.1f} s",
            "",
            "| outcome | connections |",
            "| --- | --- |",
            *(f"| {k} | {v} |" for k, v in self.outcomes.items()),
            "",
            f"Disconnections opened: {self.opened}; closed: {self.closed}; "
            f"status changes: {self.status_changes}; skipped (changed meanwhile): {self.skipped}.",
        ]
        if self.not_checked:
            lines += [
                "",
                f"**Not checked in this sweep:** {sum(self.not_checked.values())} connection(s) "
                f"({', '.join(f'{k}: {v}' for k, v in self.not_checked.items())}); "
                "the next sweep checks them.",
            ]
        if self.incidents:
            lines += ["", "## Provider incidents", ""]
            lines += [f"- {i.describe()}" for i in self.incidents]
        if self.installation_problems:
            lines += ["", self.installation_markdown()]
        return "\n".join(lines) + "\n"

    def installation_markdown(self) -> str:
        """The installation problems, for the admins who fix them."""
        lines = [
            "## Installation problems",
            "",
            "Only an admin can fix these; no connection is disconnected and no owner is "
            "emailed for them.",
            "",
            "| provider | code | connections | what to fix |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {p.provider} | {p.code or ''} | {p.connections} | {_cell(p.fix)} |"
            for p in self.installation_problems
        ]
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")

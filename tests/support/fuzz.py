"""What the bad-input promises share: one Hypothesis profile, the small world the inputs
are thrown at, a tally of the answers, and the checks every answer must pass.

Each fuzz test runs a Hypothesis search inside the test (an inner `@given` function), so
that afterwards it can record how many inputs it tried:

    def test_x(world, record_property):
        tally = Tally("import files")

        @fuzz(quick=5, soak=200)
        @given(content=st.binary())
        def one(content: bytes) -> None:
            with unchanged(world.relink):
                tally.saw(cli_error(cli("connections", "import", write(content))))

        one()
        tally.record(record_property)

The search is seeded (`RELINK_FUZZ_SEED`, default 8, named in the outcome; another seed
explores other inputs) and writes no example database into the repository; a failure
prints the smallest input Hypothesis found, which reproduces with the same seed.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import hypothesis
from hypothesis import HealthCheck
from hypothesis import strategies as st

from relink.app import Relink
from relink.models import Base
from tests.support.promises import scale
from tests.support.reconnect import new_audit_events, snapshot
from tests.support.web import EMAILS, World, build_world, make_relink

F = TypeVar("F", bound=Callable[..., Any])

FUZZ_SEED = int(os.environ.get("RELINK_FUZZ_SEED", "8"))


def fuzz(*, quick: int, soak: int) -> Callable[[F], F]:
    """The fixed profile of every fuzz search: seeded, no deadline, no example database."""

    def decorate(test: F) -> F:
        configured = hypothesis.settings(
            max_examples=scale(quick, soak),
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )(test)
        return hypothesis.seed(FUZZ_SEED)(configured)

    return decorate


@dataclass
class Tally:
    """How many inputs a search tried and how they were answered (for the report)."""

    what: str
    answers: Counter[str] = field(default_factory=Counter)

    def saw(self, answer: str) -> None:
        self.answers[answer] += 1

    @property
    def trials(self) -> int:
        return sum(self.answers.values())

    def record(self, record_property: Callable[[str, object], None]) -> None:
        answers = ", ".join(f"{answer} ×{n}" for answer, n in sorted(self.answers.items()))
        record_property("trials", self.trials)
        record_property(
            "outcome",
            f"{self.trials} {self.what} (seed {FUZZ_SEED}): {answers}; "
            "0 tracebacks, 0 rows changed",
        )


# --- the world ------------------------------------------------------------------------


@contextmanager
def fuzz_world(folder: Path, **build: Any) -> Iterator[World]:
    """`tests.support.web`'s two accounts, five users and three connections, on SQLite."""
    relink = make_relink(f"sqlite:///{folder / 'relink.db'}", folder / "data")
    try:
        yield build_world(relink, **build)
    finally:
        relink.close()


@contextmanager
def unchanged(relink: Relink, *, refused_reconnects: bool = False) -> Iterator[None]:
    """Fails when any row of any app table differs afterwards; names the tables. With
    `refused_reconnects`, the audit trail may gain the record of reconnects the source
    refused (`connection.reconnect_failed`): that is all such an attempt writes.

    A changed database is put back first, so that the next input (and Hypothesis
    replaying this one while it shrinks it) meets the same world.
    """
    before = snapshot(relink)
    try:
        yield
    finally:
        after = snapshot(relink)
        changed = [table for table in before if before[table] != after[table]]
        added = new_audit_events(before, after) if refused_reconnects else None
        if added is not None and {e["action"] for e in added} <= {"connection.reconnect_failed"}:
            changed = [table for table in changed if table != "audit_events"]
        if changed:
            _restore(relink, before)
    assert not changed, f"rows changed in {', '.join(changed)}"


def _restore(relink: Relink, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    tables = Base.metadata.sorted_tables
    with relink.engine.begin() as conn:
        for table in reversed(tables):
            conn.execute(table.delete())
        for table in tables:
            names = [column.name for column in table.columns]
            if rows[table.name]:
                conn.execute(
                    table.insert(), [dict(zip(names, row, strict=True)) for row in rows[table.name]]
                )


# --- what an answer must look like ---------------------------------------------------------


def cli_error(result: Any) -> str:
    """A refused command: exit 1 with one `error: ...` line, or exit 2 (usage), and never
    a traceback. Returns "exit 1" or "exit 2"."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exit_code in (1, 2), (result.exit_code, output)
    if result.exit_code == 1:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    else:
        assert "Error" in result.stderr, result.stderr
    return f"exit {result.exit_code}"


def http_refusal(response: Any) -> str:
    """A refused request: a 4xx, never a 5xx, never a traceback. Returns "HTTP <status>"."""
    assert "Traceback" not in response.text, response.text[:2000]
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:2000])
    return f"HTTP {response.status_code}"


# --- inputs ---------------------------------------------------------------------------


def _is_int(text: str) -> bool:
    try:
        int(text)  # what click accepts: " 7", "+7", "0_7", "٧" ...
    except ValueError:
        return False
    return True


KNOWN_EMAILS = frozenset(EMAILS.values())

not_numbers = st.text(max_size=30).filter(lambda s: not _is_int(s))
# Ids of nothing: negative, zero, past every key, or plausible but unused.
absent_ids = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=1_000, max_value=2**31),
    st.integers(min_value=2**31, max_value=2**80),
)
bad_ids = st.one_of(not_numbers, absent_ids.map(str))
# Ports no TCP connection can use.
bad_ports = st.one_of(
    not_numbers.filter(str.strip),  # a blank port means the default one
    st.integers(max_value=0).map(str),
    st.integers(min_value=65536).map(str),
)
unknown_emails = st.one_of(st.emails(), st.text(max_size=60)).filter(
    lambda e: e.strip().lower() not in KNOWN_EMAILS
)
# Text of every script, control characters too (no surrogates: argv and forms carry none).
junk = st.text(max_size=80)
huge = st.text(min_size=1, max_size=3).map(lambda s: s * 4_000)  # 4,000 to 12,000 characters

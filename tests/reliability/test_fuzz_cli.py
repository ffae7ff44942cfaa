"""Bad input, command line: arbitrary arguments to `relink` across its commands (ids that
are not numbers, negative, zero or past any key, unknown emails, accounts, types,
states and times, unknown options) end with exit 1 and one `error:` line, or exit 2 for
a usage error; never a traceback, and the app database stays as it was."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import typer
from hypothesis import example, given
from hypothesis import strategies as st

import connectors
from relink.cli import app as cli_app
from relink.domain.words import Status
from relink.models import NotificationState
from tests.support.fuzz import (
    Tally,
    bad_ids,
    bad_ports,
    cli_error,
    fuzz,
    fuzz_world,
    junk,
    unchanged,
    unknown_emails,
)
from tests.support.reconnect import Cli
from tests.support.web import EMAILS, World

ADMIN = EMAILS["admin"]
MEMBER = EMAILS["member"]
ACCOUNTS = {"acme", "other co"}
TYPES = {c.type for c in connectors.all_connectors()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with fuzz_world(tmp_path_factory.mktemp("fuzz-cli")) as built:
        yield built


def words_not_in(values: set[str]) -> st.SearchStrategy[str]:
    return junk.filter(lambda s: s.strip().casefold() not in values)


def _not_iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text.strip())
    except ValueError:
        return True
    return False


def no_at(text: str) -> bool:
    return "@" not in text


# `--callback-port 0` picks a free port: not a bad value there.
not_tcp_ports = bad_ports.filter(lambda p: p != "0")


# Times no run can be evaluated at: not ISO 8601, or at the ends of the calendar.
bad_times = st.one_of(
    junk.filter(_not_iso),
    st.sampled_from(
        ["0001-01-01T00:00+01:00", "0001-01-01T00:00Z", "9999-12-31T23:59-01:00", "9999-12-31"]
    ),
)


BAD = "<bad>"  # where a template takes its bad value
OWNED = "<owned>"  # the id of a connection that exists ("Owned DB")

# (argument list, the bad values its BAD slot takes): every command that takes an id, a
# user, a name, a time or a choice.
BAD_VALUES: list[tuple[tuple[str, ...], st.SearchStrategy[str]]] = [
    (("connections", "show", BAD, "--as", ADMIN), bad_ids),
    (("connections", "show", OWNED, "--as", BAD), unknown_emails),
    (("connections", "share", BAD, "--with", MEMBER, "--as", ADMIN), bad_ids),
    (("connections", "share", OWNED, "--with", BAD, "--as", ADMIN), unknown_emails),
    (("connections", "list", "--as", BAD), unknown_emails),
    (("connections", "list", "--as", ADMIN, "--status", BAD), words_not_in(set(Status))),
    (("datasets", "add", "--connection", BAD, "--name", "n", "--query", "q"), bad_ids),
    (("datasets", "refresh", BAD), bad_ids),
    (("datasets", "refresh", "--connection", BAD), bad_ids),
    (("metrics", "add", "--name", "m", "--dataset", BAD), bad_ids),
    (("reconnect", BAD, "--as", ADMIN), bad_ids),
    (("reconnect", OWNED, "--as", BAD), unknown_emails),
    (("reconnect", OWNED, "--as", ADMIN, "--callback-port", BAD), not_tcp_ports),
    (("outbox", "show", BAD), bad_ids),
    (("outbox", "release", BAD, "--as", ADMIN), bad_ids),
    (("outbox", "list", "--state", BAD), words_not_in(set(NotificationState))),
    (("audit", "--connection", BAD), bad_ids),
    (("audit", "--as", BAD), unknown_emails),
    (("check", "--connection", BAD), bad_ids),
    (("users", "add", "new@acme.test", "--name", "N", "--account", BAD), words_not_in(ACCOUNTS)),
    (("users", "add", BAD, "--name", "N", "--account", "Acme"), junk.filter(no_at)),
    (("users", "set-password", BAD), unknown_emails),
    (("accounts", "add", BAD), st.sampled_from(["Acme", "Other Co", " Acme ", ""])),
    (("connectors", "show", BAD), words_not_in(TYPES)),
    (("notify", "--dry-run", "--as-of", BAD), bad_times),
    (("notify", "--limit", BAD), st.integers(max_value=0).map(str)),
]
# Always tried, whatever the search draws: an id past every key (once a traceback).
EDGE_IDS = (str(2**63),)


def fill(template: tuple[str, ...], value: str, world: World) -> list[str]:
    owned = str(world.ids["Owned DB"])
    return [value if part == BAD else owned if part == OWNED else part for part in template]


def with_bad_values(world: World) -> st.SearchStrategy[list[str]]:
    return st.sampled_from(BAD_VALUES).flatmap(
        lambda case: case[1].map(lambda value: fill(case[0], value, world))
    )


def edge_cases(world: World) -> list[list[str]]:
    return [
        fill(template, value, world)
        for template, values in BAD_VALUES
        if values is bad_ids
        for value in EDGE_IDS
    ]


def _command_paths(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], set]]:
    """Every command of the click tree and the options it knows."""
    for name, sub in group.commands.items():
        if getattr(sub, "commands", None):
            yield from _command_paths(sub, (*path, name))
        else:
            known = {o for p in sub.params for o in (*p.opts, *p.secondary_opts)}
            yield (*path, name), known | {"--help"}


COMMANDS = sorted(_command_paths(typer.main.get_command(cli_app)))


@st.composite
def with_unknown_option(draw: st.DrawFn) -> list[str]:
    """Any command (even `web`, `run`, `db downgrade`) with an option it does not have."""
    path, known = draw(st.sampled_from(COMMANDS))
    option = draw(
        st.from_regex(r"\A(--[a-z][a-z0-9-]{0,24}|-[A-Za-z])\Z").filter(lambda o: o not in known)
    )
    rest = draw(st.lists(junk.filter(lambda s: not s.startswith("-")), max_size=3))
    at = draw(st.integers(min_value=0, max_value=len(rest)))
    return [*path, *rest[:at], option, *rest[at:]]


@pytest.mark.promise(
    "Bad command-line arguments end with exit 1 and one `error:` line, or exit 2 for "
    "usage; never a traceback, and nothing changes."
)
def test_bad_arguments_are_refused_clearly_and_change_nothing(
    world: World, record_property: Any
) -> None:
    cli = Cli(world.relink.settings)
    tally = Tally("argument lists")

    @fuzz(quick=40, soak=1500)
    @given(args=st.one_of(with_bad_values(world), with_unknown_option()))
    def one(args: list[str]) -> None:
        with unchanged(world.relink):
            tally.saw(cli_error(cli(*args, input="a-password-long-enough\n")))

    for args in edge_cases(world):
        one = example(args=args)(one)
    one()
    tally.record(record_property)

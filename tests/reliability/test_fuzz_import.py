"""Bad input, import files: `relink connections import FILE` with files that are not
UTF-8, not YAML or not the import format (text, CSV, JSON, binary, Python tags, wrong
shapes), or a list of connections where one entry is bad among good ones (wrong types,
unknown connector type, owner or mode, bad settings or secrets, a huge, blank or taken
name, a duplicate). Each is refused with exit 1 and one `error:` line, and nothing is
written: not even the good entries before the bad one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import connectors
from relink.domain.words import Mode
from tests.support.fuzz import (
    Tally,
    bad_ports,
    cli_error,
    fuzz,
    fuzz_world,
    huge,
    junk,
    unchanged,
    unknown_emails,
)
from tests.support.reconnect import Cli
from tests.support.web import EMAILS, World

OWNER = EMAILS["owner"]
ENV = {"RELINK_FUZZ_PASSWORD": "a-fuzz-password", "RELINK_FUZZ_KEY": "a-fuzz-key"}
TYPES = {c.type for c in connectors.all_connectors()}
ENTRY_KEYS = {"type", "name", "owner", "mode", "settings", "secrets"}
SQL_FIELDS = {"host", "port", "database", "username", "sslmode", "password"}
SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full", ""}
Entry = dict[str, Any]
Defect = Callable[[Entry], Entry]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with fuzz_world(tmp_path_factory.mktemp("fuzz-import")) as built:
        yield built


# --- good entries ---------------------------------------------------------------------


def postgres_entry(name: str) -> Entry:
    return {
        "type": "postgres",
        "name": name,
        "owner": OWNER,
        "mode": "warehouse",
        "settings": {"host": "db.internal", "port": 5432, "database": "sales", "username": "r"},
        "secrets": {"password": {"env": "RELINK_FUZZ_PASSWORD"}},
    }


def api_key_entry(name: str) -> Entry:
    return {
        "type": "api_key",
        "name": name,
        "owner": OWNER,
        "settings": {"base_url": "https://api.example.com"},
        "secrets": {"api_key": {"env": "RELINK_FUZZ_KEY"}},
    }


# One-line names of every script, apart from the world's own ("Owned DB", "Owned API").
good_names = st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=40).filter(
    lambda s: s.strip() and not s.strip().startswith("Owned")
)
good_entries = st.tuples(st.sampled_from([postgres_entry, api_key_entry]), good_names).map(
    lambda pair: pair[0](pair[1])
)
good_lists = st.lists(good_entries, max_size=3, unique_by=lambda e: e["name"].strip())


# --- what makes one entry bad, by family ------------------------------------------------


def replace(key: str, value: Any) -> Defect:
    return lambda entry: {**entry, key: value}


def without(key: str) -> Defect:
    return lambda entry: {k: v for k, v in entry.items() if k != key}


def with_setting(key: str, value: Any) -> Defect:
    return lambda entry: {**entry, "settings": {**entry["settings"], key: value}}


def without_setting(key: str) -> Defect:
    return lambda entry: {
        **entry,
        "settings": {k: v for k, v in entry["settings"].items() if k != key},
    }


not_a_string = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.lists(st.integers())
)
not_a_mapping = st.one_of(st.none(), st.integers(), junk, st.lists(junk, max_size=3))

DEFECTS: dict[str, st.SearchStrategy[Defect]] = {
    "wrong shape or type": st.one_of(
        st.sampled_from(["type", "name", "owner"]).map(without),
        st.tuples(st.sampled_from(["type", "name", "owner", "mode"]), not_a_string).map(
            lambda pair: replace(*pair)
        ),
        st.sampled_from(["settings", "secrets"]).flatmap(
            lambda key: not_a_mapping.map(lambda value: replace(key, value))
        ),
        junk.filter(lambda k: k not in ENTRY_KEYS).map(lambda k: replace(k, "x")),
    ),
    "unknown type, owner or mode": st.one_of(
        junk.filter(lambda s: s not in TYPES).map(lambda t: replace("type", t)),
        unknown_emails.map(lambda e: replace("owner", e)),
        junk.filter(lambda s: s not in set(Mode)).map(lambda m: replace("mode", m)),
    ),
    "blank, taken or huge name": st.one_of(
        st.sampled_from(["", "   ", "Owned DB", "Owned API"]).map(lambda n: replace("name", n)),
        huge.map(lambda n: replace("name", n)),
    ),
    "bad settings": st.one_of(
        st.sampled_from(["host", "database", "username"]).map(without_setting),
        junk.filter(lambda k: k.strip() not in SQL_FIELDS).map(lambda k: with_setting(k, "x")),
        st.just(with_setting("password", "in-the-clear")),
        bad_ports.map(lambda p: with_setting("port", p)),
        st.integers(min_value=65536).map(lambda p: with_setting("port", p)),
        junk.filter(lambda s: s.strip().lower() not in SSLMODES).map(
            lambda m: with_setting("sslmode", m)
        ),
    ),
    "bad secrets": st.sampled_from(
        [
            {"password": "in-the-clear"},
            {"password": {"env": "RELINK_FUZZ_UNSET"}},
            {"password": {"env": "RELINK_FUZZ_PASSWORD", "value": "x"}},
            {"password": {"env": "RELINK_FUZZ_PASSWORD"}, "host": {"env": "RELINK_FUZZ_KEY"}},
            {},
        ]
    ).map(lambda secrets: replace("secrets", secrets)),
}


def among_good_ones(defect: st.SearchStrategy[Defect]) -> st.SearchStrategy[str]:
    """An import file: good entries (names of any script) around one bad entry."""

    @st.composite
    def files(draw: st.DrawFn) -> str:
        entries = draw(good_lists)
        bad = draw(defect)(postgres_entry("Broken"))
        entries.insert(draw(st.integers(0, len(entries))), bad)
        return yaml.safe_dump({"connections": entries}, allow_unicode=draw(st.booleans()))

    return files()


@st.composite
def duplicates(draw: st.DrawFn) -> str:
    """Good entries, one name twice (the second one padded with spaces)."""
    entries = draw(good_lists.filter(bool))
    twin = draw(st.sampled_from(entries))["name"].strip()
    entries.insert(draw(st.integers(0, len(entries))), api_key_entry(f" {twin} "))
    return yaml.safe_dump({"connections": entries}, allow_unicode=True)


# --- files that are not the format at all ------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), junk),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(junk, inner, max_size=4)),
    max_leaves=12,
)
not_the_format = st.one_of(
    junk,
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    json_values.map(yaml.safe_dump),
    json_values.filter(lambda v: v != []).map(lambda v: yaml.safe_dump({"connections": v})),
    st.lists(junk, min_size=1, max_size=4).map(lambda row: "type,name,owner\n" + ",".join(row)),
    st.sampled_from(
        [
            "",
            "connections:\n",
            "connections: []\nextra: 1\n",
            "connections: [\n",
            "connections:\n  - !!python/object/apply:os.system ['echo pwned']\n",
            "connections: &a [*a]\n",
            "\t- tab indented\n",
        ]
    ),
)


def _decodes(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


FILES: dict[str, st.SearchStrategy[bytes]] = {
    "not the format": not_the_format.map(str.encode),
    "not UTF-8": st.binary(min_size=1, max_size=200).filter(lambda b: not _decodes(b)),
    "duplicate names": duplicates().map(str.encode),
    **{family: among_good_ones(defect).map(str.encode) for family, defect in DEFECTS.items()},
}


@pytest.mark.promise(
    "A bad connection import file is refused with exit 1 and one `error:` line, and "
    "writes nothing (not even its good entries)."
)
@pytest.mark.parametrize("family", FILES)
def test_bad_import_files_are_refused_and_write_nothing(
    family: str, world: World, tmp_path: Path, record_property: Any
) -> None:
    cli = Cli(world.relink.settings)
    cli.env.update(ENV)
    path = tmp_path / "connections.yaml"
    tally = Tally(f"import files ({family})")

    @fuzz(quick=5, soak=200)
    @given(content=FILES[family])
    def one(content: bytes) -> None:
        path.write_bytes(content)
        with unchanged(world.relink):
            tally.saw(cli_error(cli("connections", "import", path)))

    one()
    tally.record(record_property)


def test_the_good_entries_alone_are_imported(world: World, tmp_path: Path) -> None:
    """The files above are refused for their one bad entry: without it they import (and
    `unchanged` notices, and puts the world back)."""
    cli = Cli(world.relink.settings)
    cli.env.update(ENV)
    path = tmp_path / "connections.yaml"

    @fuzz(quick=3, soak=50)
    @given(entries=good_lists.filter(bool))
    def one(entries: list[Entry]) -> None:
        path.write_text(yaml.safe_dump({"connections": entries}, allow_unicode=True))
        written = pytest.raises(AssertionError, match="rows changed in connections")
        with written, unchanged(world.relink):
            result = cli("connections", "import", path)
            assert result.exit_code == 0, result.stderr

    one()

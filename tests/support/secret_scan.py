"""Looking for secrets where they must never be.

A test seeds unique marker values as credentials and secret settings (`Markers.new`),
lets Relink work, hands everything Relink wrote to a `Scan` as named haystacks (log
records, CLI output, HTTP answers, emails, database rows, files), and asserts that
`Scan.hits()` is empty. A marker counts when it appears raw or URL-encoded (as it would
in a query string, a redirect or a form body): `Markers.new` puts characters in every
value that URL-encoding changes, so the two forms differ.

Haystacks are kept until `hits()` so that values learnt late (a token issued during the
run, read back from the vault at the end) are looked for everywhere too.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

CONTEXT = 40  # characters shown either side of a hit


@dataclass(frozen=True)
class Marker:
    name: str  # what the secret is, e.g. "postgres password"
    value: str = field(repr=False)

    @property
    def forms(self) -> tuple[bytes, ...]:
        """The raw value and its URL-encoded forms, as UTF-8."""
        forms = dict.fromkeys((self.value, quote(self.value, safe=""), quote_plus(self.value)))
        return tuple(form.encode() for form in forms)


class Markers:
    """The secrets of one test, by name."""

    def __init__(self) -> None:
        self._by_name: dict[str, Marker] = {}

    def new(self, name: str) -> str:
        """A fresh secret no text holds by chance; `/+=` make its URL-encoded form differ."""
        return self.add(name, f"SECRET-{name.replace(' ', '-')}-{uuid.uuid4().hex[:16]}/+=")

    def add(self, name: str, value: str) -> str:
        """Look for `value` too (a secret made elsewhere: a Fernet key, an issued token)."""
        assert name not in self._by_name, f"two markers named {name!r}"
        assert len(value) >= 16, f"{name}: too short to be told apart from other text"
        self._by_name[name] = Marker(name, value)
        return value

    def value(self, name: str) -> str:
        return self._by_name[name].value

    def __contains__(self, value: str) -> bool:
        return any(marker.value == value for marker in self._by_name.values())

    def __iter__(self) -> Iterator[Marker]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)


@dataclass(frozen=True)
class Hit:
    surface: str
    marker: str
    context: str

    def __str__(self) -> str:
        return f"{self.marker} in {self.surface}: …{self.context}…"


class Scan:
    """Named haystacks, searched for every marker when `hits()` is called."""

    def __init__(self, markers: Markers) -> None:
        self.markers = markers
        self._haystacks: list[tuple[str, bytes]] = []

    def add(self, surface: str, content: str | bytes) -> None:
        data = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
        self._haystacks.append((surface, data))

    def add_all(self, items: Iterable[tuple[str, str | bytes]]) -> None:
        for surface, content in items:
            self.add(surface, content)

    @property
    def surfaces(self) -> list[str]:
        return [surface for surface, _ in self._haystacks]

    @property
    def bytes_scanned(self) -> int:
        return sum(len(data) for _, data in self._haystacks)

    @property
    def pairs(self) -> int:
        """(haystack, marker) pairs searched: the scan's honest size."""
        return len(self._haystacks) * len(self.markers)

    def text_of(self, prefix: str) -> str:
        """Every haystack whose surface starts with `prefix`, joined: for positive checks."""
        return "\n".join(
            data.decode("utf-8", "replace") for s, data in self._haystacks if s.startswith(prefix)
        )

    def hits(self) -> list[Hit]:
        found = []
        for surface, data in self._haystacks:
            for marker in self.markers:
                for form in marker.forms:
                    at = data.find(form)
                    if at >= 0:
                        window = data[max(0, at - CONTEXT) : at + len(form) + CONTEXT]
                        found.append(Hit(surface, marker.name, window.decode("utf-8", "replace")))
        return found


def sqlite_tables(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every table of a SQLite database, all rows of one table as one haystack.

    Opened read-only beside the process that writes it (WAL lets readers in).
    """
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        db.text_factory = bytes  # the stored bytes, whatever their encoding
        query = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        for (name,) in db.execute(query).fetchall():
            table = name.decode()
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
            yield table, b"\n".join(b"\t".join(_cell(v) for v in row) for row in rows)
    finally:
        db.close()


def _cell(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return b"" if value is None else str(value).encode()


SQLITE_HEADER = b"SQLite format 3\x00"


def stored_under(root: Path) -> Iterator[tuple[str, bytes]]:
    """Everything stored below `root`: a SQLite database table by table (a long value
    is split over pages on disk), any other file as its raw bytes."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = str(path.relative_to(root))
        data = path.read_bytes()
        if data.startswith(SQLITE_HEADER):
            for table, rows in sqlite_tables(path):
                yield f"{name} table {table}", rows
        else:
            yield name, data

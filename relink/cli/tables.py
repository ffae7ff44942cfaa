"""Tables on a terminal: times to the minute, words never broken in the middle; where the
columns cannot fit the terminal (80 columns, say), one card per row instead, wrapped at
spaces. What would not fit is folded: a long word (a URL, an id) cut with "…", a long
value in a card cut after a few lines, and a last line says so. `--wide` shows every
value in full, as a table at its natural width whatever the terminal's (for `less -S`
or a wide window); `--json` is the full, unformatted data."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

MAX_WORD = 24
"""A longer word (a URL, a token-like id) is cut with "…" rather than widening its column."""
CARD_LINES = 3
"""A card shows this many lines of a value; the rest is cut with "…" (--wide shows all)."""
FOLDED = "(long values are cut with …: --wide shows them in full)"

_wide = False


def set_wide(value: bool) -> bool:
    """The `--wide` option's callback: every table of this command is shown in full."""
    global _wide
    _wide = bool(value)
    return _wide


_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:\d{2}|Z)?")


def cell(value: Any) -> str:
    """A value as a table shows it: None empty, a time as '2026-12-04 03:36 UTC'."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _minute(value)
    text = str(value)
    if _ISO.fullmatch(text):
        try:
            return _minute(datetime.fromisoformat(text))
        except ValueError:
            return text
    return text


def _minute(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _longest_word(text: str) -> int:
    return max((len(word) for word in text.split()), default=0)


def render(
    console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    cells = [[cell(v) for v in row] for row in rows]
    natural = [
        max(len(text) for text in (name, *(r[i] for r in cells))) for i, name in enumerate(columns)
    ]
    if _wide:
        wide = Console(file=console.file, width=sum(natural) + 3 * len(columns) + 1)
        _table(wide, title, columns, natural, cells, overflow="fold")
        return
    widths = [
        min(MAX_WORD, max(_longest_word(text) for text in (name, *(r[i] for r in cells))))
        for i, name in enumerate(columns)
    ]
    if not cells or sum(widths) + 3 * len(columns) + 1 <= console.width:
        _table(console, title, columns, widths, cells, overflow="ellipsis")
        if any(_longest_word(text) > MAX_WORD for row in cells for text in row):
            console.print(FOLDED, markup=False, highlight=False, style="dim")
        return
    _cards(console, title, columns, cells)


def _table(
    console: Console,
    title: str,
    columns: Sequence[str],
    widths: Sequence[int],
    cells: list[list[str]],
    *,
    overflow: Any,
) -> None:
    table = Table(title=title or None, title_justify="left")
    for name, width in zip(columns, widths, strict=True):
        table.add_column(name, min_width=width, overflow=overflow)
    for row in cells:
        table.add_row(*row)
    console.print(table)


def _cards(console: Console, title: str, columns: Sequence[str], cells: list[list[str]]) -> None:
    """One card a row: its first two values as a heading, then `column: value` pairs."""
    width = max(40, console.width)
    if title:
        console.print(title, markup=False, highlight=False, style="italic")
    folded = False
    for row in cells:
        console.print(
            "  ".join(v for v in row[:2] if v), markup=False, highlight=False, style="bold"
        )
        pairs = []
        for n, v in zip(columns[2:], row[2:], strict=True):
            if not v:
                continue
            pair = f"{n}: {v}"
            cut = textwrap.shorten(pair, CARD_LINES * (width - 3) - 10, placeholder=" …")
            folded |= cut != " ".join(pair.split())
            pairs.append(cut)
        for line in _lines(pairs, width - 3):
            console.print(f"   {line}", markup=False, highlight=False, soft_wrap=True)
    if folded:
        console.print(FOLDED, markup=False, highlight=False, style="dim")


def _lines(pairs: list[str], width: int) -> list[str]:
    """`pairs` joined by " · ", a pair kept on one line where it fits, else wrapped at
    spaces (never inside a word)."""
    lines: list[str] = []
    for pair in pairs:
        if lines and len(lines[-1]) + 3 + len(pair) <= width:
            lines[-1] += f" · {pair}"
        elif len(pair) <= width:
            lines.append(pair)
        else:
            lines += textwrap.wrap(
                pair, width=width, break_long_words=False, break_on_hyphens=False
            )
    return lines

"""A small line chart written as PNG with the standard library only (zlib + struct):
no plotting package is installed here and the benchmarks add no dependency."""

from __future__ import annotations

import itertools
import math
import struct
import zlib

RGB = tuple[int, int, int]

# 3x5 glyphs, rows top to bottom, "1" = ink
_FONT = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "001", "001", "001"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    ".": ("000", "000", "000", "000", "010"),
    "k": ("100", "101", "110", "101", "101"),
    "m": ("000", "110", "111", "101", "101"),
    "s": ("011", "100", "010", "001", "110"),
    " ": ("000", "000", "000", "000", "000"),
    "a": ("000", "011", "101", "101", "011"),
    "d": ("001", "011", "101", "101", "011"),
    "e": ("000", "111", "111", "100", "011"),
    "f": ("011", "100", "110", "100", "100"),
    "l": ("110", "010", "010", "010", "111"),
    "n": ("000", "110", "101", "101", "101"),
    "o": ("000", "010", "101", "101", "010"),
    "r": ("000", "101", "110", "100", "100"),
    "u": ("000", "101", "101", "101", "011"),
    "w": ("000", "101", "101", "111", "101"),
    "_": ("000", "000", "000", "000", "111"),
}


class Canvas:
    def __init__(self, width: int, height: int, background: RGB = (255, 255, 255)) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, colour: RGB) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(colour)

    def rect(self, x0: int, y0: int, x1: int, y1: int, colour: RGB) -> None:
        for y in range(min(y0, y1), max(y0, y1) + 1):
            for x in range(min(x0, x1), max(x0, x1) + 1):
                self.set(x, y, colour)

    def line(self, x0: int, y0: int, x1: int, y1: int, colour: RGB, width: int = 1) -> None:
        """Bresenham, thickened by a square brush."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        half = width // 2
        while True:
            self.rect(x0 - half, y0 - half, x0 + half, y0 + half, colour)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, text: str, colour: RGB = (0, 0, 0), scale: int = 2) -> None:
        for ch in text:
            glyph = _FONT.get(ch, _FONT[" "])
            for row, bits in enumerate(glyph):
                for col, bit in enumerate(bits):
                    if bit == "1":
                        self.rect(
                            x + col * scale,
                            y + row * scale,
                            x + col * scale + scale - 1,
                            y + row * scale + scale - 1,
                            colour,
                        )
            x += 4 * scale

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * self.width * 3 : (y + 1) * self.width * 3])
            for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _label(value: float) -> str:
    return f"{value:g}" if value >= 1 or value == 0 else f"{value:.2f}".rstrip("0")


def _size(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 else str(n)


class Chart(Canvas):
    """Lines of y against x on a log-scale x axis, y from 0."""

    left, right, top, bottom = 56, 24, 28, 36

    def plot(self, series: dict[str, tuple[RGB, dict[int, float]]], xs: list[int]) -> None:
        """`series`: name -> (colour, {x: y}); the names make the legend."""
        ymax = max(v for _, points in series.values() for v in points.values()) * 1.15 or 1.0
        step = _nice_step(ymax)
        ymax = math.ceil(ymax / step) * step
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.height - self.bottom, self.top
        lo, hi = math.log10(min(xs)), math.log10(max(xs))
        pad = (hi - lo) * 0.08 or 0.5

        def px(n: int) -> int:
            return round(x0 + (math.log10(n) - lo + pad) / (hi - lo + 2 * pad) * (x1 - x0))

        def py(v: float) -> int:
            return round(y0 - v / ymax * (y0 - y1))

        grid, axis = (225, 225, 225), (60, 60, 60)
        ticks = round(ymax / step)
        for i in range(ticks + 1):
            value = i * step
            self.line(x0, py(value), x1, py(value), grid)
            label = _label(value)
            self.text(x0 - 8 - len(label) * 8, py(value) - 5, label, axis)
        for n in xs:
            self.line(px(n), y0, px(n), y1, grid)
            label = _size(n)
            self.text(px(n) - len(label) * 4, y0 + 10, label, axis)
        self.line(x0, y0, x1, y0, axis)
        self.line(x0, y0, x0, y1, axis)
        self.text(8, 6, "ms", axis)
        legend_x = x1 - 8 - max(len(name) for name in series) * 8 - 20
        for i, (name, (colour, _)) in enumerate(series.items()):
            y = 8 + i * 16
            self.rect(legend_x, y, legend_x + 10, y + 9, colour)
            self.text(legend_x + 18, y, name, axis)
        for colour, points in series.values():
            ordered = sorted(points.items())
            for (na, va), (nb, vb) in itertools.pairwise(ordered):
                self.line(px(na), py(va), px(nb), py(vb), colour, width=3)
            for n, v in ordered:
                self.rect(px(n) - 4, py(v) - 4, px(n) + 4, py(v) + 4, colour)

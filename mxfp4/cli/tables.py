"""Results as text tables for the terminal."""

from __future__ import annotations

import math


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table: the first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def format_db(value: float) -> str:
    """A decibel figure; an exact result (infinite SQNR) reads 'exact'."""
    return "exact" if math.isinf(value) and value > 0 else f"{value:.2f}"

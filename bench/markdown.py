"""Markdown pieces the report's sections share: numbers and tables."""

from __future__ import annotations

import math


def num(value: float | None, digits: int = 0) -> str:
    """A figure with thousands separators; "-" when there is none."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, then a blank line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]

"""Pure: an activity document (`ActivityReader.buckets`) as the geometry of a stacked bar
chart — allowed requests and each rejection event per bucket — for the template to draw as
SVG. Numbers only come out of here; the template escapes every label it prints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDTH = 720.0
HEIGHT = 200.0
COLOURS = 8  # series colours in the stylesheet (.s0 … .s7); more events share the last one


@dataclass(frozen=True, slots=True)
class Segment:
    """One series' part of one bucket's bar (SVG user units, y down)."""

    x: float
    y: float
    width: float
    height: float
    colour: int
    title: str  # "2026-12-02 15:00 UTC: 3 invalid_secret"


@dataclass(frozen=True, slots=True)
class Series:
    """A legend entry: `allowed` or an event's name, its colour and its total."""

    name: str
    colour: int
    total: int


@dataclass(frozen=True, slots=True)
class Chart:
    """What the template draws."""

    width: float
    height: float
    segments: tuple[Segment, ...]
    series: tuple[Series, ...]
    peak: int  # the tallest bar's count: the y axis's top
    first: str  # the first and last buckets' start, for the x axis
    last: str
    summary: str  # the chart in one sentence, for screen readers


def format_count(n: int) -> str:
    """`12,345`."""
    return f"{n:,}"


def _moment(start: str) -> str:
    return start.replace("T", " ").removesuffix("Z")[:16] + " UTC"


def bar_chart(document: dict[str, Any]) -> Chart:
    """The chart of `document`'s buckets, oldest on the left."""
    buckets: list[dict[str, Any]] = document.get("buckets", [])
    totals: dict[str, int] = document.get("totals", {}).get("rejected", {})
    allowed_total = int(document.get("totals", {}).get("allowed", 0))
    events = sorted(totals, key=lambda name: (-totals[name], name))
    names = ["allowed", *events]
    colour = {name: min(i, COLOURS - 1) for i, name in enumerate(names)}
    heights = [
        int(b.get("allowed", 0)) + sum(int(n) for n in b.get("rejected", {}).values())
        for b in buckets
    ]
    peak = max(heights, default=0)
    step = WIDTH / max(1, len(buckets))
    gap = min(1.0, step / 4)
    segments: list[Segment] = []
    for i, bucket in enumerate(buckets):
        counts = [("allowed", int(bucket.get("allowed", 0)))]
        counts += [(name, int(bucket.get("rejected", {}).get(name, 0))) for name in events]
        bottom = HEIGHT
        for name, n in counts:
            if n == 0 or peak == 0:
                continue
            height = HEIGHT * n / peak
            bottom -= height
            segments.append(
                Segment(
                    x=round(i * step + gap / 2, 2),
                    y=round(bottom, 2),
                    width=round(step - gap, 2),
                    height=round(height, 2),
                    colour=colour[name],
                    title=f"{_moment(str(bucket.get('start', '')))}: {format_count(n)} {name}",
                )
            )
    rejected_total = sum(totals.values())
    series = tuple(
        Series(name, colour[name], allowed_total if name == "allowed" else totals[name])
        for name in names
    )
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        segments=tuple(segments),
        series=series,
        peak=peak,
        first=_moment(str(buckets[0]["start"])) if buckets else "",
        last=_moment(str(buckets[-1]["start"])) if buckets else "",
        summary=(
            f"{format_count(allowed_total)} allowed and {format_count(rejected_total)} rejected "
            f"requests in {len(buckets)} buckets"
        ),
    )

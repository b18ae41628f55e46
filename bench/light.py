"""The light-load phase: a few connections (`--light-connections`, 2), one wrk thread, on
`direct` and the proxies in front of the same upstream. With nothing queued, a proxy's p50
and p99 minus `direct`'s are the latency it adds to each request."""

from __future__ import annotations

from dataclasses import dataclass

from bench.results import DIRECT, LEAN, NAIVE, SIDECAR, Results

TARGETS = (DIRECT, NAIVE, LEAN, SIDECAR)


@dataclass(frozen=True, slots=True)
class Added:
    """A proxy's light-load latency over `direct`'s (medians over the light rounds), ms."""

    target: str
    scenario: str
    p50_ms: float
    p99_ms: float
    added_p50_ms: float
    added_p99_ms: float


def added(results: Results, target: str, scenario: str) -> Added | None:
    """None when the target or `direct` was not measured at light load."""
    proxy = results.summary(target, scenario, light=True)
    direct = results.summary(DIRECT, scenario, light=True)
    if proxy is None or direct is None:
        return None
    return Added(
        target,
        scenario,
        proxy.p50_ms,
        proxy.p99_ms,
        proxy.p50_ms - direct.p50_ms,
        proxy.p99_ms - direct.p99_ms,
    )


def section(results: Results) -> list[str]:
    """The report's light-load table, one row per scenario and target."""
    connections = results.settings.get("light_connections", 0)
    if not connections:
        return ["## Light load", "", "not measured: --light-connections 0", ""]
    rows = []
    for scenario in results.scenarios:
        for target in results.targets(scenario, light=True):
            summary = results.summary(target, scenario, light=True)
            assert summary is not None
            extra = added(results, target, scenario) if target != DIRECT else None
            rows.append(
                [
                    scenario,
                    target,
                    f"{summary.requests_per_s:,.0f}",
                    f"{summary.p50_ms:.2f}",
                    f"{summary.p99_ms:.2f}",
                    "-" if extra is None else f"{extra.added_p50_ms:+.2f}",
                    "-" if extra is None else f"{extra.added_p99_ms:+.2f}",
                    str(summary.errors),
                ]
            )
    header = ["scenario", "target", "req/s", "p50 ms", "p99 ms", "added p50", "added p99"]
    lines = [
        "## Light load (latency added over direct)",
        "",
        f"wrk -t1 -c{connections}, the same duration and rounds as above, medians over rounds. "
        "Added = the proxy's p50 (p99) minus `direct`'s in the same phase: the time a proxy "
        "adds to a request when nothing queues.",
        "",
        "| " + " | ".join([*header, "errors"]) + " |",
        "|" + "---|" * (len(header) + 1),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    return lines

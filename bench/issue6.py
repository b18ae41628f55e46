"""The targets of issue 6 (the first performance round), each with what this run measured."""

from __future__ import annotations

from bench.results import (
    FLOOD_MANY,
    FLOOD_SINGLE,
    NAIVE,
    NGINX,
    SIDECAR,
    SIDECAR_INFO,
    Results,
    Verdict,
)


def verdicts(results: Results) -> list[Verdict]:
    """The targets of issue 6, each with what this run measured."""
    out: list[Verdict] = []

    def ratio_verdict(label: str, numerator: str, denominator: str, floor: float) -> None:
        ratio = results.ratio(numerator, denominator)
        if ratio is None:
            out.append(Verdict(label, "not measured", None))
            return
        out.append(
            Verdict(
                label,
                f"{ratio.of_medians:.2f} (per round {_join(ratio.per_round)})",
                ratio.of_medians >= floor,
            )
        )

    ratio_verdict("sidecar/naive ≥ 1.0", SIDECAR, NAIVE, 1.0)
    ratio_verdict("sidecar/nginx ≥ 0.30", SIDECAR, NGINX, 0.30)
    sidecar = results.summary(SIDECAR)
    info = results.summary(SIDECAR_INFO)
    if sidecar is None:
        out.append(Verdict("p99 ≤ 20 ms at 64 connections", "not measured", None))
    else:
        shown = f"{sidecar.p99_ms:.1f} ms"
        if info is not None:
            shown += f" (log info: {info.p99_ms:.1f} ms)"
        out.append(Verdict("p99 ≤ 20 ms at 64 connections", shown, sidecar.p99_ms <= 20.0))
    for flood in (FLOOD_SINGLE, FLOOD_MANY):
        ratio = results.ratio(flood, SIDECAR)
        label = f"invalid-key flood costs ≤ 20% ({flood.removeprefix('sidecar + ')})"
        if ratio is None:
            out.append(Verdict(label, "not measured", None))
            continue
        cost = 1.0 - ratio.of_medians
        out.append(Verdict(label, f"costs {cost:.0%} (ratio {ratio.of_medians:.2f})", cost <= 0.20))
    load = results.rss_under_load(SIDECAR)
    idle = next((i for i in results.idle if i.target != NAIVE), None)
    if load is None and idle is None:
        out.append(Verdict("RSS ≤ 100 MiB per worker", "not measured", None))
    else:
        worst = max(v for v in (load, idle.with_idle_mib if idle else None) if v is not None)
        parts = []
        if load is not None:
            parts.append(f"under load {load:.0f} MiB")
        if idle is not None:
            parts.append(f"{idle.connections_open} idle TLS {idle.with_idle_mib:.0f} MiB")
        flooded = [results.rss_under_load(t) for t in (FLOOD_SINGLE, FLOOD_MANY)]
        if any(v is not None for v in flooded):
            parts.append(f"under flood {max(v for v in flooded if v is not None):.0f} MiB")
        out.append(Verdict("RSS ≤ 100 MiB per worker", ", ".join(parts), worst <= 100.0))
    out += _slowloris_verdicts(results, load)
    return out


SLOWLORIS_P99_MS = 100.0
SLOWLORIS_RSS_GROWTH_MIB = 5.0  # allocator noise allowed between the two churn cycles


def _slowloris_verdicts(results: Results, plain_load_mib: float | None) -> list[Verdict]:
    run = results.slowloris
    wanted = run.connections_wanted if run is not None else 500
    p99_label = f"p99 under {wanted} slowloris connections ≤ {SLOWLORIS_P99_MS:.0f} ms"
    growth = f"{SLOWLORIS_RSS_GROWTH_MIB:g} MiB"
    rss_label = f"RSS bounded under slowloris (2nd cut/reopen cycle ≤ 1st + {growth})"
    if run is None:
        return [Verdict(p99_label, "not measured", None), Verdict(rss_label, "not measured", None)]
    held = f"{run.connections_open} of {run.connections_wanted} open"
    # The guard must be seen working: with no cut, the run proves nothing about the bound.
    first, second = run.rss_first_cycle_mib, run.rss_second_cycle_mib
    bounded: bool | None = None
    if first is not None and second is not None:
        bounded = run.server_closed > 0 and second <= first + SLOWLORIS_RSS_GROWTH_MIB
    rss_shown = (
        f"1st cycle {_mib(first)}, 2nd {_mib(second)} MiB (before {run.rss_before_mib:.0f}, "
        f"after {run.rss_after_mib:.0f}"
        + (f"; plain load {plain_load_mib:.0f}" if plain_load_mib is not None else "")
        + f"); {run.server_closed} cut by the server, {run.reconnects} reopened"
    )
    return [
        Verdict(
            p99_label,
            f"{run.wrk.p99_ms:.1f} ms ({held}, {run.wrk.errors} errors)",
            run.wrk.p99_ms <= SLOWLORIS_P99_MS and run.wrk.errors == 0,
        ),
        Verdict(rss_label, rss_shown, bounded),
    ]


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _join(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)

"""The targets of issue 16 (performance round 2), each with what this run measured.

Every figure is a ratio or a difference of two targets measured in the same run (the same
rounds, or the same light-load phase), never an absolute number held against a constant,
except memory, whose targets are absolute.
"""

from __future__ import annotations

import os

from bench import light
from bench.payloads import GET, POST
from bench.results import (
    FLOOD_MANY,
    FLOOD_SINGLE,
    LEAN,
    NAIVE,
    SIDECAR,
    SIDECAR_WORKERS,
    Results,
    Verdict,
)

IDLE_CONNECTIONS = 2000  # the idle figure; fewer measured is shown, not judged
PREAMBLE = [
    "- Ratios of medians over the rounds (per-round ratios in brackets). The floods' no-flood "
    "figure is `sidecar`: the same config in a process of its own (so the flood's argon2 "
    "memory stays out of it), measured in the same rounds with the same scenario.",
    f"- `--workers 2` / `--workers 1` needs two cores free for the sidecar; this machine has "
    f"{len(os.sched_getaffinity(0))} usable, shared with wrk, the upstream and Redis, so two free "
    "cores were not available and the ratio is indicative only.",
]


def verdicts(results: Results) -> list[Verdict]:
    """One row per target of the issue (per scenario where the issue names one)."""
    out = [
        _ratio(results, "sidecar / naive, small GET ≥ 2.0", SIDECAR, NAIVE, GET, 2.0),
        _ratio(results, "sidecar / naive, 1 KiB POST ≥ 1.5", SIDECAR, NAIVE, POST, 1.5),
    ]
    for scenario in results.scenarios:
        out.append(
            _ratio(results, f"sidecar / lean, {scenario} ≥ 0.7", SIDECAR, LEAN, scenario, 0.7)
        )
    for scenario in results.scenarios:
        out += _light(results, scenario)
    for scenario in results.scenarios:
        out.append(_p99(results, scenario))
    for flood in (FLOOD_MANY, FLOOD_SINGLE):
        label = f"valid throughput under {flood.removeprefix('sidecar + ')} ≥ 0.9 of no flood"
        out.append(_ratio(results, label, flood, SIDECAR, results.main_scenario, 0.9))
    out += _memory(results)
    for scenario in results.scenarios:
        label = f"--workers 2 / --workers 1, {scenario} ≥ 1.6 (indicative: no 2 free cores)"
        out.append(_ratio(results, label, SIDECAR_WORKERS, SIDECAR, scenario, 1.6))
    return out


def _ratio(
    results: Results, label: str, top: str, bottom: str, scenario: str, floor: float
) -> Verdict:
    if scenario not in results.scenarios:
        return Verdict(label, f"not measured: scenario {scenario} not in --scenarios", None)
    ratio = results.ratio(top, bottom, scenario)
    if ratio is None:
        return Verdict(label, "not measured", None)
    rounds = ", ".join(f"{v:.2f}" for v in ratio.per_round)
    return Verdict(label, f"{ratio.of_medians:.2f} ({rounds})", ratio.of_medians >= floor)


def _light(results: Results, scenario: str) -> list[Verdict]:
    connections = results.settings.get("light_connections", 0)
    sidecar = light.added(results, SIDECAR, scenario)
    naive = light.added(results, NAIVE, scenario)
    labels = [
        f"added p{q} at light load ({connections} conn.), {scenario}: sidecar ≤ naive"
        for q in ("50", "99")
    ]
    if sidecar is None or naive is None:
        return [Verdict(label, "not measured", None) for label in labels]
    lean = light.added(results, LEAN, scenario)
    pairs = [
        (sidecar.added_p50_ms, naive.added_p50_ms, lean.added_p50_ms if lean else None),
        (sidecar.added_p99_ms, naive.added_p99_ms, lean.added_p99_ms if lean else None),
    ]
    out = []
    for label, (mine, theirs, ceiling) in zip(labels, pairs, strict=True):
        shown = f"sidecar {mine:+.2f} ms, naive {theirs:+.2f} ms"
        if ceiling is not None:
            shown += f" (lean {ceiling:+.2f} ms)"
        out.append(Verdict(label, shown, mine <= theirs))
    return out


def _p99(results: Results, scenario: str) -> Verdict:
    connections = results.settings.get("connections", 64)
    label = f"p99 at {connections} connections, {scenario}: sidecar ≤ naive"
    sidecar, naive = results.summary(SIDECAR, scenario), results.summary(NAIVE, scenario)
    if sidecar is None or naive is None:
        return Verdict(label, "not measured", None)
    shown = f"sidecar {sidecar.p99_ms:.1f} ms, naive {naive.p99_ms:.1f} ms"
    return Verdict(label, shown, sidecar.p99_ms <= naive.p99_ms)


def _memory(results: Results) -> list[Verdict]:
    load_label = "RSS per worker under load ≤ 100 MiB"
    load = results.rss_under_load(SIDECAR)
    if load is None:
        under_load = Verdict(load_label, "not measured", None)
    else:
        shown = f"sidecar {load:.0f} MiB"
        flooded = [v for t in (FLOOD_SINGLE, FLOOD_MANY) if (v := results.rss_under_load(t))]
        if flooded:
            shown += f" (under flood: {max(flooded):.0f} MiB)"
        under_load = Verdict(load_label, shown, load <= 100.0)
    idle_label = f"RSS with {IDLE_CONNECTIONS} idle TLS connections ≤ 150 MiB"
    idle = next((i for i in results.idle if i.target != NAIVE), None)
    if idle is None:
        return [under_load, Verdict(idle_label, "not measured", None)]
    shown = f"{idle.target}: {idle.with_idle_mib:.0f} MiB with {idle.connections_open} open"
    control = next((i for i in results.idle if i.target == NAIVE), None)
    if control is not None:
        shown += f" (naive: {control.with_idle_mib:.0f} MiB)"
    met: bool | None = idle.with_idle_mib <= 150.0
    if idle.connections_open < IDLE_CONNECTIONS:
        met = None  # fewer connections than the figure: shown, not judged
        shown += f"; fewer than {IDLE_CONNECTIONS}, not judged"
    return [under_load, Verdict(idle_label, shown, met)]

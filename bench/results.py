"""What one run measured, and the figures derived from it: medians, ratios, the issue's targets.

Ratios are the point. Each is taken two ways: the ratio of the per-target medians, and the
median of the per-round ratios (both targets measured in the same round, minutes apart at
most), which cancels most of the drift of a shared, noisy machine.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.archive import ArchiveFigures
from bench.profile import ProfileSummary
from bench.wrk import WrkResult

DIRECT = "direct"
NAIVE = "naive"
SIDECAR = "sidecar"
SIDECAR_INFO = "sidecar (log info)"
SIDECAR_WORKERS = "sidecar --workers 2"
# `--baseline DIR`: the same sidecar config served by another checkout (a previous revision).
SIDECAR_BASELINE = "sidecar (baseline)"
# The same config with `archive.url` set: its archiver copies its records into PostgreSQL.
SIDECAR_ARCHIVE = "sidecar (archive)"
NGINX = "nginx"
FLOOD_SINGLE = "sidecar + flood (1 IP)"
FLOOD_MANY = "sidecar + flood (1000 IPs)"


@dataclass(frozen=True, slots=True)
class Measurement:
    target: str
    round: int
    wrk: WrkResult
    rss_max_mib: float | None = None
    flood: dict[str, object] | None = None
    argon2: float | None = None  # verifications the sidecar ran during this measurement
    cpu_s: float | None = None  # CPU seconds the target's process used meanwhile

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_s is None or not self.wrk.requests:
            return None
        return self.cpu_s / self.wrk.requests * 1e6


@dataclass(frozen=True, slots=True)
class TargetSummary:
    target: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    rounds: list[float]  # req/s per round, in round order
    cpu_us_per_request: float | None  # median over rounds


@dataclass(frozen=True, slots=True)
class Ratio:
    name: str
    of_medians: float
    per_round: list[float]

    @property
    def median_per_round(self) -> float:
        return statistics.median(self.per_round) if self.per_round else float("nan")


@dataclass(frozen=True, slots=True)
class IdleMemory:
    target: str
    connections_wanted: int
    connections_open: int
    outcomes: dict[str, int]
    before_mib: float
    with_idle_mib: float
    after_mib: float

    @property
    def per_connection_kib(self) -> float:
        if not self.connections_open:
            return float("nan")
        return (self.with_idle_mib - self.before_mib) * 1024 / self.connections_open


@dataclass(frozen=True, slots=True)
class SlowlorisRun:
    """Valid load on `sidecar` while a separate process holds slowloris connections to it."""

    connections_wanted: int
    connections_open: int  # open when the valid load started
    wrk: WrkResult
    rss_before_mib: float  # settled, before the slowloris process started
    rss_max_mib: float  # highest sample from the first open until the process stopped
    # Highest sample while every connection was opened and cut once, then during the next
    # header timeout (each cut and reopened once more): bounded means no growth between them.
    rss_first_cycle_mib: float | None
    rss_second_cycle_mib: float | None
    rss_after_mib: float  # settled, after the process stopped
    server_closed: int  # slowloris connections the sidecar cut (its header timeout)
    reconnects: int
    open_failures: dict[str, int]
    lifetime_median_s: float | None  # open → cut, median over the cut connections
    seconds: float  # how long the slowloris process ran
    header_timeout_s: float


@dataclass(frozen=True, slots=True)
class Argon2Count:
    """Counter values from the sidecars' /metrics after the runs."""

    during_rounds: float  # verifications during the `sidecar` measurements
    total: float
    loaded_s: float  # seconds the valid key was in use on this process
    cache_ttl_s: float
    cache_hits: float
    cache_misses: float
    requests_by_status: dict[str, float]  # `sidecar_requests_total`, summed over routes
    audit_written: float


@dataclass(slots=True)
class Results:
    command: str
    machine: dict[str, str]
    settings: dict[str, object]
    measurements: list[Measurement] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # target → why it was not measured
    rss_at_start: dict[str, float] = field(default_factory=dict)  # sidecar → MiB
    idle: list[IdleMemory] = field(default_factory=list)
    argon2: Argon2Count | None = None
    slowloris: SlowlorisRun | None = None
    slowloris_note: str = ""  # why it was not measured
    workers: str = ""
    profile: ProfileSummary | None = None
    profile_note: str = ""
    archive: ArchiveFigures | None = None
    archive_note: str = ""  # why the archive was not measured
    notes: list[str] = field(default_factory=list)
    log_complaints: dict[str, dict[str, int]] = field(default_factory=dict)  # target → text → n

    def targets(self) -> list[str]:
        seen: dict[str, None] = {}
        for measurement in self.measurements:
            seen.setdefault(measurement.target)
        return list(seen)

    def of(self, target: str) -> list[Measurement]:
        return [m for m in self.measurements if m.target == target]

    def summary(self, target: str) -> TargetSummary | None:
        runs = sorted(self.of(target), key=lambda m: m.round)
        if not runs:
            return None
        return TargetSummary(
            target=target,
            requests_per_s=statistics.median(m.wrk.requests_per_s for m in runs),
            p50_ms=statistics.median(m.wrk.p50_ms for m in runs),
            p99_ms=statistics.median(m.wrk.p99_ms for m in runs),
            errors=sum(m.wrk.errors for m in runs),
            rounds=[m.wrk.requests_per_s for m in runs],
            cpu_us_per_request=_median_or_none([m.cpu_us_per_request for m in runs]),
        )

    def ratio(self, numerator: str, denominator: str) -> Ratio | None:
        top, bottom = self.summary(numerator), self.summary(denominator)
        if top is None or bottom is None or not bottom.requests_per_s:
            return None
        by_round = {m.round: m.wrk.requests_per_s for m in self.of(denominator)}
        per_round = [
            m.wrk.requests_per_s / by_round[m.round]
            for m in sorted(self.of(numerator), key=lambda m: m.round)
            if by_round.get(m.round)
        ]
        return Ratio(
            f"{numerator} / {denominator}",
            top.requests_per_s / bottom.requests_per_s,
            per_round,
        )

    def cpu_ratio(self, numerator: str, denominator: str) -> Ratio | None:
        """CPU per request of one target over another's: how much more work each request is."""
        top, bottom = self.summary(numerator), self.summary(denominator)
        if top is None or bottom is None:
            return None
        if top.cpu_us_per_request is None or not bottom.cpu_us_per_request:
            return None
        by_round = {m.round: m.cpu_us_per_request for m in self.of(denominator)}
        per_round = []
        for m in sorted(self.of(numerator), key=lambda m: m.round):
            bottom_round = by_round.get(m.round)
            if m.cpu_us_per_request is not None and bottom_round:
                per_round.append(m.cpu_us_per_request / bottom_round)
        return Ratio(
            f"{numerator} / {denominator}",
            top.cpu_us_per_request / bottom.cpu_us_per_request,
            per_round,
        )

    def rss_under_load(self, target: str) -> float | None:
        values = [m.rss_max_mib for m in self.of(target) if m.rss_max_mib is not None]
        return max(values) if values else None


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not measured


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
    idle = next((i for i in results.idle if i.target == SIDECAR_INFO), None)
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


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _join(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)

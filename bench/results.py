"""What one run measured, and the figures derived from it: medians and ratios.

Ratios are the point. Each is taken two ways: the ratio of the per-target medians, and the
median of the per-round ratios (both targets measured in the same round, minutes apart at
most), which cancels most of the drift of a shared, noisy machine.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.archive import ArchiveFigures
from bench.payloads import POST
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
LEAN = "lean"  # bench/lean_proxy.py: no auth, no audit, the fastest this stack goes
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
    scenario: str = POST  # bench.payloads.SCENARIOS
    light: bool = False  # the light-load phase (`--light-connections`), not the rounds

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
    # The scenarios measured, in order; the first is the main one: the floods, slowloris,
    # the archive and the profile run it, and the sections without a scenario show it.
    scenarios: list[str] = field(default_factory=lambda: [POST])
    steps: list[str] = field(default_factory=list)  # `sidecar @<rev>` targets, oldest first

    @property
    def main_scenario(self) -> str:
        return self.scenarios[0]

    def targets(self, scenario: str | None = None, *, light: bool = False) -> list[str]:
        seen: dict[str, None] = {}
        for measurement in self.measurements:
            if measurement.light == light and measurement.scenario == (
                scenario or self.main_scenario
            ):
                seen.setdefault(measurement.target)
        return list(seen)

    def of(
        self, target: str, scenario: str | None = None, *, light: bool = False
    ) -> list[Measurement]:
        wanted = scenario or self.main_scenario
        return [
            m
            for m in self.measurements
            if m.target == target and m.scenario == wanted and m.light == light
        ]

    def summary(
        self, target: str, scenario: str | None = None, *, light: bool = False
    ) -> TargetSummary | None:
        runs = sorted(self.of(target, scenario, light=light), key=lambda m: m.round)
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

    def ratio(self, numerator: str, denominator: str, scenario: str | None = None) -> Ratio | None:
        top, bottom = self.summary(numerator, scenario), self.summary(denominator, scenario)
        if top is None or bottom is None or not bottom.requests_per_s:
            return None
        by_round = {m.round: m.wrk.requests_per_s for m in self.of(denominator, scenario)}
        per_round = [
            m.wrk.requests_per_s / by_round[m.round]
            for m in sorted(self.of(numerator, scenario), key=lambda m: m.round)
            if by_round.get(m.round)
        ]
        return Ratio(
            f"{numerator} / {denominator}",
            top.requests_per_s / bottom.requests_per_s,
            per_round,
        )

    def cpu_ratio(
        self, numerator: str, denominator: str, scenario: str | None = None
    ) -> Ratio | None:
        """CPU per request of one target over another's: how much more work each request is."""
        top, bottom = self.summary(numerator, scenario), self.summary(denominator, scenario)
        if top is None or bottom is None:
            return None
        if top.cpu_us_per_request is None or not bottom.cpu_us_per_request:
            return None
        by_round = {m.round: m.cpu_us_per_request for m in self.of(denominator, scenario)}
        per_round = []
        for m in sorted(self.of(numerator, scenario), key=lambda m: m.round):
            bottom_round = by_round.get(m.round)
            if m.cpu_us_per_request is not None and bottom_round:
                per_round.append(m.cpu_us_per_request / bottom_round)
        return Ratio(
            f"{numerator} / {denominator}",
            top.cpu_us_per_request / bottom.cpu_us_per_request,
            per_round,
        )

    def rss_under_load(self, target: str) -> float | None:
        """The highest VmRSS sampled while `target` was under load, over every scenario."""
        values = [
            m.rss_max_mib
            for m in self.measurements
            if m.target == target and m.rss_max_mib is not None
        ]
        return max(values) if values else None


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target of an issue: what this run measured, and whether it is met."""

    target: str
    measured: str
    met: bool | None  # None: not measured

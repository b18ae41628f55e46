"""The measured load: warm-up, the alternating rounds (every target, every scenario), the
light-load phase, and the flood that runs beside a flooded target's valid load."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from bench import light
from bench import wrk as wrk_tool
from bench.model import Options, Target
from bench.payloads import SCENARIOS
from bench.processes import Child, python_module
from bench.procfs import RssSampler, cpu_seconds
from bench.results import FLOOD_MANY, Measurement, Results
from bench.sidecar_target import scrape_metrics
from bench.support import FloodResult, cpu_delta, delta, print_measurement, wait_for_file

AUDIT_STREAMS = ("sidecar:audit", "sidecar:auth-events")  # the defaults the config keeps
PAUSE_BETWEEN_RUNS_S = 1.0


class Rounds:
    """The load phases of `bench.run.Bench` (a mixin: Bench owns the attributes below)."""

    options: Options
    wrk: str
    dir: Path
    targets: list[Target]
    results: Results
    _cert: Path
    _redis_url: str
    _scripts: dict[tuple[str, bool], Path]

    def url(self, target: Target, scenario: str) -> str:
        return target.base + SCENARIOS[scenario].path

    def script(self, target: Target, scenario: str) -> Path:
        return self._scripts[scenario, target.keyed]

    def _wrk(
        self,
        target: Target,
        duration_s: float,
        scenario: str | None = None,
        *,
        connections: int | None = None,
        threads: int | None = None,
    ) -> wrk_tool.WrkResult:
        name = scenario or self.options.scenarios[0]
        return wrk_tool.run(
            self.wrk,
            self.url(target, name),
            self.script(target, name),
            duration_s=duration_s,
            connections=connections or self.options.connections,
            threads=threads or self.options.threads,
        )

    def scenarios_of(self, target: Target) -> tuple[str, ...]:
        """The floods run the main scenario only: the issue's flood target is one ratio."""
        return self.options.scenarios[:1] if target.flood else self.options.scenarios

    def warm_up(self) -> None:
        for target in self.targets:
            if target.name == FLOOD_MANY:
                continue  # the same process as FLOOD_SINGLE, warmed up without its flood
            for scenario in self.scenarios_of(target):
                result = self._wrk(target, self.options.warmup_s, scenario)
                print(
                    f"  warm-up {target.name} {scenario}: {result.requests_per_s:,.0f} req/s",
                    flush=True,
                )
                time.sleep(PAUSE_BETWEEN_RUNS_S)

    def measure_rounds(self) -> None:
        count = len(self.targets)
        for round_no in range(1, self.options.rounds + 1):
            # Rotate the order each round so that no target always runs first or last.
            shift = (round_no - 1) % count
            for target in self.targets[shift:] + self.targets[:shift]:
                for scenario in self.scenarios_of(target):
                    measurement = self._measure(target, round_no, scenario)
                    self.results.measurements.append(measurement)
                    print_measurement(measurement)
                    time.sleep(PAUSE_BETWEEN_RUNS_S)

    def light_load(self) -> None:
        """`--light-connections` (one wrk thread) on direct and the pass-through proxies and
        `sidecar`: the latency each adds over the upstream when it is not saturated."""
        chosen = [t for t in self.targets if t.name in light.TARGETS]
        connections = self.options.light_connections
        for round_no in range(1, self.options.rounds + 1):
            shift = (round_no - 1) % max(1, len(chosen))
            for target in chosen[shift:] + chosen[:shift]:
                for scenario in self.options.scenarios:
                    result = self._wrk(
                        target,
                        self.options.duration_s,
                        scenario,
                        connections=connections,
                        threads=1,
                    )
                    measurement = Measurement(
                        target.name, round_no, result, scenario=scenario, light=True
                    )
                    self.results.measurements.append(measurement)
                    print_measurement(measurement)
                    if target.sidecar is not None:
                        self._trim_audit_streams()
                    time.sleep(PAUSE_BETWEEN_RUNS_S)

    def _measure(self, target: Target, round_no: int, scenario: str) -> Measurement:
        if target.sidecar is None:
            cpu_before = cpu_seconds(target.pid)
            result = self._wrk(target, self.options.duration_s, scenario)
            return Measurement(
                target.name,
                round_no,
                result,
                cpu_s=cpu_delta(cpu_before, target.pid),
                scenario=scenario,
            )
        health = target.sidecar.ports.health
        before = scrape_metrics(health)
        with contextlib.ExitStack() as during:
            flood_result = None
            if target.flood is not None:
                flood_result = during.enter_context(self._flood(target))
            sampler = during.enter_context(RssSampler(target.pid))
            cpu_before = cpu_seconds(target.pid)
            result = self._wrk(target, self.options.duration_s, scenario)
            cpu = cpu_delta(cpu_before, target.pid)
        after = scrape_metrics(health)
        argon2 = delta(before, after, "sidecar_argon2_verifications_total")
        self._trim_audit_streams()
        return Measurement(
            target.name,
            round_no,
            result,
            rss_max_mib=sampler.max_mib or None,
            cpu_s=cpu,
            flood=flood_result.read() if flood_result is not None else None,
            argon2=argon2,
            scenario=scenario,
        )

    @contextlib.contextmanager
    def _flood(self, target: Target) -> Iterator[FloodResult]:
        assert target.sidecar is not None
        assert target.flood is not None
        path = self.dir / f"flood-{target.flood}-{time.monotonic_ns()}.json"
        argv = python_module(
            "bench.flood",
            "--port",
            str(target.sidecar.ports.proxy),
            "--cafile",
            str(self._cert),
            "--rate",
            str(self.options.flood_rate),
            "--sources",
            target.flood,
            "--max-seconds",
            str(self.options.duration_s + 60),
            "--result",
            str(path),
        )
        child = Child(f"flood-{target.flood}", argv, self.dir / "flood.log")
        flood = FloodResult(path)
        try:
            wait_for_file(Path(str(path) + ".ready"), child)
            time.sleep(1.0)  # the flood is at full rate before the valid load starts
            cpu_before = cpu_seconds(child.pid)
            yield flood
            flood.client_cpu_s = cpu_delta(cpu_before, child.pid)
        finally:
            child.stop()

    def _trim_audit_streams(self) -> None:
        """The benchmark is the audit stream's consumer: it empties the streams between runs
        so Redis memory stays flat (the records of a run would otherwise fill gigabytes)."""
        client = redis.Redis.from_url(self._redis_url)
        try:
            for stream in AUDIT_STREAMS:
                client.xtrim(stream, maxlen=0, approximate=False)
        finally:
            client.close()

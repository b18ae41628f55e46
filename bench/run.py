"""One benchmark run, start to finish: start every target, warm up, alternate rounds, extras,
report. Everything started here is stopped on the way out, whatever happens."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from bench import archive, light, logscan, nginx, profile, report, sidecar_target, wrk
from bench.machine import machine_description
from bench.payloads import SCENARIOS
from bench.private import write_private
from bench.processes import REPO_ROOT, Child, python_module, raise_open_files_limit, wait_for_port
from bench.procfs import RssSampler, cpu_seconds, rss_mib
from bench.results import (
    DIRECT,
    FLOOD_MANY,
    FLOOD_SINGLE,
    LEAN,
    NAIVE,
    NGINX,
    SIDECAR,
    SIDECAR_ARCHIVE,
    SIDECAR_BASELINE,
    SIDECAR_INFO,
    SIDECAR_WORKERS,
    Argon2Count,
    IdleMemory,
    Measurement,
    Results,
    SlowlorisRun,
)
from bench.sidecar_target import SidecarPorts, scrape_metrics, serve_supports_workers
from sidecar.config import Limits
from sidecar.runtime.selfsigned import write_self_signed
from sidecar.storage.embedded import EmbeddedRedis, free_port
from sidecar.storage.embedded_postgres import EmbeddedPostgres

AUDIT_STREAMS = ("sidecar:audit", "sidecar:auth-events")  # the defaults the config keeps
# Sustained load on the archive target: four windows, so the last third is well past the first.
ARCHIVE_LOAD_S = 45.0
_HELPER_DEADLINE_S = 120.0
_PAUSE_BETWEEN_RUNS_S = 1.0
# The sidecar's config leaves `limits` at the product's defaults.
HEADER_TIMEOUT_S = float(Limits.model_fields["header_timeout_s"].default)
NOTES = [
    "Everything shares the machine: wrk (2 threads), the upstream, Redis, the flood and the "
    "target under test all run on the same cores, so a target's figure includes the load "
    "generator's competition for CPU. That is the same for every target of a round.",
    "direct is plain HTTP; naive, lean, sidecar and nginx terminate TLS with the same ECDSA P-256 "
    "certificate. Connections are kept alive, so handshakes are a negligible share.",
    "naive, lean and the upstream run on uvloop, as `sidecar serve` does.",
    "The sidecar logs JSON to a file in the run's temporary folder (stderr redirected).",
    "Between measurements the harness empties the audit and event streams (XTRIM MAXLEN 0), "
    "playing the consumer, so Redis memory stays flat across the run.",
]


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float
    rounds: int
    warmup_s: float
    connections: int
    threads: int
    out: Path
    profile: bool
    profile_s: int
    profile_native: bool
    idle_connections: int
    flood_rate: float
    command: str
    slowloris: int = 500  # slowloris connections held during one valid run; 0 skips
    # A checkout of another revision with its own .venv: its sidecar is measured beside this
    # one, same config, same rounds, so "did this change cost anything" is one ratio.
    baseline: Path | None = None
    profile_target: str = SIDECAR  # which sidecar target `--profile` samples
    scenarios: tuple[str, ...] = tuple(SCENARIOS)  # the first is the main one (Results)
    light_connections: int = 2  # the light-load phase's wrk -c (one thread); 0 skips it
    targets: frozenset[str] | None = None  # only these targets (None: all)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    base: str  # scheme://host:port; the scenario gives the path
    keyed: bool  # whether its requests carry the API key
    pid: int  # the process doing the target's work: its CPU time is measured
    sidecar: SidecarProcess | None = None  # the process behind it, when it is a sidecar
    flood: str | None = None  # "single" | "many": the flood running beside the valid load


@dataclass(frozen=True, slots=True)
class SidecarProcess:
    child: Child
    ports: SidecarPorts


@dataclass(frozen=True, slots=True)
class Listening:
    child: Child
    port: int


class Bench:
    """The run's processes, files and results."""

    def __init__(
        self, options: Options, stack: contextlib.ExitStack, workdir: Path, *, workers: bool
    ) -> None:
        self.options = options
        self._workers = workers  # whether `serve --workers` exists to be measured
        self._stack = stack
        self.dir = workdir
        self.wrk = wrk.find_wrk()
        self.results = Results(
            command=options.command,
            machine=machine_description(self.wrk),
            settings={
                "duration": options.duration_s,
                "rounds": options.rounds,
                "warmup": options.warmup_s,
                "connections": options.connections,
                "threads": options.threads,
                "flood_rate": options.flood_rate,
                "slowloris": options.slowloris,
                "light_connections": options.light_connections,
            },
            scenarios=list(options.scenarios),
        )
        self.targets: list[Target] = []
        self._redis_url = ""
        self._cert = self._key = Path()
        self._key_file = Path()
        self._sidecar: SidecarProcess | None = None
        self._scripts: dict[tuple[str, bool], Path] = {}  # (scenario, keyed) → wrk script
        self._postgres: EmbeddedPostgres | None = None
        self._first_use = 0.0

    # ---- start-up -------------------------------------------------------------------

    def _start(self, name: str, argv: list[str], port: int, cwd: Path = REPO_ROOT) -> Child:
        child = Child(name, argv, self.dir / f"{name.replace(' ', '-')}.log", cwd=cwd)
        self._stack.callback(child.stop)
        wait_for_port(port, child)
        return child

    def start(self) -> None:
        """Start every target (and Redis and the upstream behind them); issue the key."""
        redis_server = self._stack.enter_context(EmbeddedRedis())
        self._redis_url = redis_server.url
        self._cert, self._key = write_self_signed(self.dir)
        upstream_port = free_port()
        upstream = self._start(
            "upstream", python_module("bench.upstream", "--port", str(upstream_port)), upstream_port
        )
        upstream_url = f"http://127.0.0.1:{upstream_port}"

        api_key = sidecar_target.issue_key(self._redis_url)
        self._key_file = write_private(self.dir / "api-key", api_key)
        for scenario in SCENARIOS.values():
            for keyed in (False, True):
                path = self.dir / f"{scenario.name}-{'keyed' if keyed else 'plain'}.lua"
                bearer = f"Bearer {api_key}" if keyed else None
                self._scripts[scenario.name, keyed] = wrk.write_script(path, bearer, scenario)

        if self._wanted(DIRECT):
            self.targets.append(Target(DIRECT, upstream_url, False, upstream.pid))
        for name, module in ((NAIVE, "bench.naive_proxy"), (LEAN, "bench.lean_proxy")):
            if self._wanted(name):
                peer = self._start_peer(name, module, upstream_url)
                self.targets.append(Target(name, self._base(peer.port), False, peer.child.pid))

        if self._wanted(SIDECAR):
            sidecar = self._sidecar = self._start_sidecar("sidecar", "warning", upstream_url)
            self.targets.append(self._sidecar_target(SIDECAR, sidecar))
        if self._wanted(SIDECAR_INFO):
            info = self._start_sidecar("sidecar-info", "info", upstream_url)
            self.targets.append(self._sidecar_target(SIDECAR_INFO, info))
        if self._workers and self._wanted(SIDECAR_WORKERS):
            pair = self._start_sidecar("sidecar-workers", "warning", upstream_url, workers=2)
            self.targets.append(self._sidecar_target(SIDECAR_WORKERS, pair))
        if self._wanted(SIDECAR_ARCHIVE) and (archive_url := self._start_postgres()) is not None:
            sections: dict[str, Mapping[str, object]] = {
                "audit": {"stream": archive.STREAM, "events_stream": archive.EVENTS_STREAM},
                "archive": {"url": archive_url, "redis_window_s": archive.WINDOW_S},
            }
            archived = self._start_sidecar(
                "sidecar-archive", "warning", upstream_url, sections=sections
            )
            self.targets.append(self._sidecar_target(SIDECAR_ARCHIVE, archived))
        if not self._wanted(SIDECAR_ARCHIVE):
            self.results.archive_note = "not measured: not among --targets"
        if self.options.baseline is not None and self._wanted(SIDECAR_BASELINE):
            old = self._start_sidecar(
                "sidecar-baseline", "warning", upstream_url, checkout=self.options.baseline
            )
            self.targets.append(self._sidecar_target(SIDECAR_BASELINE, old))

        proxy = self._start_nginx(upstream_port, api_key) if self._wanted(NGINX) else None
        if proxy is not None:
            self.targets.append(Target(NGINX, self._base(proxy.port), True, proxy.child.pid))

        # The floods get a sidecar of their own (same config as `sidecar`): argon2 under a
        # flood leaves memory behind that would otherwise blur `sidecar`'s RSS and argon2 count.
        floods = [(n, s) for n, s in ((FLOOD_SINGLE, "single"), (FLOOD_MANY, "many"))]
        floods = [(name, shape) for name, shape in floods if self._wanted(name)]
        if floods:
            flooded = self._start_sidecar("sidecar-flood", "warning", upstream_url)
        for name, shape in floods:
            self.targets.append(self._sidecar_target(name, flooded, flood=shape))
        del api_key  # from here on the key lives only in the 0600 files of the temp folder

    def _wanted(self, name: str) -> bool:
        return self.options.targets is None or name in self.options.targets

    @staticmethod
    def _base(port: int) -> str:
        return f"https://127.0.0.1:{port}"

    def url(self, target: Target, scenario: str) -> str:
        return target.base + SCENARIOS[scenario].path

    def script(self, target: Target, scenario: str) -> Path:
        return self._scripts[scenario, target.keyed]

    def _sidecar_target(
        self, name: str, sidecar: SidecarProcess, flood: str | None = None
    ) -> Target:
        base = self._base(sidecar.ports.proxy)
        return Target(name, base, True, sidecar.child.pid, sidecar, flood=flood)

    def _start_peer(self, name: str, module: str, upstream_url: str) -> Listening:
        """A pass-through proxy of bench/ (naive, lean): same CLI, same certificate."""
        port = free_port()
        argv = python_module(
            module,
            "--port",
            str(port),
            "--upstream",
            upstream_url,
            "--cert-file",
            str(self._cert),
            "--key-file",
            str(self._key),
        )
        return Listening(self._start(name, argv, port), port)

    def _start_nginx(self, upstream_port: int, api_key: str) -> Listening | None:
        binary = nginx.find_nginx()
        if binary is None:
            print(nginx.INSTALL_HINT, flush=True)
            self.results.skipped[NGINX] = "nginx not installed: `apt-get install nginx`"
            return None
        port = free_port()
        prefix = self.dir / "nginx"
        prefix.mkdir()
        config = nginx.write_config(
            prefix,
            port=port,
            upstream_port=upstream_port,
            cert_file=self._cert,
            key_file=self._key,
            api_key=api_key,
        )
        return Listening(self._start("nginx", nginx.argv(binary, prefix, config), port), port)

    def _start_sidecar(
        self,
        name: str,
        log_level: str,
        upstream_url: str,
        *,
        workers: int = 1,
        checkout: Path | None = None,
        sections: Mapping[str, Mapping[str, object]] | None = None,
    ) -> SidecarProcess:
        ports = SidecarPorts(proxy=free_port(), health=free_port())
        config = sidecar_target.write_config(
            self.dir / f"{name}.yaml",
            ports=ports,
            upstream_url=upstream_url,
            redis_url=self._redis_url,
            cert_file=self._cert,
            key_file=self._key,
            spool_dir=self.dir / f"{name}-spool",
            log_level=log_level,
            sections=sections,
        )
        argv = sidecar_target.serve_argv(config, checkout)
        if workers > 1:
            argv += ["--workers", str(workers)]
        # In the checkout: `python -m` puts the working directory first on sys.path.
        child = self._start(name, argv, ports.proxy, cwd=checkout or REPO_ROOT)
        wait_for_port(ports.health, child)
        return SidecarProcess(child, ports)

    def _start_postgres(self) -> str | None:
        """A PostgreSQL for the archive target (fsync on); None, noted, when there is none."""
        try:
            server = EmbeddedPostgres(durable=True)
        except FileNotFoundError as exc:
            self.results.archive_note = f"not measured: {exc}"
            return None
        self._stack.callback(server.close)
        server.start()
        self._postgres = server
        return server.create_database("bench")

    def archive_phase(self) -> None:
        """The archive's throughput, bytes per record and flat Redis (`bench.archive`)."""
        target = next((t for t in self.targets if t.name == SIDECAR_ARCHIVE), None)
        if target is None or self._postgres is None:
            return
        with archive.StreamSampler(self._redis_url) as sampler:
            self._wrk(target, ARCHIVE_LOAD_S)
        # Right after the load: the archiver trims what is older than its window.
        record = archive.sample_record(self._redis_url)
        if record is None:
            self.results.archive_note = "not measured: the archive target wrote no record"
            return
        fill_url = self._postgres.create_database("bench_fill")
        figures = archive.measure_throughput(self._redis_url, fill_url, record)
        sealed_url = self._postgres.create_database("bench_fill_encrypted")
        sealed = archive.encrypted_copy(record)
        figures.encrypted = archive.measure_throughput(self._redis_url, sealed_url, sealed)
        figures.samples = sampler.samples
        figures.note = archive.flat_verdict(sampler.samples, archive.WINDOW_S)
        self.results.archive = figures

    def note_start_rss(self, when: str) -> None:
        """VmRSS of `sidecar` and of `naive`: the floors everything else is above."""
        for target in self.targets:
            if target.name in (SIDECAR, NAIVE):
                label = f"{target.name}, {when}"
                self.results.rss_at_start[label] = _settled_rss(target.pid)

    def check_targets(self) -> None:
        """One request to each target before any load: a wrong route or key shows up here,
        with the target's answer, rather than as a table of errors."""
        context = ssl.create_default_context(cafile=str(self._cert))
        key = self._key_file.read_text()
        for target in self.targets:
            if target.name == FLOOD_MANY:
                continue  # the same process as FLOOD_SINGLE
            if target.name == SIDECAR:
                self._first_use = time.monotonic()  # the key's first verification
            for name in self.options.scenarios:
                _check(target, name, context, key)

    # ---- measurements ---------------------------------------------------------------

    def _wrk(
        self,
        target: Target,
        duration_s: float,
        scenario: str | None = None,
        *,
        connections: int | None = None,
        threads: int | None = None,
    ) -> wrk.WrkResult:
        name = scenario or self.options.scenarios[0]
        return wrk.run(
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
                time.sleep(_PAUSE_BETWEEN_RUNS_S)

    def measure_rounds(self) -> None:
        count = len(self.targets)
        for round_no in range(1, self.options.rounds + 1):
            # Rotate the order each round so that no target always runs first or last.
            shift = (round_no - 1) % count
            for target in self.targets[shift:] + self.targets[:shift]:
                for scenario in self.scenarios_of(target):
                    measurement = self._measure(target, round_no, scenario)
                    self.results.measurements.append(measurement)
                    _print_measurement(measurement)
                    time.sleep(_PAUSE_BETWEEN_RUNS_S)

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
                    _print_measurement(measurement)
                    if target.sidecar is not None:
                        self._trim_audit_streams()
                    time.sleep(_PAUSE_BETWEEN_RUNS_S)

    def _measure(self, target: Target, round_no: int, scenario: str) -> Measurement:
        if target.sidecar is None:
            cpu_before = cpu_seconds(target.pid)
            result = self._wrk(target, self.options.duration_s, scenario)
            return Measurement(
                target.name,
                round_no,
                result,
                cpu_s=_cpu_delta(cpu_before, target.pid),
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
            cpu = _cpu_delta(cpu_before, target.pid)
        after = scrape_metrics(health)
        argon2 = _delta(before, after, "sidecar_argon2_verifications_total")
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
            _wait_for_file(Path(str(path) + ".ready"), child)
            time.sleep(1.0)  # the flood is at full rate before the valid load starts
            cpu_before = cpu_seconds(child.pid)
            yield flood
            flood.client_cpu_s = _cpu_delta(cpu_before, child.pid)
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

    # ---- extras ---------------------------------------------------------------------

    def slowloris(self) -> None:
        """One wrk run on `sidecar` while `bench/slowloris.py` holds N connections in the
        slowloris state: latency and RSS under the attack, and proof the guard cuts them."""
        target = next((t for t in self.targets if t.name == SIDECAR), None)
        if target is None or target.sidecar is None:
            self.results.slowloris_note = "not measured: `sidecar` is not among --targets"
            return
        count = self.options.slowloris
        before = _settled_rss(target.pid)
        path = self.dir / "slowloris.json"
        # Spread the first opens over most of the header timeout: the cuts then come in a
        # steady stream (about N per timeout) rather than all at once.
        ramp_s = HEADER_TIMEOUT_S * 0.8
        argv = python_module(
            "bench.slowloris",
            "--port",
            str(target.sidecar.ports.proxy),
            "--cafile",
            str(self._cert),
            "--count",
            str(count),
            "--ramp-seconds",
            str(ramp_s),
            "--open-deadline",
            "30",
            "--max-seconds",
            str(ramp_s + 30 + self.options.duration_s + 2 * HEADER_TIMEOUT_S + 60),
            "--result",
            str(path),
        )
        child = Child("slowloris", argv, self.dir / "slowloris.log")
        started = time.monotonic()
        try:
            with RssSampler(target.pid) as sampler:
                _wait_for_file(path, child)
                ready = json.loads(path.read_text())
                print(
                    f"  {ready['open']} of {count} slowloris connections open after "
                    f"{ready['seconds']:.1f} s ({ready['server_closed']} cut so far)",
                    flush=True,
                )
                result = self._wrk(target, self.options.duration_s)
                # Hold on until every connection has been cut and reopened twice (a --quick
                # run's wrk is shorter than the header timeout): the second cycle must not
                # add memory to the first if RSS is bounded.
                first_cycle_end = started + 1.0 + ramp_s + HEADER_TIMEOUT_S
                remaining = first_cycle_end + HEADER_TIMEOUT_S - time.monotonic()
                if remaining > 0:
                    time.sleep(remaining)
                ended = time.monotonic()
        finally:
            child.stop()
        final = json.loads(path.read_text())
        if not final.get("final"):
            raise RuntimeError(f"slowloris did not write its final counts:\n{child.log_tail()}")
        self._trim_audit_streams()
        lifetime = final.get("lifetime_s") or {}
        run = SlowlorisRun(
            connections_wanted=count,
            connections_open=int(ready["open"]),
            wrk=result,
            rss_before_mib=before,
            rss_max_mib=sampler.max_mib,
            rss_first_cycle_mib=sampler.max_between(started, first_cycle_end),
            rss_second_cycle_mib=sampler.max_between(first_cycle_end, ended),
            rss_after_mib=_settled_rss(target.pid),
            server_closed=int(final["server_closed"]),
            reconnects=int(final["reconnects"]),
            open_failures={str(k): int(v) for k, v in final["open_failures"].items()},
            lifetime_median_s=lifetime.get("median"),
            seconds=float(final["seconds"]),
            header_timeout_s=HEADER_TIMEOUT_S,
        )
        self.results.slowloris = run
        print(
            f"  sidecar under slowloris {result.requests_per_s:9,.0f} req/s  "
            f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  errors {result.errors}  "
            f"RSS max {run.rss_max_mib:.1f} MiB  cut {run.server_closed}, "
            f"reopened {run.reconnects}",
            flush=True,
        )

    def idle_connections(self) -> None:
        """Idle TLS connections against `sidecar (log info)` (the product's default config, a
        process no flood reached: argon2 under a flood leaves ~20 MiB per hashing thread
        behind; `sidecar` when that one is not among --targets), and against `naive` as the
        control: what the stack itself costs."""
        names = {t.name for t in self.targets}
        chosen = {NAIVE, SIDECAR_INFO if SIDECAR_INFO in names else SIDECAR}
        for target in self.targets:
            if target.name in chosen:
                port = int(target.base.rsplit(":", 1)[1])
                self.results.idle.append(self._idle(target.name, target.pid, port))

    def _idle(self, name: str, pid: int, port: int) -> IdleMemory:
        before = _settled_rss(pid)
        path = self.dir / f"idle-{pid}.json"
        argv = python_module(
            "bench.idle",
            "--port",
            str(port),
            "--cafile",
            str(self._cert),
            "--key-file",
            str(self._key_file),
            "--count",
            str(self.options.idle_connections),
            "--result",
            str(path),
        )
        child = Child("idle", argv, self.dir / "idle.log")
        try:
            _wait_for_file(path, child)
            with RssSampler(pid) as sampler:
                time.sleep(3.0)
            opened = json.loads(path.read_text())
        finally:
            child.stop()
        time.sleep(2.0)
        return IdleMemory(
            target=name,
            connections_wanted=self.options.idle_connections,
            connections_open=int(opened["open"]),
            outcomes={str(k): int(v) for k, v in opened["outcomes"].items()},
            before_mib=before,
            with_idle_mib=sampler.max_mib,
            after_mib=_settled_rss(pid),
        )

    def profile_sidecar(self) -> None:
        py_spy = profile.find_py_spy()
        if py_spy is None:
            print(profile.INSTALL_HINT, flush=True)
            self.results.profile_note = profile.INSTALL_HINT
            return
        target = next((t for t in self.targets if t.name == self.options.profile_target), None)
        if target is None or target.sidecar is None:
            self.results.profile_note = (
                f"not profiled: no sidecar target {self.options.profile_target!r}"
            )
            return
        sidecar = target.sidecar
        seconds = self.options.profile_s
        raw = self.dir / "profile.txt"
        load = threading.Thread(target=self._wrk, args=(target, seconds + 4.0))
        load.start()
        try:
            time.sleep(2.0)
            profile.record(
                py_spy,
                sidecar.child.pid,
                raw,
                duration_s=seconds,
                native=self.options.profile_native,
            )
        finally:
            load.join()
        text = raw.read_text()
        self.options.out.mkdir(parents=True, exist_ok=True)
        (self.options.out / "profile-raw.txt").write_text(text)
        self.results.profile = profile.summarise(text)
        frames = (
            "Python and native (C) frames"
            if self.options.profile_native
            else "Python frames only, so time inside C (OpenSSL, uvloop, the HTTP parser) is "
            "charged to the Python function that called it"
        )
        self.results.profile_note = (
            f"py-spy record, 100 Hz, {seconds} s of wrk load on `{target.name}`; "
            f"{frames}. Raw stacks: bench/out/profile-raw.txt."
        )

    def scan_logs(self) -> None:
        """Warnings and errors each sidecar logged (its log dies with the temp folder)."""
        for target in self.targets:
            if target.sidecar is None or target.name == FLOOD_MANY:
                continue
            name = target.name if target.flood is None else "sidecar + floods"
            found = logscan.complaints(target.sidecar.child.log_path)
            if found:
                self.results.log_complaints[name] = dict(found.most_common(10))

    def count_argon2(self, finished: float) -> None:
        sidecar = self._sidecar
        if sidecar is None:
            return  # `sidecar` is not among --targets
        metrics = scrape_metrics(sidecar.ports.health)
        self.results.argon2 = Argon2Count(
            during_rounds=sum(
                m.argon2 or 0.0 for m in self.results.measurements if m.target == SIDECAR
            ),
            total=metrics.get("sidecar_argon2_verifications_total", float("nan")),
            loaded_s=finished - self._first_use,
            cache_ttl_s=sidecar_target.CACHE_TTL_S,
            cache_hits=metrics.get('sidecar_key_cache_total{result="hit"}', 0.0),
            cache_misses=metrics.get('sidecar_key_cache_total{result="miss"}', 0.0),
            requests_by_status=_requests_by_status(metrics),
            audit_written=metrics.get('sidecar_audit_records_total{outcome="written"}', 0.0),
        )


class FloodResult:
    """The flood's JSON summary, readable once the flood process has stopped, plus the CPU
    the flood client itself used while the valid load ran (it competes for the same cores)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.client_cpu_s: float | None = None

    def read(self) -> dict[str, object] | None:
        try:
            loaded = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(loaded, dict):
            return None
        loaded["client_cpu_s"] = self.client_cpu_s
        return loaded


_STATUS_LABEL = re.compile(r'status="(\d+)"')


def _requests_by_status(metrics: dict[str, float]) -> dict[str, float]:
    """`sidecar_requests_total` summed per status over routes."""
    counts: dict[str, float] = {}
    for name, value in metrics.items():
        match = _STATUS_LABEL.search(name)
        if name.startswith("sidecar_requests_total") and match:
            counts[match.group(1)] = counts.get(match.group(1), 0.0) + value
    return dict(sorted(counts.items()))


def _check(target: Target, scenario: str, context: ssl.SSLContext, key: str) -> None:
    """One request of the scenario; raises with the answer unless it is a 200."""
    host_port = target.base.split("/")[2]
    connection: http.client.HTTPConnection
    if target.base.startswith("https:"):
        connection = http.client.HTTPSConnection(host_port, context=context, timeout=10)
    else:
        connection = http.client.HTTPConnection(host_port, timeout=10)
    request = SCENARIOS[scenario]
    headers = {"Content-Type": "application/json"} if request.body is not None else {}
    if target.keyed:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request(request.method, request.path, body=request.body, headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(
            f"{target.name} answered {response.status} to a valid {scenario} request: "
            f"{body[:500].decode(errors='replace')}"
        )


def _print_measurement(measurement: Measurement) -> None:
    extra = ""
    if measurement.flood is not None:
        extra = f"  flood {measurement.flood.get('statuses')}"
    phase = f"light {measurement.round}" if measurement.light else f"round {measurement.round}"
    print(
        f"  {phase} {measurement.target:28} {measurement.scenario:4} "
        f"{measurement.wrk.requests_per_s:9,.0f} req/s  "
        f"p50 {measurement.wrk.p50_ms:7.2f} ms  p99 {measurement.wrk.p99_ms:7.2f} ms"
        f"  errors {measurement.wrk.errors}{extra}",
        flush=True,
    )


def _cpu_delta(before: float | None, pid: int) -> float | None:
    after = cpu_seconds(pid)
    return None if before is None or after is None else after - before


def _delta(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    if name not in after:
        return None
    return after[name] - before.get(name, 0.0)


def _wait_for_file(path: Path, child: Child) -> None:
    deadline = time.monotonic() + _HELPER_DEADLINE_S
    while not path.exists():
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} not ready within {_HELPER_DEADLINE_S}s")
        time.sleep(0.05)


def _settled_rss(pid: int) -> float:
    """The highest of a few VmRSS readings over a second (0 when the process is gone)."""
    readings = []
    for _ in range(5):
        readings.append(rss_mib(pid) or 0.0)
        time.sleep(0.2)
    return max(readings)


def run(options: Options) -> Results:
    """The whole benchmark; returns the results after printing and writing the report."""
    raise_open_files_limit()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sidecar-bench-")))
        workers = serve_supports_workers()
        bench = Bench(options, stack, workdir, workers=workers)
        bench.results.workers = (
            "workers: not measured (serve --workers not implemented)"
            if not workers
            else "workers: not measured (not among --targets)"
            if options.targets is not None and SIDECAR_WORKERS not in options.targets
            else f"workers: `{SIDECAR_WORKERS}` against `{SIDECAR}` (1 worker) in the tables above"
        )
        print(bench.results.workers, flush=True)
        print("starting redis, upstream, naive proxy, sidecars, nginx …", flush=True)
        bench.start()
        bench.note_start_rss("started, no request yet")
        bench.check_targets()
        bench.note_start_rss("after one request (the sidecar's first argon2 run)")
        print(f"warm-up ({options.warmup_s:g} s per target)", flush=True)
        bench.warm_up()
        print(f"{options.rounds} rounds of {options.duration_s:g} s, rotating order", flush=True)
        bench.measure_rounds()
        if options.light_connections > 0:
            print(f"light load: {options.light_connections} connections, 1 thread", flush=True)
            bench.light_load()
        finished = time.monotonic()
        bench.count_argon2(finished)
        if any(t.name == SIDECAR_ARCHIVE for t in bench.targets):
            print(f"the audit archive ({ARCHIVE_LOAD_S:g} s of load, then a drain)", flush=True)
            bench.archive_phase()
        if options.slowloris > 0:
            print(f"sidecar under {options.slowloris} slowloris connections", flush=True)
            try:
                bench.slowloris()
            except RuntimeError as exc:  # reported; the rest of the run still has its figures
                print(f"  slowloris phase failed: {exc}", flush=True)
                bench.results.slowloris_note = f"failed: {exc}"
        else:
            bench.results.slowloris_note = "not measured: --slowloris 0"
        print(f"{options.idle_connections} idle TLS connections", flush=True)
        bench.idle_connections()
        if options.profile:
            print(f"py-spy profile ({options.profile_s} s)", flush=True)
            bench.profile_sidecar()
        else:
            bench.results.profile_note = "not profiled: run with --profile (needs py-spy)"
        bench.scan_logs()
        results = bench.results
    results.notes += NOTES
    text = report.render(results)
    print()
    print(text)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "latest.md").write_text(text + "\n")
    (options.out / "latest.json").write_text(
        json.dumps(dataclasses.asdict(results), indent=1, default=str) + "\n"
    )
    return results

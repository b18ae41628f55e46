"""One benchmark run, start to finish: start every target, warm up, alternate rounds, extras,
report. Everything started here is stopped on the way out, whatever happens."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import ssl
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from bench import archive, nginx, report, sidecar_target, wrk
from bench.machine import machine_description
from bench.model import Listening, Options, SidecarProcess, Target
from bench.payloads import SCENARIOS
from bench.phases import ARCHIVE_LOAD_S, Phases
from bench.private import write_private
from bench.processes import REPO_ROOT, Child, python_module, raise_open_files_limit, wait_for_port
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
    Results,
)
from bench.sidecar_target import SidecarPorts, serve_supports_workers
from bench.support import check_target, settled_rss
from sidecar.runtime.selfsigned import write_self_signed
from sidecar.storage.embedded import EmbeddedRedis, free_port
from sidecar.storage.embedded_postgres import EmbeddedPostgres

__all__ = ["Bench", "Options", "run"]

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


class Bench(Phases):
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
        for index, (name, checkout) in enumerate(self.options.steps):
            step = self._start_sidecar(
                f"sidecar-step{index}", "warning", upstream_url, checkout=checkout
            )
            self.targets.append(self._sidecar_target(name, step))
            self.results.steps.append(name)

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

    def note_start_rss(self, when: str) -> None:
        """VmRSS of `sidecar` and of `naive`: the floors everything else is above."""
        for target in self.targets:
            if target.name in (SIDECAR, NAIVE):
                label = f"{target.name}, {when}"
                self.results.rss_at_start[label] = settled_rss(target.pid)

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
                check_target(target, name, context, key)


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

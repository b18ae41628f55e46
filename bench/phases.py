"""The phases after the rounds: the archive, slowloris, idle connections, the profile, the
argon2 count and the sidecars' logs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from bench import archive, logscan, profile, sidecar_target
from bench.model import SidecarProcess
from bench.processes import Child, python_module
from bench.procfs import RssSampler
from bench.results import (
    FLOOD_MANY,
    NAIVE,
    SIDECAR,
    SIDECAR_ARCHIVE,
    SIDECAR_INFO,
    Argon2Count,
    IdleMemory,
    SlowlorisRun,
)
from bench.rounds import Rounds
from bench.sidecar_target import scrape_metrics
from bench.support import requests_by_status, settled_rss, wait_for_file
from sidecar.config import Limits
from sidecar.storage.embedded_postgres import EmbeddedPostgres

# Sustained load on the archive target: four windows, so the last third is well past the first.
ARCHIVE_LOAD_S = 45.0
# The sidecar's config leaves `limits` at the product's defaults.
HEADER_TIMEOUT_S = float(Limits.model_fields["header_timeout_s"].default)


class Phases(Rounds):
    """The extra phases of `bench.run.Bench` (a mixin: Bench owns the attributes below)."""

    _key_file: Path
    _postgres: EmbeddedPostgres | None
    _sidecar: SidecarProcess | None
    _first_use: float

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

    def slowloris(self) -> None:
        """One wrk run on `sidecar` while `bench/slowloris.py` holds N connections in the
        slowloris state: latency and RSS under the attack, and proof the guard cuts them."""
        target = next((t for t in self.targets if t.name == SIDECAR), None)
        if target is None or target.sidecar is None:
            self.results.slowloris_note = "not measured: `sidecar` is not among --targets"
            return
        count = self.options.slowloris
        before = settled_rss(target.pid)
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
                wait_for_file(path, child)
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
            rss_after_mib=settled_rss(target.pid),
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
        before = settled_rss(pid)
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
            wait_for_file(path, child)
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
            after_mib=settled_rss(pid),
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
            requests_by_status=requests_by_status(metrics),
            audit_written=metrics.get('sidecar_audit_records_total{outcome="written"}', 0.0),
        )

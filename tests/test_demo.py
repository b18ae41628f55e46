"""SPEC §10, §15: `sidecar demo` runs the whole thing with a real PostgreSQL it starts itself (the
one on PATH, else the pgserver wheel's) as the audit archive, and prints the `audit query`
command that reads a request's record back from it; Ctrl-C stops it all."""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import redis.asyncio as aioredis
import yaml

from sidecar.storage.embedded import EmbeddedRedis
from tests.helpers import sidecar_env, wait_until, write_config
from tests.keysupport import sidecar_cli
from tests.readsupport import json_lines

START_DEADLINE_S = 60.0  # initdb, migrate and a sidecar on two shared CPUs
ARCHIVED_DEADLINE_S = 20.0
STOP_DEADLINE_S = 20.0


async def read_banner(process: asyncio.subprocess.Process) -> str:
    """The demo's stdout up to its last line of instructions."""
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or lines[-1] != "Ctrl-C stops everything.":
        line = await process.stdout.readline()
        assert line, "the demo exited: " + "".join(lines)
        lines.append(line.decode().rstrip("\n"))
    return "\n".join(lines)


def archived_ids(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT request_id FROM audit_records ORDER BY stream_ms").fetchall()
    return [request_id for (request_id,) in rows]


async def test_the_demo_archives_in_its_own_postgresql_and_shows_how_to_query_it(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    document = {"listen": {"port": 0}, "health": {"port": 0}, "redis": {"url": redis_server.url}}
    config = write_config(tmp_path / "demo.yaml", document)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "demo", "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env=sidecar_env(), cwd=tmp_path,
    )  # fmt: skip
    try:
        banner = await asyncio.wait_for(read_banner(process), START_DEADLINE_S)
        assert re.search(r"archive +postgresql://\S+ \(embedded, stopped on exit\)", banner)
        assert re.search(r"dashboard +https://localhost:\d+/ ", banner), banner  # SPEC §16
        assert "An admin key (scopes sidecar:read, sidecar:keys, sidecar:audit)" in banner
        proxy = re.search(r"proxy +(https://localhost:\d+)", banner)
        cert = re.search(r"certificate (\S+\.pem)", banner)
        key = re.search(r"shown this once:\n +(\S+)", banner)
        query = re.search(r"^ +(\S+ audit query --since 1h --config \S+)$", banner, re.MULTILINE)
        assert proxy, banner
        assert cert, banner
        assert key, banner
        assert query, banner

        context = ssl.create_default_context(cafile=cert.group(1))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            headers = {"Authorization": f"Bearer {key.group(1)}"}
            async with session.get(proxy.group(1) + "/v1/orders/42", headers=headers) as response:
                assert response.status == 200
                request_id = response.headers["X-Request-Id"]

        # The printed command names a configuration with the demo's archive: the record lands
        # there, and is read back from there once Redis no longer holds it.
        argv = shlex.split(query.group(1))
        reading: dict[str, Any] = yaml.safe_load(await asyncio.to_thread(Path(argv[-1]).read_text))
        archive_url = reading["archive"]["url"]

        async def archived() -> bool:
            return request_id in await asyncio.to_thread(archived_ids, archive_url)

        await wait_until(archived, within=ARCHIVED_DEADLINE_S, interval=0.1)
        await redis_client.delete("sidecar:audit")
        result = await sidecar_cli(*argv[argv.index("audit") :], "--json")
        assert [record["request_id"] for record in json_lines(result)] == [request_id]

        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), STOP_DEADLINE_S) == 0
        try:
            psycopg.connect(archive_url, connect_timeout=2).close()
        except psycopg.OperationalError:
            pass  # stopped with the demo, as it said
        else:
            raise AssertionError("the demo's PostgreSQL still answers after the demo stopped")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

"""SPEC §11: SIGTERM drains: not ready at once, keep serving for drain_s, stop accepting,
let in-flight requests finish within grace_s, exit 0.

The sidecar runs as a real `python -m sidecar serve` process; the upstream it forwards to
runs in this test's event loop, so the test decides when the in-flight request may finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from sidecar.storage.embedded import EmbeddedRedis
from sidecar.tasks import BackgroundTasks
from tests.helpers import (
    accepts_connections,
    free_port,
    readyz_status,
    serve_config,
    sidecar_process,
    wait_ready,
    wait_until,
)
from tests.upstream import UpstreamServer

DRAIN_S = 1.0
GRACE_S = 5.0


@pytest.mark.slow
async def test_sigterm_drains_then_finishes_in_flight_requests(
    tmp_path: Path,
    cert_files: tuple[Path, Path],
    redis_server: EmbeddedRedis,
    upstream: UpstreamServer,
    client_ssl: ssl.SSLContext,
) -> None:
    proxy_port, health_port = free_port(), free_port()
    config = serve_config(
        tmp_path / "sidecar.yaml",
        proxy_port=proxy_port,
        health_port=health_port,
        cert_files=cert_files,
        upstream_url=upstream.url,
        redis_url=redis_server.url,
        upstream={"timeout_s": 10},
        shutdown={"drain_s": DRAIN_S, "grace_s": GRACE_S},
    )
    proxy_url = f"https://localhost:{proxy_port}"
    async with (
        sidecar_process(config, tmp_path / "sidecar.log") as sidecar,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as session,
    ):
        await wait_ready(sidecar, session, health_port)

        async def in_flight_request() -> tuple[int, str]:
            async with session.get(proxy_url + "/public/wait") as response:
                return response.status, await response.text()

        in_flight = asyncio.create_task(in_flight_request())
        await asyncio.wait_for(upstream.entered.wait(), 5)

        sidecar.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # Not ready at once: well inside the drain window.
        async def not_ready() -> bool:
            return await readyz_status(session, health_port) == 503

        await wait_until(not_ready, within=DRAIN_S / 2)

        # Still serving during the drain window, but asking clients to go elsewhere.
        async with session.get(proxy_url + "/public/during-drain") as response:
            assert response.status == 200
            assert response.headers.get("Connection", "").lower() == "close"
        assert time.monotonic() - signalled < DRAIN_S, "the check above ran past the window"

        # After the drain window the listener closes; the held request is still in flight.
        async def stopped_accepting() -> bool:
            return not await accepts_connections(proxy_port)

        await wait_until(stopped_accepting, within=DRAIN_S + 2)
        assert time.monotonic() - signalled >= DRAIN_S * 0.9  # not before the drain ended
        assert not in_flight.done()
        assert sidecar.process.returncode is None

        upstream.release.set()
        status, body = await asyncio.wait_for(in_flight, 5)
        assert (status, body) == (200, "released")

        returncode = await sidecar.wait_exit(within=GRACE_S)
        assert returncode == 0, sidecar.log()
        assert "Traceback" not in sidecar.log()
    assert [seen.path for seen in upstream.seen] == ["/public/wait", "/public/during-drain"]


async def test_background_tasks_stop_even_when_a_cancel_is_swallowed() -> None:
    started = asyncio.Event()
    handles: list[asyncio.Task[object]] = []

    async def like_a_redis_command_on_python_3_11() -> None:
        task = asyncio.current_task()
        assert task is not None
        handles.append(task)
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            # A redis command in flight; the suppression is what 3.11's wait_for does when
            # the command completes in the same tick as the cancel.
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)  # keep_trimmed's hourly wait

    tasks = BackgroundTasks()
    tasks.start(like_a_redis_command_on_python_3_11())
    await asyncio.wait_for(started.wait(), 1)
    try:
        async with asyncio.timeout(2):
            await tasks.cancel_all()
    finally:
        for task in handles:  # leave no task behind, whatever cancel_all did
            task.cancel()
        await asyncio.gather(*handles, return_exceptions=True)
    assert all(task.done() for task in handles)

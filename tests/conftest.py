"""The test harness: a real redis-server, a real PostgreSQL, trustme certificates, a real
upstream, real TLS.

Nothing here is mocked: the sidecar under test binds real loopback ports and is reached over
real TLS; Redis is a real `redis-server` and PostgreSQL a real `postgres` this session starts on
free ports.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import trustme

from sidecar.config import Settings
from sidecar.runtime.serve import Running, running
from sidecar.runtime.tls import check_certificate
from sidecar.storage.embedded import EmbeddedRedis
from sidecar.storage.embedded_postgres import EmbeddedPostgres
from tests.postgres import fresh_database
from tests.rawupstream import RawUpstream, serving_raw
from tests.upstream import UpstreamServer, start_upstream


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
async def redis_outage(redis_server: EmbeddedRedis) -> AsyncIterator[EmbeddedRedis]:
    """The tests' Redis, for the test to stop; running again afterwards whatever happened."""
    try:
        yield redis_server
    finally:
        if not redis_server.running:
            redis_server.start()


@pytest.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """A client on a freshly emptied database."""
    if not redis_server.running:  # a fault test may have stopped it
        redis_server.start()
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """One PostgreSQL for the session, started on first use (tests without it pay nothing)."""
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture
def archive_url(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """`postgresql://postgres@127.0.0.1:<port>/<db>`: this test's own database, dropped after."""
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture
def postgres_outage(postgres_server: EmbeddedPostgres) -> Iterator[EmbeddedPostgres]:
    """The tests' PostgreSQL, for the test to stop; running again afterwards whatever happened."""
    try:
        yield postgres_server
    finally:
        if not postgres_server.running:
            postgres_server.start()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def cert_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


@pytest.fixture(scope="session")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    """An upstream that answers from hand-written bytes (`tests.rawupstream`)."""
    async with serving_raw() as upstream:
        yield upstream


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamServer]:
    async with start_upstream() as server:
        yield server


SettingsFactory = Callable[..., Settings]

CLIENT_TIMEOUT_S = 15.0
TEARDOWN_TIMEOUT_S = 15.0  # above the test settings' shutdown.grace_s


@pytest.fixture
def make_settings(
    cert_files: tuple[Path, Path],
    redis_server: EmbeddedRedis,
    upstream: UpstreamServer,
    tmp_path: Path,
) -> SettingsFactory:
    """Settings for a sidecar on free loopback ports; keyword sections override the defaults."""

    def build(**sections: Any) -> Settings:
        document: dict[str, Any] = {
            "listen": {"address": "127.0.0.1", "port": 0},
            "health": {"address": "127.0.0.1", "port": 0},
            "tls": {"cert_file": str(cert_files[0]), "key_file": str(cert_files[1])},
            "upstream": {"url": upstream.url, "timeout_s": 5},
            "redis": {"url": redis_server.url},
            "audit": {"spool_dir": str(tmp_path / "spool")},
            "shutdown": {"drain_s": 0, "grace_s": 5},
            "routes": [{"path": "/public/**", "public": True}],
        }
        for name, value in sections.items():
            if isinstance(value, dict) and isinstance(document.get(name), dict):
                document[name] = {**document[name], **value}
            else:
                document[name] = value
        return Settings(**document)

    return build


class Proxy:
    """A running sidecar and an HTTPS client that trusts its certificate."""

    def __init__(self, server: Running, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.url = f"https://localhost:{server.proxy_port}"
        self.health_url = f"http://127.0.0.1:{server.health_port}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, self.url + path, **kwargs)


ProxyFactory = Callable[..., Any]


@pytest.fixture
async def start_proxy(
    make_settings: SettingsFactory, client_ssl: ssl.SSLContext
) -> AsyncIterator[ProxyFactory]:
    """`await start_proxy(**sections)` runs a sidecar until the test ends."""
    stacks: list[Any] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(**sections: Any) -> Proxy:
        settings = make_settings(**sections)
        context = running(settings, check_certificate(settings.tls))
        server = await context.__aenter__()
        stacks.append(context)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl),
            # A proxy that never answers fails the test quickly instead of hanging the suite.
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
        )
        sessions.append(session)
        return Proxy(server, session)

    yield start
    for session in sessions:
        await session.close()
    stuck = 0
    for context in reversed(stacks):
        try:
            # Bounded: a shutdown that hangs fails this test instead of the whole run.
            async with asyncio.timeout(TEARDOWN_TIMEOUT_S):
                await context.__aexit__(None, None, None)
        except TimeoutError:
            stuck += 1
    if stuck:
        pytest.fail(
            f"{stuck} sidecar(s) did not shut down within {TEARDOWN_TIMEOUT_S}s (see "
            "test_shutdown.py::test_background_tasks_stop_even_when_a_cancel_is_swallowed)"
        )


@pytest.fixture
async def proxy(start_proxy: ProxyFactory) -> Proxy:
    result: Proxy = await start_proxy()
    return result


# -- no task outlives its test ----------------------------------------------------------------

TASK_PATIENCE_S = 10.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every async test gets `tasks_end_with_their_test`, set up first so it is torn down last,
    after every other fixture (a running sidecar's own shutdown included)."""
    for item in items:
        function = getattr(item, "obj", None)
        fixtures = getattr(item, "fixturenames", None)
        marker = item.get_closest_marker("asyncio")
        # Only on a loop of the test's own: a package-scoped loop (the browser tests) keeps
        # its sidecar's tasks running from one test to the next, on purpose.
        shared_loop = marker is not None and marker.kwargs.get("loop_scope", "function") != (
            "function"
        )
        if inspect.iscoroutinefunction(function) and isinstance(fixtures, list) and not shared_loop:
            fixtures.insert(0, "tasks_end_with_their_test")


@pytest.fixture
async def tasks_end_with_their_test() -> AsyncIterator[None]:
    """Cancel, repeatedly and for a bounded time, what is still running after a test. One
    cancel is not always enough on Python 3.11 (`asyncio.wait_for` and `asyncio.timeout` can
    swallow one that lands as their inner wait completes, gh-86296), and pytest-asyncio's
    loop teardown then waits for such a task forever: a CI run hung there. A task that still
    will not stop fails the test, naming it, instead of hanging the session."""
    yield
    current = asyncio.current_task()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TASK_PATIENCE_S
    pending = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _done, still = await asyncio.wait(pending, timeout=0.1)
        pending = list(still)
    if pending:
        pytest.fail(f"tasks outlived the test: {[task.get_coro() for task in pending]}")

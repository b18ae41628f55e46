"""SPEC §4/§5 under a guessing flood: well-formed keys with a known id and wrong secrets (an
unknown id costs no argon2 at all: issue 16), from 200 clients at once, with the per-IP
failed-auth limit switched off so that only the bounded argon2 queue and its CPU budget stand
in the way. Every guess gets 401 or 503 (queue full, budget spent) — never 200, never another
5xx — and a client with a valid, cached key is served promptly all the while (argon2 runs in
a bounded pool, off the event loop; a cached key never waits for it)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis

from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until
from tests.keysupport import (
    bearer,
    issue,
    metric_value,
    wait_for_invalidation_listeners,
    with_other_secret,
)

GUESSERS = 200
MAX_ROUNDS = 5  # guesses per guesser, at most
PROBES = 3  # requests with the valid key, one after the other, during the flood
ROUTES = [{"path": "/v1/**", "scopes": ["orders:read"]}]
TIMEOUT = aiohttp.ClientTimeout(total=20)


async def argon2_runs(proxy: Proxy) -> float:
    async with proxy.session.get(proxy.health_url + "/metrics") as response:
        text = await response.text()
    return metric_value(text, "sidecar_argon2_verifications_total")


async def test_a_guessing_flood_gets_401_or_503_and_a_cached_key_is_still_served(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis, client_ssl: ssl.SSLContext
) -> None:
    # The real argon2 parameters (SPEC §12), so the queue actually fills.
    proxy: Proxy = await start_proxy(routes=ROUTES, rate_limits={"failed_auth_per_ip": None})
    await wait_for_invalidation_listeners(redis_client)
    valid = await issue(redis_client, proxy.server.sidecar.settings, "valid", ["orders:read"])
    target = await issue(redis_client, proxy.server.sidecar.settings, "target", ["orders:read"])

    # The valid client keeps one connection, so its request during the flood waits for
    # neither a TLS handshake nor a free connection.
    valid_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=client_ssl, limit=1), timeout=TIMEOUT
    )
    flood_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=client_ssl, limit=GUESSERS), timeout=TIMEOUT
    )
    async with valid_session, flood_session:

        async def valid_request() -> tuple[int, float]:
            started = time.monotonic()
            url = proxy.url + "/v1/orders/1"
            async with valid_session.get(url, headers=bearer(valid.key)) as response:
                await response.read()
                return response.status, time.monotonic() - started

        assert (await valid_request())[0] == 200  # verified once, cached from now on
        runs_before = await argon2_runs(proxy)

        async def guess() -> Guess:
            key = with_other_secret(target.key)  # well-formed, checksum right, wrong secret
            url = proxy.url + "/v1/orders/1"
            async with flood_session.get(url, headers=bearer(key)) as response:
                await response.read()
                return Guess(response.status, response.headers.get("Retry-After"))

        # GUESSERS at once, each guessing again until the valid request has been answered:
        # the flood lasts for as long as the probe, however fast this machine's argon2 is.
        probed = asyncio.Event()
        answers: list[Guess] = []

        async def guesser() -> None:
            for _ in range(MAX_ROUNDS):
                answers.append(await guess())
                if probed.is_set():
                    return

        flood = [asyncio.create_task(guesser()) for _ in range(GUESSERS)]
        try:

            async def flood_under_way() -> bool:
                return await argon2_runs(proxy) > runs_before

            await wait_until(flood_under_way, within=10)
            probes = [await valid_request() for _ in range(PROBES)]
            still_flooding = not all(task.done() for task in flood)
        finally:
            probed.set()
            await asyncio.gather(*flood)

    for status, seconds in probes:
        assert status == 200
        assert seconds < 2.0, f"a cached key waited {seconds:.2f}s behind the guesses"
    assert still_flooding, "the valid request was not served during the flood"
    statuses = Counter(answer.status for answer in answers)
    assert set(statuses) <= {401, 503}, statuses
    assert statuses[401] > 0, statuses  # the guesses were looked at, not all shed
    for answer in answers:
        if answer.status == 503:
            assert answer.retry_after is not None
            assert int(answer.retry_after) >= 1
    # Each guess costs at most one argon2 run; shed ones cost none.
    runs = await argon2_runs(proxy) - runs_before
    assert runs <= statuses[401], (runs, statuses)


@dataclass(frozen=True)
class Guess:
    status: int
    retry_after: str | None

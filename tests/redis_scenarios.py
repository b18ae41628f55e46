"""What the sidecar must do on any Redis topology (SPEC §13), written once and run by
`test_redis_cluster.py` and `test_redis_sentinel.py` against real topologies: keys through
the command line, auth and audit through a real sidecar, pub/sub revocation, and a failover
of the server that holds the keys.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sidecar.audit.retention import trim_older_than
from sidecar.config import Argon2
from sidecar.config import Redis as RedisSettings
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.store import INVALIDATE_CHANNEL, KeyStore, NewKey
from sidecar.storage.client import RedisClient, create_redis
from sidecar.storage.embedded import EmbeddedRedis
from tests.authsupport import ROUTES, Answer, call
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until, write_config
from tests.keysupport import FAST_ARGON2, FAST_KEYS, Completed, keys_section, metric_value
from tests.keysupport import sidecar_cli as run_sidecar_cli

AUDIT_STREAM, EVENTS_STREAM = "sidecar:audit", "sidecar:auth-events"
# A probe write in the key store's slot: it succeeds again once that slot has a master.
PROBE_KEY = "sidecar:{keys}:failover-probe"
REVOCATION_DEADLINE_S = 1.0  # SPEC §4: a revoked key fails everywhere within 1 second
FAILOVER_DEADLINE_S = 30.0


@dataclass
class Topology:
    """What a scenario needs to know about the Redis under test."""

    redis: dict[str, Any]  # the sidecar's `redis:` settings section
    servers: Callable[[], list[EmbeddedRedis]]  # the data servers, for counting subscribers
    doomed: EmbeddedRedis  # the master holding the keys: the one a failover test kills
    replica_synced: Callable[[], bool]
    promoted: Callable[[], bool]


@dataclass
class Outage:
    writes_unavailable_s: float
    served_meanwhile: int  # requests answered with a cached key while writes failed
    spooled: float
    replayed: float


@asynccontextmanager
async def topology_client(topology: Topology) -> AsyncIterator[RedisClient]:
    """A client of the kind the sidecar builds for this topology (patient: it is the test's)."""
    client = create_redis(RedisSettings(**topology.redis, timeout_s=2))
    try:
        yield client
    finally:
        await client.aclose()


async def subscribers(topology: Topology) -> dict[int, int]:
    """Invalidation subscribers per live server (port → count)."""
    counts = {}
    for server in topology.servers():
        if not server.running:
            continue
        async with aioredis.Redis(port=server.port, socket_timeout=2) as client:
            answer = await client.pubsub_numsub(INVALIDATE_CHANNEL)
            counts[server.port] = int(answer[0][1]) if answer else 0
    return counts


async def one_subscriber(topology: Topology) -> int:
    """Wait until exactly one sidecar listens for invalidations; return its server's port."""
    where: list[int] = []

    async def subscribed() -> bool:
        counts = await subscribers(topology)
        where[:] = [port for port, count in counts.items() if count]
        return sum(counts.values()) == 1

    await wait_until(subscribed, within=10, interval=0.05)
    return where[0]


async def listen_on(topology: Topology, server: EmbeddedRedis) -> None:
    """Move the sidecar's invalidation feed onto `server`, by cutting it wherever else it is:
    the listener must then resubscribe on another server, whichever it picks."""
    for _ in range(3 * len(topology.servers())):
        port = await one_subscriber(topology)
        if port == server.port:
            return
        async with aioredis.Redis(port=port, socket_timeout=2) as client:
            await client.client_kill_filter(_type="pubsub")
        await wait_until(partial(_moved_from, topology, port), within=10, interval=0.05)
    raise AssertionError(f"the invalidation feed never reached port {server.port}")


async def _moved_from(topology: Topology, port: int) -> bool:
    counts = await subscribers(topology)
    return sum(counts.values()) == 1 and counts.get(port, 0) == 0


async def stream_counts(client: RedisClient, stream: str, field: bytes) -> Counter[str]:
    """How many entries of the stream carry each request id."""
    entries: Any = await client.xrange(stream)
    return Counter(json.loads(fields[field])["request_id"] for _id, fields in entries)


async def wait_recorded(
    client: RedisClient, request_ids: Iterable[str], *, stream: str = AUDIT_STREAM
) -> Counter[str]:
    """Wait until every request id is in the stream; return the counts per id."""
    wanted = set(request_ids)
    field = b"record" if stream == AUDIT_STREAM else b"event"
    counts: Counter[str] = Counter()

    async def all_there() -> bool:
        counts.clear()
        counts.update(await stream_counts(client, stream, field))
        return wanted <= set(counts)

    await wait_until(all_there, within=15, interval=0.05)
    return counts


async def refused_within(proxy: Proxy, keys: Iterable[str], within: float) -> None:
    pending = list(keys)

    async def all_refused() -> bool:
        for key in list(pending):
            answer = await call(proxy, "/v1/orders/1", key=key)
            if answer.status == 401:
                pending.remove(key)
        return not pending

    await wait_until(all_refused, within=within)


async def served(proxy: Proxy, key: str, *, within: float = 10) -> Answer:
    """Poll until the proxy answers 200 for `key` (its Redis client may still be finding the
    new master); return that answer."""
    answers: list[Answer] = []

    async def ok() -> bool:
        answers.append(await call(proxy, "/v1/orders/1", key=key))
        return answers[-1].status == 200

    await wait_until(ok, within=within, interval=0.05)
    return answers[-1]


async def issue(client: RedisClient, name: str) -> NewKey:
    return await KeyStore(client).create(
        name=name,
        scopes=["orders:read"],
        prefix="sk",
        environment="live",
        hasher=SecretHasher(Argon2(**FAST_ARGON2)),
    )


async def cli(config: Path, *args: str) -> dict[str, Any] | list[Any]:
    """`python -m sidecar ARGS --json --config CONFIG`, which must succeed."""
    result: Completed = await run_sidecar_cli(*args, "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] | list[Any] = json.loads(result.stdout)
    return document


async def metrics(proxy: Proxy) -> str:
    async with proxy.session.get(proxy.health_url + "/metrics") as response:
        assert response.status == 200
        return await response.text()


async def keys_audit_events_and_revocation(
    start_proxy: ProxyFactory, topology: Topology, tmp_path: Path
) -> None:
    """A key made by the CLI works through the sidecar, its request is audited once, a
    refusal becomes an event, rotation and revocation (within 1 s, through pub/sub) work,
    the rate limits count in Redis, and the CLI reads the trail back."""
    proxy: Proxy = await start_proxy(
        redis=topology.redis,
        keys=FAST_KEYS,
        routes=ROUTES,
        rate_limits={"per_key": {"requests": 1000, "per_seconds": 60}},
    )
    config = write_config(tmp_path / "cli.yaml", {"redis": topology.redis, "keys": FAST_KEYS})
    async with topology_client(topology) as client:
        await one_subscriber(topology)
        created = await cli(config, "keys", "create", "--name", "billing", "--scope", "orders:read")
        assert isinstance(created, dict)
        ok = await call(proxy, "/v1/orders/1", key=created["key"])
        assert ok.status == 200, ok.body
        assert await client.get(f"sidecar:rl:key:{created['id']}") == b"1"  # the limit's script

        refused = await call(proxy, "/v1/orders/1")
        assert refused.status == 401
        events = await wait_recorded(client, [refused.request_id], stream=EVENTS_STREAM)
        assert events[refused.request_id] == 1
        entries: Any = await client.xrange(EVENTS_STREAM)
        kinds = {json.loads(f[b"event"])["request_id"]: json.loads(f[b"event"]) for _, f in entries}
        assert kinds[refused.request_id]["event"] == "missing_key"

        await wait_recorded(client, [ok.request_id])
        tail = await run_sidecar_cli("audit", "tail", "-n", "50", "--json", "--config", str(config))
        assert tail.returncode == 0, tail.stderr
        tailed = [json.loads(line)["request_id"] for line in tail.stdout.splitlines()]
        assert tailed.count(ok.request_id) == 1

        rotated = await cli(config, "keys", "rotate", "billing", "--grace", "1h")
        assert isinstance(rotated, dict)
        assert (await call(proxy, "/v1/orders/1", key=rotated["key"])).status == 200
        assert (await call(proxy, "/v1/orders/1", key=created["key"])).status == 200  # grace

        await cli(config, "keys", "revoke", "billing")
        started = time.monotonic()
        await refused_within(proxy, [created["key"], rotated["key"]], REVOCATION_DEADLINE_S)
        assert time.monotonic() - started <= REVOCATION_DEADLINE_S

        await cli(config, "keys", "delete", "billing")
        assert await cli(config, "keys", "list") == []

        counts = await stream_counts(client, AUDIT_STREAM, b"record")
        assert counts[ok.request_id] == 1  # still once, after everything since
        assert await trim_older_than(client, AUDIT_STREAM, 90) == 0  # retention's XTRIM
        async with proxy.session.get(proxy.health_url + "/readyz") as response:
            assert response.status == 200, await response.text()
        # Nothing the sidecar sent (scripts, pipelines, XTRIM at start-up, PUBLISH,
        # SUBSCRIBE, PING) was refused by this topology.
        assert metric_value(await metrics(proxy), "sidecar_redis_errors_total") == 0


async def failover_keeps_serving_and_recovers(
    start_proxy: ProxyFactory, topology: Topology, kill: Callable[[], None]
) -> Outage:
    """Kill the master holding the keys: cached keys keep working (stale_if_error) and their
    audit records are spooled; once a replica is promoted, new keys can be made and used,
    the spooled records are in the stream exactly once, and revocation reaches the sidecar
    through its new subscription."""
    # A short TTL: during the outage every request asks Redis, fails, and is served stale.
    proxy: Proxy = await start_proxy(
        redis=topology.redis,
        keys=keys_section(cache_ttl_s=0.3, stale_if_error_s=300),
        routes=ROUTES,
    )
    async with topology_client(topology) as client:
        cached = await issue(client, "cached")
        before = await served(proxy, cached.key)
        await wait_recorded(client, [before.request_id])
        await listen_on(topology, topology.doomed)
        await wait_until(_async(topology.replica_synced), within=10, interval=0.05)

        killed_at = time.monotonic()
        kill()
        answered: list[str] = []

        async def writes_recovered() -> bool:
            answer = await call(proxy, "/v1/orders/1", key=cached.key)
            assert answer.status == 200, answer.body  # never refused while it is cached
            answered.append(answer.request_id)
            try:
                await client.set(PROBE_KEY, "1")
            except RedisError:
                return False
            return True

        await wait_until(writes_recovered, within=FAILOVER_DEADLINE_S, interval=0.05)
        unavailable = time.monotonic() - killed_at
        assert topology.promoted()

        fresh = await issue(client, "fresh")
        await served(proxy, fresh.key)

        counts = await wait_recorded(client, [before.request_id, *answered])
        assert {counts[request_id] for request_id in [before.request_id, *answered]} == {1}
        text = await metrics(proxy)
        outcome = "sidecar_audit_records_total"
        spooled = metric_value(text, outcome, {"outcome": "spooled"})
        replayed = metric_value(text, outcome, {"outcome": "replayed"})
        assert spooled >= 1, text
        assert replayed >= 1, text

        await one_subscriber(topology)  # resubscribed on a live server
        await KeyStore(client).revoke("fresh")
        await refused_within(proxy, [fresh.key], REVOCATION_DEADLINE_S)
    return Outage(unavailable, len(answered), spooled, replayed)


def _async(condition: Callable[[], bool]) -> Callable[[], Any]:
    async def check() -> bool:
        return condition()

    return check

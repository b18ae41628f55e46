"""The Redis client, built from settings: one server, a Sentinel-managed master, or a Redis
Cluster. Every call is capped by `redis.timeout_s` (per network round trip).

The rest of the code sees one `RedisClient` and never asks which kind it holds: everything it
does works the same on all three, because every multi-key operation (a Lua script) names
keys of one hash slot (`{keys}` for the key store, `{<stream>}` for a stream writer's
marks). The one difference that cannot be hidden in the client, where a subscriber connects,
lives here too (`create_pubsub_opener`).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, SlotNotCoveredError
from yarl import URL

from sidecar.config import Redis as RedisSettings
from sidecar.config.redis_urls import SentinelUrl, is_sentinel_url, parse_sentinel_url, redacted_url
from sidecar.errors import RedisUnreachable

__all__ = [
    "ClusterUnavailable",
    "PubSubOpener",
    "RedisClient",
    "create_pubsub_opener",
    "create_redis",
    "redacted_url",
]

RedisClient: TypeAlias = Redis | RedisCluster

# Opens a subscriber's connection for one (re)subscription and closes it on the way out.
PubSubOpener: TypeAlias = Callable[[], AbstractAsyncContextManager[PubSub]]


def create_redis(settings: RedisSettings) -> RedisClient:
    """A pooled asyncio client; callers treat `storage.failures.REDIS_FAILURES` as
    "Redis unavailable".

        On a cluster, a call that meets a broken connection or CLUSTERDOWN re-reads the topology
        and is tried once more, so a call spans at most two round trips, as on one server.
    """
    timeout = settings.timeout_s
    if settings.cluster:
        return _Cluster.from_url(
            settings.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 1),
        )
    if is_sentinel_url(settings.url):
        return _sentinel_master(parse_sentinel_url(settings.url), timeout, **_pooled())
    return Redis.from_url(settings.url, **_timeouts(timeout), **_pooled())


def create_pubsub_opener(settings: RedisSettings, client: RedisClient) -> PubSubOpener:
    """Where each (re)subscription of the invalidation listener connects: to the server; to
    the master the Sentinels name at that moment; or, on a cluster, to the next node in turn
    (classic PUBLISH reaches every node of a cluster, so any node will do, and the next
    attempt after a node dies goes to another one).

    A subscriber's connection never retries on its own: a broken connection must reach the
    listener, which expires its cache on resubscribing (announcements made meanwhile are lost).
    """
    timeout = settings.timeout_s
    if isinstance(client, RedisCluster):
        nodes = _ClusterNodes(client, settings.url)

        async def node_client() -> Redis:
            return Redis.from_url(await nodes.next_url(), **_timeouts(timeout), **_subscriber())

        return _opener(node_client)
    if is_sentinel_url(settings.url):
        parsed = parse_sentinel_url(settings.url)

        async def master_client() -> Redis:
            return _sentinel_master(parsed, timeout, **_subscriber())

        return _opener(master_client)

    async def server_client() -> Redis:
        return Redis.from_url(settings.url, **_timeouts(timeout), **_subscriber())

    return _opener(server_client)


def _timeouts(timeout: float) -> dict[str, Any]:
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


def _pooled() -> dict[str, Any]:
    return {
        "health_check_interval": 30,
        # One immediate retry on a broken connection (a pooled socket from before a Redis
        # restart or a failover), never on a timeout: a slow Redis must not double every
        # call's latency.
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [RedisConnectionError],
        "retry_on_timeout": False,
    }


def _subscriber() -> dict[str, Any]:
    return {"socket_keepalive": True, "retry": Retry(NoBackoff(), 0)}


class ClusterUnavailable(RedisConnectionError):
    """No node of the cluster could be reached, or its slots are not all served."""


class _Cluster(RedisCluster):
    """redis-py reports a cluster it cannot reach (or whose slots are not all served) with
    exceptions outside `RedisError`; they become `ClusterUnavailable` here, so the rest of
    the code keeps one notion of "Redis unavailable" in every mode."""

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except SlotNotCoveredError as exc:
            raise ClusterUnavailable(str(exc)) from exc


class _SentinelMaster(Redis):
    """The current master's client; closing it also closes the connections to the Sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def _sentinel_master(parsed: SentinelUrl, timeout: float, **options: Any) -> Redis:
    """A client whose every new connection asks the Sentinels for the master first, and which
    drops connections to a master that has since been demoted."""
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels),
        # No retries against one Sentinel (redis-py's default backs off for seconds): the
        # next Sentinel in the list is the retry.
        sentinel_kwargs={
            **_timeouts(timeout),
            "password": parsed.sentinel_password,
            "retry": Retry(NoBackoff(), 0),
        },
        **_timeouts(timeout),
        username=parsed.username,
        password=parsed.password,
        db=parsed.db,
    )
    master: Redis = sentinels.master_for(parsed.master, redis_class=_SentinelMaster, **options)
    return master


class _ClusterNodes:
    """The cluster's nodes in turn, as URLs carrying the configured credentials and scheme."""

    def __init__(self, cluster: RedisCluster, url: str) -> None:
        self._cluster = cluster
        self._url = URL(url)
        self._turn = itertools.count()

    async def next_url(self) -> str:
        await self._cluster.initialize()  # no-op once the topology is known and current
        names = sorted(node.name for node in self._cluster.get_nodes())
        if not names:
            return str(self._url)
        host, _, port = names[next(self._turn) % len(names)].rpartition(":")
        return str(self._url.with_host(host.strip("[]")).with_port(int(port)).with_path("/0"))


def _opener(make_client: Callable[[], Awaitable[Redis]]) -> PubSubOpener:
    @asynccontextmanager
    async def open_pubsub() -> AsyncIterator[PubSub]:
        client = await make_client()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            yield pubsub
        finally:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            finally:
                await client.aclose()

    return open_pubsub


def unreachable(url: str, exc: BaseException) -> RedisUnreachable:
    """The error a command reports when Redis does not answer: the URL without its password."""
    return RedisUnreachable(f"cannot reach Redis at {redacted_url(url)} ({type(exc).__name__})")

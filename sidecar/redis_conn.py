"""The Redis client, built from settings. Every call is capped by `redis.timeout_s`."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from yarl import URL

from sidecar.config import Redis as RedisSettings


def create_redis(settings: RedisSettings) -> Redis:
    """A pooled asyncio client; callers treat any `redis.RedisError` as "Redis unavailable"."""
    return Redis.from_url(
        settings.url,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        health_check_interval=30,
        # One immediate retry on a broken connection (a pooled socket from before a Redis
        # restart), never on a timeout: a slow Redis must not double every call's latency.
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
        retry_on_timeout=False,
    )


def redacted_url(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url

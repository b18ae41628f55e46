"""The Redis client, built from settings. Every call is capped by `redis.timeout_s`."""

from __future__ import annotations

from redis.asyncio import Redis
from yarl import URL

from sidecar.config import Redis as RedisSettings


def create_redis(settings: RedisSettings) -> Redis:
    """A pooled asyncio client; callers treat any `redis.RedisError` as "Redis unavailable"."""
    return Redis.from_url(
        settings.url,
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def redacted_url(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url

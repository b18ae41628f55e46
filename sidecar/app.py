"""The wiring: the one place that knows every part and puts them together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from sidecar.config import Settings
from sidecar.headers import hsts_value
from sidecar.health import ReadinessCheck, create_health_app
from sidecar.metrics import Metrics
from sidecar.pipeline import Lifecycle, Pipeline
from sidecar.proxy import UpstreamClient, create_upstream_session
from sidecar.redis_conn import create_redis
from sidecar.routes import RouteTable
from sidecar.tls import Certificate


@dataclass(slots=True)
class Sidecar:
    """Everything one serving process holds: built by `open_sidecar`, closed when it exits."""

    settings: Settings
    certificate: Certificate
    lifecycle: Lifecycle
    metrics: Metrics
    redis: aioredis.Redis
    pipeline: Pipeline
    health_app: web.Application
    security_headers: dict[str, str]


def security_headers(settings: Settings) -> dict[str, str]:
    """The headers every proxy-port response carries (X-Request-Id is added per request)."""
    return {
        "Strict-Transport-Security": hsts_value(settings.hsts),
        "X-Content-Type-Options": "nosniff",
        "Server": "sidecar",  # no framework or upstream version on the wire
    }


@asynccontextmanager
async def open_sidecar(settings: Settings, certificate: Certificate) -> AsyncIterator[Sidecar]:
    """Open the shared clients, build the pipeline and the health app; close all on exit.

    The proxy port runs on aiohttp's low-level server (no router, no per-request app
    machinery), so its resources live here rather than in an `Application.cleanup_ctx`.
    """
    metrics = Metrics()
    lifecycle = Lifecycle()
    headers = security_headers(settings)
    redis = create_redis(settings.redis)
    session = create_upstream_session(settings.upstream)
    try:
        pipeline = Pipeline(
            settings,
            routes=RouteTable(settings.routes, settings.default_route),
            upstream=UpstreamClient(settings.upstream, session),
            metrics=metrics,
            lifecycle=lifecycle,
            security_headers=headers,
        )
        checks = _readiness_checks(certificate, redis, lifecycle, metrics)
        yield Sidecar(
            settings=settings,
            certificate=certificate,
            lifecycle=lifecycle,
            metrics=metrics,
            redis=redis,
            pipeline=pipeline,
            health_app=create_health_app(checks, metrics),
            security_headers=headers,
        )
    finally:
        await session.close()
        await redis.aclose()


def _readiness_checks(
    certificate: Certificate, redis: aioredis.Redis, lifecycle: Lifecycle, metrics: Metrics
) -> list[ReadinessCheck]:
    async def config_loaded() -> str | None:
        return None  # a process that got this far has a valid configuration

    async def certificate_valid() -> str | None:
        if certificate.valid_at(datetime.now(UTC)):
            return None
        return f"certificate expired at {certificate.not_after.isoformat()}"

    async def redis_answers() -> str | None:
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            metrics.redis_errors.inc()
            return f"redis unreachable ({type(exc).__name__})"
        return None

    async def not_draining() -> str | None:
        return "shutting down" if lifecycle.draining else None

    return [
        ReadinessCheck("config", config_loaded),
        ReadinessCheck("certificate", certificate_valid),
        ReadinessCheck("redis", redis_answers),
        ReadinessCheck("draining", not_draining),
    ]

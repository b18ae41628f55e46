"""The wiring: the one place that knows every part and puts them together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from sidecar.audit.activity_counters import ActivityCounters, CountActivity
from sidecar.audit.admin_events import ADMIN_EVENTS_STREAM
from sidecar.audit.events import EVENT_FIELD, EventLog
from sidecar.audit.integrity import IntegrityKeys
from sidecar.audit.keyfiles import load_audit_keys
from sidecar.audit.retention import keep_trimmed
from sidecar.audit.spool import Spool, SpoolBudget
from sidecar.audit.trail import RECORD_FIELD, AuditTrail
from sidecar.audit.writer import DurableStreamWriter, WriterHooks
from sidecar.config import Settings
from sidecar.keys.authenticator import Authenticator
from sidecar.keys.budget import Argon2Budget
from sidecar.keys.hashing import Argon2Pool, SecretHasher
from sidecar.keys.invalidation import listen_for_invalidations
from sidecar.keys.store import KeyStore
from sidecar.keys.usage import UsageTracker
from sidecar.metrics import Metrics
from sidecar.proxy.headers import hsts_value
from sidecar.proxy.pipeline import Lifecycle, Pipeline
from sidecar.proxy.routes import RouteTable
from sidecar.proxy.upstream import UpstreamClient, create_upstream_pool
from sidecar.runtime.cpus import cpus_per_worker
from sidecar.runtime.health import ReadinessCheck, create_health_app
from sidecar.runtime.rotation_due import RotationDueGauge
from sidecar.runtime.tls import Certificate
from sidecar.storage.client import RedisClient, create_pubsub_opener, create_redis
from sidecar.storage.failures import tolerate_redis
from sidecar.storage.ratelimit import RateLimiter
from sidecar.tasks import BackgroundTasks

# The longest a request waits for its record to be kept (SPEC §17): a Redis that stopped
# answering costs one call's timeout before the record is spooled instead.
DURABLE_TIMEOUT_FLOOR_S = 5.0
EVENTS_SPOOL_SHARE = 8  # the events spool may use 1/8 of audit.spool_max_bytes


@dataclass(slots=True)
class Sidecar:
    """Everything one serving process holds: built by `open_sidecar`, closed when it exits."""

    settings: Settings
    certificate: Certificate
    lifecycle: Lifecycle
    metrics: Metrics
    redis: RedisClient
    pipeline: Pipeline
    health_app: web.Application
    security_headers: dict[str, str]
    admin_app: web.Application | None = None  # with `admin.enabled` only


def security_headers(settings: Settings) -> dict[str, str]:
    """The headers every proxy-port response carries (X-Request-Id is added per request)."""
    return {
        "Strict-Transport-Security": hsts_value(settings.hsts),
        "X-Content-Type-Options": "nosniff",
        "Server": "sidecar",  # no framework or upstream version on the wire
    }


@asynccontextmanager
async def open_sidecar(
    settings: Settings, certificate: Certificate, *, metrics_dir: Path | None = None
) -> AsyncIterator[Sidecar]:
    """Open the shared clients, start the background tasks, build the pipeline and the health
    app; on exit flush what is queued and close everything in reverse order. (The proxy port
    runs on aiohttp's low-level server, so its resources live here, not in a cleanup_ctx.)"""
    metrics = Metrics(metrics_dir)
    lifecycle = Lifecycle()
    headers = security_headers(settings)
    async with AsyncExitStack() as stack:
        redis = create_redis(settings.redis)
        stack.push_async_callback(redis.aclose)
        upstream_pool = create_upstream_pool(settings.upstream)
        stack.push_async_callback(upstream_pool.close)
        # Every task started from here on, the authenticator's included, is cancelled and
        # awaited on the way out (after the writers' flush, before the argon2 threads stop).
        tasks = BackgroundTasks()
        argon2 = Argon2Pool(
            SecretHasher(settings.keys.argon2),
            # Half the CPUs at most (of this worker's share): a flood of guessed keys must
            # leave the event loop a core.
            workers=max(1, int(cpus_per_worker() // 2)),
            on_verify=metrics.argon2_verifications.inc,
            budget=Argon2Budget.for_cpus(cpus_per_worker(), settings.keys.argon2),
        )
        stack.callback(argon2.close)
        authenticator = _create_authenticator(settings, redis, metrics, argon2, tasks)
        # Separate budgets: refusals of unauthenticated junk during a Redis outage must not
        # fill the disk the audit trail needs and turn every request into a 503.
        audit_keys = load_audit_keys(settings)  # checked before serving: see check_serving
        events_share = settings.audit.spool_max_bytes // EVENTS_SPOOL_SHARE
        audit_writer = _durable_writer(
            redis,
            settings.audit.stream,
            RECORD_FIELD,
            settings,
            SpoolBudget(settings.audit.spool_max_bytes - events_share),
            metrics,
            audit_keys.integrity,
            audited=True,
        )
        event_writer = _durable_writer(
            redis,
            settings.audit.events_stream,
            EVENT_FIELD,
            settings,
            SpoolBudget(events_share),
            metrics,
            audit_keys.integrity,
        )
        for writer in (audit_writer, event_writer):
            stack.callback(writer.spool.close)  # after the task stops: the next process adopts
        archiver = None
        if settings.archive.url is not None:  # the consumer is named after the audit writer
            # Imported when used (so is the admin listener's code): psycopg is 9 MiB of RSS.
            from sidecar.archive.archiver import create_archiver

            archiver = create_archiver(
                settings, redis, audit_writer.writer_id, audit_keys.integrity, metrics
            )
            stack.push_async_callback(archiver.close)  # once its task is cancelled
        count_activity: CountActivity | None = None
        if archiver is None:  # with one, the archiver counts what it archives, exactly once
            counters = ActivityCounters(
                redis, settings.audit.retention_days, on_redis_error=metrics.redis_errors.inc
            )
            stack.push_async_callback(counters.flush)  # the last counts, once the tasks stop
            tasks.start(counters.run())
            count_activity = counters.count
        stack.push_async_callback(tasks.cancel_all)
        for writer in (audit_writer, event_writer):
            # On the way out: everything queued goes to Redis, or to the spool for next time.
            stack.push_async_callback(writer.flush, settings.shutdown.grace_s)
            tasks.start(writer.run())
        subscribed = asyncio.Event()
        tasks.start(
            listen_for_invalidations(
                create_pubsub_opener(settings.redis, redis),
                drop=authenticator.cache.drop,
                expire_all=authenticator.cache.expire_all,
                on_error=metrics.redis_errors.inc,
                subscribed=subscribed,
            )
        )
        # Subscribe before serving: the first subscription expires the cache, and a key
        # verified before it would be verified twice. Bounded, so a Redis that is down at
        # start-up delays nothing (readiness says so meanwhile).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(subscribed.wait(), 4 * settings.redis.timeout_s)
        rotation_due = RotationDueGauge(
            KeyStore(redis), settings.keys.max_age_days, metrics.keys_rotation_due.set
        )
        # Counted once before serving, so the first scrape is right; then every few minutes.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rotation_due.update(), 4 * settings.redis.timeout_s)
        tasks.start(rotation_due.keep_updated())
        if archiver is not None:  # not awaited: a PostgreSQL down at start-up delays nothing
            tasks.start(archiver.run())
        tasks.start(
            keep_trimmed(
                redis,
                # The CLI writes admin events with the admin port off too: always trimmed.
                [settings.audit.stream, settings.audit.events_stream, ADMIN_EVENTS_STREAM],
                settings.audit.retention_days,
                on_error=metrics.redis_errors.inc,
                integrity=audit_keys.integrity,
            )
        )
        durable_timeout_s = max(DURABLE_TIMEOUT_FLOOR_S, 10 * settings.redis.timeout_s)
        pipeline = Pipeline(
            settings,
            routes=RouteTable(settings.routes, settings.default_route),
            # One bound on an upstream's answer head, HEAD or not (the pool's 64 KiB).
            upstream=UpstreamClient(settings.upstream, upstream_pool),
            authenticator=authenticator,
            events=EventLog(
                event_writer,
                metrics,
                audit_keys.cipher,
                durable_timeout_s=durable_timeout_s,
                count_activity=count_activity,
            ),
            audit=AuditTrail(
                settings,
                audit_writer,
                audit_keys.cipher,
                metrics,
                durable_timeout_s=durable_timeout_s,
                count_activity=count_activity,
            ),
            metrics=metrics,
            lifecycle=lifecycle,
            security_headers=headers,
        )
        sidecar = Sidecar(
            settings=settings,
            certificate=certificate,
            lifecycle=lifecycle,
            metrics=metrics,
            redis=redis,
            pipeline=pipeline,
            health_app=web.Application(),
            security_headers=headers,
        )
        if settings.admin.enabled:
            from sidecar.runtime.admin import AdminParts, open_admin

            sidecar.admin_app = await open_admin(
                stack,
                settings,
                AdminParts(redis, authenticator, argon2.hasher, audit_keys, metrics),
                security_headers=headers,
                durable_timeout_s=durable_timeout_s,
            )
        checks = _readiness_checks(sidecar, redis, (audit_writer, event_writer))
        if archiver is not None:  # reported, never gating (SPEC §15): the backlog waits in Redis
            checks.append(ReadinessCheck("archive", archiver.problem, gating=False))
        sidecar.health_app = create_health_app(checks, metrics)
        yield sidecar


def _create_authenticator(
    settings: Settings,
    redis: RedisClient,
    metrics: Metrics,
    argon2: Argon2Pool,
    tasks: BackgroundTasks,
) -> Authenticator:
    limiters = {}
    if settings.rate_limits.per_key is not None:
        limiters["key"] = RateLimiter(redis, "key", settings.rate_limits.per_key)
    if settings.rate_limits.failed_auth_per_ip is not None:
        limiters["failed_auth_ip"] = RateLimiter(
            redis, "failed-auth-ip", settings.rate_limits.failed_auth_per_ip
        )
    if settings.rate_limits.unauthenticated_per_ip is not None:
        limiters["unauthenticated_ip"] = RateLimiter(
            redis, "unauthenticated-ip", settings.rate_limits.unauthenticated_per_ip
        )
    store = KeyStore(redis)
    return Authenticator(
        settings.keys,
        store=store,
        limiters=limiters,
        metrics=metrics,
        argon2=argon2,
        usage=UsageTracker(store, tasks, on_redis_error=metrics.redis_errors.inc),
        tasks=tasks,
    )


def _durable_writer(
    redis: RedisClient,
    stream: str,
    field_name: str,
    settings: Settings,
    budget: SpoolBudget,
    metrics: Metrics,
    integrity: IntegrityKeys | None,
    *,
    audited: bool = False,
) -> DurableStreamWriter:
    """A spooling writer; the audit stream's one also drives the audit metrics."""
    restarted = metrics.audit_writer_restarts.labels(stream).inc
    hooks = WriterHooks(redis_error=metrics.redis_errors.inc, restarted=restarted)
    if audited:
        records = metrics.audit_records
        hooks = WriterHooks(
            written=records.labels("written").inc,
            spooled=records.labels("spooled").inc,
            replayed=records.labels("replayed").inc,
            redis_error=metrics.redis_errors.inc,
            depth=metrics.audit_queue_depth.set,
            spool_bytes=metrics.audit_spool_bytes.set,
            restarted=restarted,
        )
    spool = Spool(
        settings.audit.spool_dir,
        "audit" if audited else "events",
        budget,
        stream=stream,
        quarantined=metrics.audit_quarantined.labels(stream).inc,
    )
    # The spool's directory is named after its writer: one owner, one chain.
    return DurableStreamWriter(
        redis, stream, field_name, spool, integrity, writer_id=spool.owner, hooks=hooks
    )


def _readiness_checks(
    sidecar: Sidecar, redis: RedisClient, writers: tuple[DurableStreamWriter, ...]
) -> list[ReadinessCheck]:
    lifecycle, metrics = sidecar.lifecycle, sidecar.metrics
    audit_writer = writers[0]
    # SPEC §17: a short-lived key in the audit stream's slot (so a cluster takes it where the
    # records go): an ACL or a read-only replica that refuses writes fails readiness.
    probe_key = f"{{{audit_writer.stream}}}:readyz:{audit_writer.writer_id}"

    async def config_loaded() -> str | None:
        return None  # a process that got this far has a valid configuration

    async def certificate_valid() -> str | None:
        certificate = sidecar.certificate  # replaced by a SIGHUP reload
        if certificate.valid_at(datetime.now(UTC)):
            return None
        return f"certificate expired at {certificate.not_after.isoformat()}"

    async def redis_answers() -> str | None:
        with tolerate_redis(metrics.redis_errors.inc) as call:
            await redis.ping()
        if call.failed:
            return f"redis unreachable ({type(call.error).__name__})"
        with tolerate_redis(metrics.redis_errors.inc) as call:
            await redis.set(probe_key, b"1", px=10_000)
        if call.failed:
            return f"redis refuses the sidecar's writes ({type(call.error).__name__})"
        return None

    async def not_draining() -> str | None:
        return "shutting down" if lifecycle.draining else None

    async def audit_accepting() -> str | None:
        problems = [problem for writer in writers if (problem := writer.problem()) is not None]
        if not problems and not audit_writer.can_accept():
            problems.append("audit spool full: requests are refused")
        return "; ".join(problems) or None

    return [
        ReadinessCheck("config", config_loaded),
        ReadinessCheck("certificate", certificate_valid),
        ReadinessCheck("redis", redis_answers),
        ReadinessCheck("draining", not_draining),
        ReadinessCheck("audit", audit_accepting),
    ]

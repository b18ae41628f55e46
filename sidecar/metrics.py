"""The Prometheus metric families of SPEC §11, on a registry owned by the app, not the default
one. Under `serve --workers` prometheus-client also writes every value to files in the
directory `PROMETHEUS_MULTIPROC_DIR` names, which `runtime.workers` sets in the environment."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# Proxy latencies live in the low milliseconds; the default buckets start at 5 ms.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Every metric the sidecar exports. One instance per process, hung off the app."""

    def __init__(self, aggregate_dir: Path | None = None) -> None:
        """`aggregate_dir`: with `serve --workers N`, the shared directory where every worker's
        values live (prometheus-client's multiprocess mode); `/metrics` then sums them all."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._exposition = self.registry
        if aggregate_dir is not None:
            self._exposition = CollectorRegistry()
            MultiProcessCollector(self._exposition, path=str(aggregate_dir))  # type: ignore[no-untyped-call]
        r = self.registry
        self.requests = Counter(
            "sidecar_requests",
            "Requests answered on the proxy port.",
            ["route", "status"],
            registry=r,
        )
        self.auth_events = Counter(
            "sidecar_auth_events", "Authentication-layer events.", ["event"], registry=r
        )
        self.key_cache = Counter(
            "sidecar_key_cache", "Verified-key cache look-ups.", ["result"], registry=r
        )
        self.argon2_verifications = Counter(
            "sidecar_argon2_verifications", "argon2id verifications run.", registry=r
        )
        self.argon2_budget_refusals = Counter(
            "sidecar_argon2_budget_refusals",
            "Key verifications refused (503) because argon2 had used its CPU share.",
            registry=r,
        )
        self.upstream_duration = Histogram(
            "sidecar_upstream_duration_seconds",
            "Upstream time to response headers.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "sidecar_request_duration_seconds",
            "Whole request time on the proxy port.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.audit_queue_depth = Gauge(
            "sidecar_audit_queue_depth",
            "Audit records waiting to be written.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.audit_spool_bytes = Gauge(
            "sidecar_audit_spool_bytes",
            "Bytes in the audit spool on disk.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.audit_records = Counter(
            "sidecar_audit_records", "Audit records by outcome.", ["outcome"], registry=r
        )
        # SPEC §17: a writer that died and was started again (readyz fails meanwhile).
        self.audit_writer_restarts = Counter(
            "sidecar_audit_writer_restarts",
            "Times a stream writer failed and was restarted.",
            ["stream"],
            registry=r,
        )
        # SPEC §17: spool entries that failed their checksum (or files that are not segments),
        # moved to spool_dir/quarantine/ rather than replayed or dropped.
        self.audit_quarantined = Counter(
            "sidecar_audit_quarantined",
            "Spool entries and files moved to the quarantine.",
            ["stream"],
            registry=r,
        )
        # SPEC §15: how far the archive is behind each stream (Redis's TIME minus the time of
        # the oldest entry not yet archived); every worker sees the same streams.
        self.archive_lag = Gauge(
            "sidecar_archive_lag_seconds",
            "Age of the oldest stream entry not yet archived in PostgreSQL.",
            ["stream"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.archive_records = Counter(
            "sidecar_archive_records",
            "Stream entries the archiver took, by outcome (archived|duplicate|dead_letter).",
            ["stream", "outcome"],
            registry=r,
        )
        self.archive_errors = Counter(
            "sidecar_archive_errors",
            "Archive passes that failed (PostgreSQL or Redis unavailable) and were retried.",
            registry=r,
        )
        self.redis_errors = Counter(
            "sidecar_redis_errors", "Redis calls that failed or timed out.", registry=r
        )
        self.keys_rotation_due = Gauge(
            "sidecar_keys_rotation_due",
            "Active keys older than keys.max_age_days.",
            multiprocess_mode="livemax",  # every worker counts the same keys
            registry=r,
        )

    def render(self) -> bytes:
        """The exposition text for `/metrics` (all workers' values summed, with `--workers`)."""
        return generate_latest(self._exposition)

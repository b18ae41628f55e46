"""The audit trail: records and events built, encrypted, written durably to Redis Streams.

May import: `sidecar.guard` (masking what a record holds), `sidecar.storage`, and the
foundation. Never `sidecar.keys` or `sidecar.proxy`: the request path calls in, not the other
way round.
"""

"""The audit archive (SPEC §15): the audit and event streams copied into PostgreSQL tables
partitioned by day, exactly once per record, with per-minute activity counters, so Redis holds
only `archive.redis_window_s` of them.

`tables` and `rows` are pure (what is archived where, and an entry as a row); `schema`,
`partitions`, `retention` and `store` talk to PostgreSQL only; `window` and `dead_letter` to
Redis only; `archiver` is the task that moves entries from one to the other.

May import: `sidecar.audit` (the chain's integrity check, for retention's checkpoints),
`sidecar.storage`, `sidecar.config` and the foundation. Never `sidecar.proxy`, `sidecar.keys`,
`sidecar.runtime` or aiohttp: it runs beside the request path, never on it.
"""

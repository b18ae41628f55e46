"""API keys: the key format, argon2id hashing, the records in Redis, the verified-key cache,
invalidation across replicas, `last_used_at` tracking, and authentication of a presented key.

May import: `sidecar.storage` and the foundation. Never `sidecar.audit`, `sidecar.proxy` or
aiohttp. `format`, `records` and `cache` are pure (no Redis).
"""

"""API keys: the key format, the records in Redis, the verified-key cache, invalidation across
replicas, and authentication of a presented key.

May import: `sidecar.storage` and the foundation. Never `sidecar.audit`, `sidecar.proxy` or
aiohttp. `format` and `cache` are pure (no Redis).
"""

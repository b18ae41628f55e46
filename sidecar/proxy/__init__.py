"""The proxy port's request path: the head screened, the path read, the route matched, the key
authenticated, the body guarded, the request forwarded and its answer streamed back.

May import: `sidecar.keys`, `sidecar.audit`, `sidecar.guard`, `sidecar.storage` and the
foundation. `paths`, `routes` and `headers` are pure (no aiohttp, no redis).
"""

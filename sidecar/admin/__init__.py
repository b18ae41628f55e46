"""The admin API (SPEC §16): a TLS listener of its own, authenticated by admin keys.

`server` builds the aiohttp application (middlewares, routing from the endpoint table),
`context` holds what handlers are given, `auth` decides who an admin caller is. May import
the proxy (its problem responses and headers), the archive's reader, audit and keys; only
`sidecar.runtime` and `sidecar.cli` import it.
"""

"""The dashboard (SPEC §16): server-rendered pages on the admin listener, read through the same
readers and `KeyLifecycle` as the admin API. May import `sidecar.admin` and the layers below it;
nothing below imports it. Its pure parts (`charts`, `reasons`) import neither aiohttp nor redis.
"""

"""The traffic the activity tests count: the same requests whether the counts come from Redis
or from the archive."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.authsupport import call
from tests.conftest import Proxy
from tests.keysupport import issue, with_other_secret


async def send_traffic(proxy: Proxy, redis: aioredis.Redis) -> str:
    """Three allowed requests with a key and one without; two missing keys, a wrong secret
    and a missing scope: the key's id."""
    good = await issue(redis, proxy.server.sidecar.settings, "good", ["orders:read"])
    for _ in range(3):
        assert (await call(proxy, "/v1/orders/1", key=good.key)).status == 200
    assert (await call(proxy, "/public/ping")).status == 200
    for _ in range(2):
        assert (await call(proxy, "/v1/orders/1")).status == 401
    assert (await call(proxy, "/v1/orders/1", key=with_other_secret(good.key))).status == 401
    assert (await call(proxy, "/v1/orders", key=good.key, method="POST")).status == 403
    return good.record.key_id

"""Issue 16: the budget of argon2 CPU-seconds. The bucket and the negative cache with a fake
clock; then through a real proxy and Redis: a spent budget answers 503 without running
argon2, leaves cached keys alone, lets a clean address use the reserve, and recovers. And
bad values are refused at start-up, named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.config import Settings, load_settings
from sidecar.errors import ConfigError
from sidecar.keys.budget import Argon2Budget
from sidecar.keys.cache import KeyCache
from sidecar.keys.unknown import UnknownIds
from tests.authsupport import ROUTES, call
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until
from tests.keysupport import FAST_ARGON2, issue, metric_value, with_other_secret

# --- the bucket, with a fake clock ----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_admits_until_spent_then_refills_at_its_rate() -> None:
    # Binary fractions throughout, so the arithmetic is exact.
    clock = Clock()
    budget = Argon2Budget(0.5, clock=clock)  # 0.5 CPU-s per second, at most 0.5 s banked
    admitted = 0
    for _ in range(100):  # bounded: 0.5 s of 0.125 s verifications is 4
        charged = budget.take(reserve=False)
        if charged is None:
            break
        budget.settle(charged, 0.125)
        admitted += 1
    assert admitted == 4
    assert budget.take(reserve=False) is None  # spent: refused, nothing charged
    assert budget.tokens == 0
    clock.now += 0.125  # 0.0625 s back: more than nothing
    charged = budget.take(reserve=False)
    assert charged is not None
    budget.settle(charged, 0.125)
    assert budget.take(reserve=False) is None
    clock.now += 3600  # an idle hour banks no more than the burst
    assert budget.tokens == 0.5


def test_the_reserve_is_for_clean_callers_only() -> None:
    clock = Clock()
    budget = Argon2Budget(0.5, reserve_s=0.25, clock=clock)
    for _ in range(4):
        charged = budget.take(reserve=False)
        assert charged is not None
        budget.settle(charged, 0.125)
    assert budget.take(reserve=False) is None
    for _ in range(2):  # a clean address still gets through, down to the reserve's floor
        charged = budget.take(reserve=True)
        assert charged is not None
        budget.settle(charged, 0.125)
    assert budget.tokens == -0.25
    assert budget.take(reserve=True) is None
    # The reserve refills from the same rate: the flood waits until the bucket is above zero.
    clock.now += 0.25
    assert budget.take(reserve=False) is None
    assert budget.take(reserve=True) is not None


def test_concurrent_admissions_are_charged_before_they_land() -> None:
    budget = Argon2Budget(0.1, clock=Clock())
    budget.estimate_s = 0.05
    taken = [budget.take(reserve=False) for _ in range(5)]
    assert taken[:2] == [0.05, 0.05]
    assert taken[2:] == [None, None, None]  # nothing had landed, and yet they were counted


def test_settle_replaces_the_estimate_with_the_measured_cost() -> None:
    budget = Argon2Budget(1.0, clock=Clock())
    charged = budget.take(reserve=False)
    assert charged is not None
    budget.settle(charged, 0.125)
    assert budget.tokens == 0.875
    assert charged < budget.estimate_s < 0.125  # moving towards what was measured


# --- the negative cache, with a fake clock --------------------------------------------------


def test_unknown_ids_live_for_their_ttl_and_are_bounded() -> None:
    clock = Clock()
    unknown = UnknownIds(5, max_entries=2, clock=clock)
    unknown.note("a", unknown.generation)
    assert "a" in unknown
    clock.now += 5
    assert "a" not in unknown
    for key_id in ("b", "c", "d"):
        unknown.note(key_id, unknown.generation)
    assert len(unknown) == 2
    assert "b" not in unknown  # the oldest went first
    assert "d" in unknown


def test_a_look_up_that_raced_an_announcement_stores_nothing() -> None:
    unknown = UnknownIds(5, clock=Clock())
    since = unknown.generation  # the look-up begins, reads "absent" from Redis ...
    unknown.drop("x")  # ... and meanwhile a creation of x is announced
    unknown.note("x", since)
    assert "x" not in unknown
    since = unknown.generation
    unknown.clear()  # a resubscription, likewise
    unknown.note("x", since)
    assert "x" not in unknown


def test_a_ttl_of_zero_keeps_nothing() -> None:
    unknown = UnknownIds(0, clock=Clock())
    unknown.note("a", unknown.generation)
    assert "a" not in unknown
    assert len(unknown) == 0


def test_the_feeds_drop_and_expire_all_reach_the_negative_cache() -> None:
    cache = KeyCache(30, 300, unknown_ttl_s=60, clock=Clock())
    cache.unknown.note("created", cache.unknown.generation)
    cache.unknown.note("other", cache.unknown.generation)
    cache.drop("created")
    assert "created" not in cache.unknown
    assert "other" in cache.unknown
    cache.expire_all()
    assert len(cache.unknown) == 0


# --- start-up validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ("{argon2: {max_cpu_share: 0}}", "keys.argon2.max_cpu_share"),
        ("{argon2: {max_cpu_share: 1.5}}", "keys.argon2.max_cpu_share"),
        ("{argon2: {max_cpu_share: -0.5}}", "keys.argon2.max_cpu_share"),
        ("{argon2: {reserve_s: -1}}", "keys.argon2.reserve_s"),
        ("{unknown_id_cache_s: -1}", "keys.unknown_id_cache_s"),
    ],
)
def test_bad_budget_and_cache_values_are_refused_by_name(
    tmp_path: Path, keys: str, named: str
) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(f"keys: {keys}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as failure:
        load_settings(path, complete=False)
    [problem] = failure.value.problems
    assert problem.startswith(named + ": "), problem


def test_the_defaults() -> None:
    settings = Settings()
    assert settings.keys.argon2.max_cpu_share == 0.5
    assert settings.keys.argon2.reserve_s == 0.5
    assert settings.keys.unknown_id_cache_s == 5


# --- through the proxy ----------------------------------------------------------------------

# ~0.5 ms per verification at FAST_ARGON2: a share this small is spent in a few and refills
# in a fraction of a second, whatever the machine.
TINY_SHARE = 0.002
FLOOD = {"X-Forwarded-For": "203.0.113.1"}
LENIENT = {"failed_auth_per_ip": {"requests": 10_000, "per_seconds": 60}}


async def _metric(proxy: Proxy, name: str) -> float:
    async with proxy.session.get(proxy.health_url + "/metrics") as response:
        return metric_value(await response.text(), name)


async def _budgeted(start_proxy: ProxyFactory, reserve_s: float) -> Proxy:
    argon2 = {**FAST_ARGON2, "max_cpu_share": TINY_SHARE, "reserve_s": reserve_s}
    proxy: Proxy = await start_proxy(
        keys={"argon2": argon2},
        routes=ROUTES,
        rate_limits=LENIENT,
        trusted_proxies=["127.0.0.1/32"],
    )
    return proxy


async def _spend(proxy: Proxy, wrong: str, address: str) -> Any:
    """Wrong secrets until the budget refuses one (bounded); that refusal."""
    for _ in range(500):
        answer = await call(proxy, "/v1/orders/1", key=wrong, headers={"X-Forwarded-For": address})
        if answer.status != 401:
            return answer
    raise AssertionError("the budget was never spent")


async def test_a_spent_budget_answers_503_without_argon2_and_recovers(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    proxy = await _budgeted(start_proxy, reserve_s=0)
    settings = proxy.server.sidecar.settings
    cached = await issue(redis_client, settings, "cached", ["orders:read"])
    assert (await call(proxy, "/v1/orders/1", key=cached.key)).status == 200
    target = await issue(redis_client, settings, "target", ["orders:read"])
    wrong = with_other_secret(target.key)

    refused = await _spend(proxy, wrong, "203.0.113.1")
    assert refused.status == 503, (refused.status, refused.body)
    assert refused.headers["Retry-After"] == "1"
    assert await _metric(proxy, "sidecar_argon2_budget_refusals_total") >= 1
    runs = await _metric(proxy, "sidecar_argon2_verifications_total")
    statuses = [(await call(proxy, "/v1/orders/1", key=wrong, headers=FLOOD)).status for _ in "abc"]
    assert set(statuses) <= {401, 503}
    # Exactly the ones answered 401 ran argon2; a 503 never did.
    ran = await _metric(proxy, "sidecar_argon2_verifications_total") - runs
    assert ran == statuses.count(401), statuses
    # A cached key never reaches argon2: the spent budget does not touch it.
    assert (await call(proxy, "/v1/orders/1", key=cached.key)).status == 200

    async def verified_again() -> bool:
        return (await call(proxy, "/v1/orders/1", key=target.key)).status == 200

    await wait_until(verified_again, within=5)  # the bucket refills: verifications run again


async def test_a_clean_address_reaches_the_reserve_while_a_flood_is_refused(
    start_proxy: ProxyFactory, redis_client: aioredis.Redis
) -> None:
    proxy = await _budgeted(start_proxy, reserve_s=1.0)
    settings = proxy.server.sidecar.settings
    target = await issue(redis_client, settings, "target", ["orders:read"])
    valid = await issue(redis_client, settings, "valid", ["orders:read"])

    refused = await _spend(proxy, with_other_secret(target.key), "203.0.113.1")
    assert refused.status == 503
    # A first use from an address with no failed attempt: the reserve lets it through.
    clean = await call(
        proxy, "/v1/orders/1", key=valid.key, headers={"X-Forwarded-For": "198.51.100.7"}
    )
    assert clean.status == 200, (clean.status, clean.body)

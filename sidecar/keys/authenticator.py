"""A presented key → a `Principal`, or the `AuthenticationFailed` that explains why not.

Order matters for cost and for what a guesser can learn: shape and checksum first (no I/O),
then the environment in the key, then the in-process cache (no I/O), then Redis and argon2
(in the bounded `Argon2Pool`, within its CPU budget). Status, expiry and the network allowlist
are checked on every request, cached or not, and only after the secret is proven, so a wrong
secret never learns whether a key is revoked or expired.

An id Redis does not hold costs no argon2, and for `keys.unknown_id_cache_s` no Redis round
trip either. Answering it faster than a wrong secret tells that the id does not exist, which
is no secret: ids are public (events, the upstream's X-Sidecar-Key-Id, the admin API), and
what protects a key is its 256-bit secret (docs/security.md, "Unknown key ids").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sidecar.config import Keys
from sidecar.errors import AuthenticationFailed, MissingKey, RateLimited, Unavailable
from sidecar.keys.budget import BudgetSpent
from sidecar.keys.cache import CacheHit, KeyCache
from sidecar.keys.format import MalformedKey, parse_key
from sidecar.keys.hashing import Argon2Pool
from sidecar.keys.records import KeyRecord
from sidecar.keys.store import KeyStore
from sidecar.keys.usage import UsageTracker
from sidecar.metrics import Metrics
from sidecar.storage.failures import REDIS_FAILURES, tolerate_redis
from sidecar.storage.ratelimit import RateLimiter, Window
from sidecar.tasks import BackgroundTasks

SUNSET_NOTICE_S = 7 * 86400
_UNKNOWN = "unknown or invalid API key"  # one answer for both: no enumeration of key ids


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated key, as the rest of the request path sees it."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    sunset: datetime | None  # when the key stops working, if that is soon or scheduled


def _rate_limited(detail: str, window: Window) -> RateLimited:
    """The 429 for an exceeded `window`, carrying its `Retry-After` and `RateLimit-*`."""
    return RateLimited(detail, retry_after=window.retry_after, headers=window.headers())


class Authenticator:
    """Decides who a presented key is (`authenticate`), counts requests against the shared
    rate limits, and flags keys found where keys must not be (`flag_exposed`)."""

    def __init__(
        self,
        keys: Keys,
        *,
        store: KeyStore,
        limiters: dict[str, RateLimiter],
        metrics: Metrics,
        argon2: Argon2Pool,
        usage: UsageTracker,
        tasks: BackgroundTasks,
    ) -> None:
        self._prefix = keys.prefix
        self._environment = keys.environment
        self._store = store
        self._metrics = metrics
        self.cache = KeyCache(
            keys.cache_ttl_s, keys.stale_if_error_s, unknown_ttl_s=keys.unknown_id_cache_s
        )
        self._argon2 = argon2
        self._in_flight: dict[tuple[str, bytes], asyncio.Task[KeyRecord]] = {}
        self._per_key = limiters.get("key")
        self._failed_per_ip = limiters.get("failed_auth_ip")
        self._unauthenticated_per_ip = limiters.get("unauthenticated_ip")
        self._usage = usage
        self._tasks = tasks

    async def authenticate(self, presented: str | None, client_ip: str) -> Principal:
        """The `Principal` of a presented key; `AuthenticationFailed` (or a 429, or a 503
        while neither Redis nor the cache can vouch for the key) otherwise."""
        if presented is None:
            raise MissingKey()
        try:
            parsed = parse_key(presented, self._prefix)
        except MalformedKey as exc:
            raise AuthenticationFailed(str(exc), event="malformed_key") from None
        if parsed.environment != self._environment:
            raise AuthenticationFailed(
                f"the key is for environment {parsed.environment!r}, this sidecar serves "
                f"{self._environment!r}",
                event="wrong_environment",
                key_id=parsed.key_id,
            )
        digest = hashlib.sha256(presented.encode()).digest()
        hit = self.cache.get(parsed.key_id, digest)
        if hit is not None and hit.fresh:
            self._metrics.key_cache.labels("hit").inc()
            record = hit.record
        else:
            self._metrics.key_cache.labels("miss").inc()
            record = await self._verify(parsed.key_id, parsed.secret, digest, client_ip, hit)
        now = time.time()
        self._check_status(record, now, client_ip)
        self._usage.note_use(record.key_id, now)
        return Principal(
            key_id=record.key_id,
            name=record.name,
            scopes=record.scopes,
            sunset=_sunset(record, now),
        )

    async def _verify(
        self, key_id: str, secret: str, digest: bytes, client_ip: str, stale: CacheHit | None
    ) -> KeyRecord:
        # This very key string was verified against this hash before (the digest matched a
        # cache entry): if the stored hash is unchanged, argon2 would only say yes again.
        proven = stale.record.hash if stale is not None else None
        try:
            return await self._verify_once(key_id, secret, digest, client_ip, proven)
        except REDIS_FAILURES:
            self._metrics.redis_errors.inc()
            if stale is not None:
                # Redis is down and this key was verified within stale_if_error_s: serve it.
                return stale.record
            raise Unavailable(
                "the key store is unreachable and this key is not cached", retry_after=1
            ) from None

    async def _verify_once(
        self, key_id: str, secret: str, digest: bytes, client_ip: str, proven: str | None
    ) -> KeyRecord:
        """Concurrent requests with the same uncached key share one look-up and one argon2
        run: a cold burst must not cost argon2 once per request (SPEC §4: once per key)."""
        if key_id in self.cache.unknown:  # absent from Redis a moment ago: no need to ask again
            await self._count_attempt(client_ip)
            raise AuthenticationFailed(_UNKNOWN, event="unknown_key", key_id=key_id)
        flight_key = (key_id, digest)
        flight = self._in_flight.get(flight_key)
        if flight is None:
            hit = self.cache.get(key_id, digest)
            if hit is not None and hit.fresh:
                return hit.record  # verified by another request while this one awaited Redis
            flight = asyncio.create_task(self._look_up(key_id, secret, digest, client_ip, proven))
            self._in_flight[flight_key] = flight
            flight.add_done_callback(lambda done: self._landed(flight_key, done))
        # Shielded: a client that goes away must not cancel the verification others await.
        return await asyncio.shield(flight)

    def _landed(self, flight_key: tuple[str, bytes], flight: asyncio.Task[KeyRecord]) -> None:
        if self._in_flight.get(flight_key) is flight:
            del self._in_flight[flight_key]
        if not flight.cancelled():
            flight.exception()  # retrieved here: every waiter may have gone away meanwhile

    async def _look_up(
        self, key_id: str, secret: str, digest: bytes, client_ip: str, proven: str | None
    ) -> KeyRecord:
        since = self.cache.unknown.generation  # before the read: see `UnknownIds.note`
        record = await self._store.fetch(key_id)
        if record is None:
            # No decoy argon2: ids are public, so "no such id" answered fast reveals nothing.
            self.cache.unknown.note(key_id, since)
            await self._count_attempt(client_ip)
            raise AuthenticationFailed(_UNKNOWN, event="unknown_key", key_id=key_id)
        if proven is None or not hmac.compare_digest(proven, record.hash):
            clean = await self._count_attempt(client_ip)
            try:
                verified = await self._argon2.verify(record.hash, secret, reserve=clean)
            except BudgetSpent:
                # Not run, so not a failure: a valid key retrying must not use up its address.
                self._metrics.argon2_budget_refusals.inc()
                await self._refund_attempt(client_ip)
                raise
            if not verified:
                raise AuthenticationFailed(_UNKNOWN, event="invalid_secret", key_id=key_id)
            await self._refund_attempt(client_ip)
        if record.environment != self._environment:
            raise AuthenticationFailed(
                "the key belongs to another environment",
                event="wrong_environment",
                key_id=key_id,
                key_name=record.name,
            )
        self.cache.put(key_id, digest, record)
        if self._argon2.hasher.needs_rehash(record.hash):
            self._tasks.start(self._rehash(key_id, secret))
        return record

    def _check_status(self, record: KeyRecord, now: float, client_ip: str) -> None:
        status = record.status(now)
        if status == "revoked":
            raise self._failed("the key has been revoked", "revoked_key", record)
        if status == "expired":
            raise self._failed("key expired", "expired_key", record)
        if record.allow_ips and not _ip_allowed(client_ip, record.allow_ips):
            raise self._failed("the key is not allowed from this address", "ip_not_allowed", record)

    @staticmethod
    def _failed(detail: str, event: str, record: KeyRecord) -> AuthenticationFailed:
        return AuthenticationFailed(detail, event=event, key_id=record.key_id, key_name=record.name)

    async def check_rate(self, principal: Principal) -> Window | None:
        """Count one request against the key's shared limit; raise when it is exceeded.

        Fails open when Redis cannot be asked: a rate limit is not worth an outage, and keys
        keep being checked from the cache meanwhile.
        """
        if self._per_key is None:
            return None
        with tolerate_redis(self._metrics.redis_errors.inc) as call:
            window = await self._per_key.hit(principal.key_id)
        if call.failed:
            return None
        if window.exceeded:
            raise _rate_limited("the key's rate limit is exceeded", window)
        return window

    async def check_unauthenticated(self, client_ip: str) -> None:
        """`rate_limits.unauthenticated_per_ip`: one request that needs no key (a public route,
        or no route). Only the first refusal of a window is an event: the events stream must
        not grow at the flood's rate either. Fails open while Redis cannot be asked."""
        if self._unauthenticated_per_ip is None:
            return
        with tolerate_redis(self._metrics.redis_errors.inc) as call:
            window = await self._unauthenticated_per_ip.hit(client_ip)
        if call.failed:
            return
        if window.exceeded:
            refusal = _rate_limited("too many requests from this address", window)
            if window.count > window.limit + 1:
                refusal.event = None
            raise refusal

    async def _count_attempt(self, client_ip: str) -> bool:
        """`rate_limits.failed_auth_per_ip`, counted before each argon2 run a client address
        causes (and each unknown id) and given back when the key proves valid. Counting first
        (not after the failure) means a flood cannot outrun its own counter, and the refusal
        costs no argon2. Only the first refusal of a window is an event, as for
        `check_unauthenticated`: the events stream must not grow at the flood's rate.

        True when this is the address's only attempt in its window (a clean address: it may
        use the argon2 budget's reserve); also True with no limit configured."""
        if self._failed_per_ip is None:
            return True
        window = await self._failed_per_ip.hit(client_ip)
        if window.exceeded:
            refusal = _rate_limited("too many failed authentications from this address", window)
            if window.count > window.limit + 1:
                refusal.event = None
            raise refusal
        return window.count <= 1

    async def _refund_attempt(self, client_ip: str) -> None:
        if self._failed_per_ip is None:
            return
        with tolerate_redis(self._metrics.redis_errors.inc):
            await self._failed_per_ip.refund(client_ip)

    async def _rehash(self, key_id: str, secret: str) -> None:
        """A key verified against a hash made with other parameters gets a current one."""
        new_hash = await self._argon2.hash(secret)
        with tolerate_redis(self._metrics.redis_errors.inc):
            await self._store.replace_hash(key_id, new_hash)

    async def flag_exposed(self, presented: str, client_ip: str) -> str | None:
        """A key-shaped string found where keys must not be (a URL, another header): flag the
        key `exposed` only when its secret verifies, so nobody can flag a victim's key with a
        made-up secret; return its id then, else None. The attempt counts against
        `failed_auth_per_ip` like any other (SPEC §14)."""
        try:
            parsed = parse_key(presented, self._prefix)
        except MalformedKey:
            return None
        if parsed.environment != self._environment:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        hit = self.cache.get(parsed.key_id, digest)
        try:
            if hit is None or not hit.fresh:
                await self._verify(parsed.key_id, parsed.secret, digest, client_ip, hit)
        except (AuthenticationFailed, RateLimited, Unavailable):
            return None  # a wrong secret, an unknown id, over the limit, Redis away
        with tolerate_redis(self._metrics.redis_errors.inc):
            await self._store.mark_exposed(parsed.key_id)
        return parsed.key_id


def _ip_allowed(client_ip: str, networks: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


def _sunset(record: KeyRecord, now: float) -> datetime | None:
    if record.expires_at is None:
        return None
    if record.rotated_to is not None or record.expires_at - now <= SUNSET_NOTICE_S:
        return datetime.fromtimestamp(record.expires_at, UTC)
    return None

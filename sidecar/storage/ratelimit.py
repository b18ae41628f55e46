"""Fixed-window rate limits shared by every replica through Redis (one atomic script call)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sidecar.config import Rate
from sidecar.storage.client import RedisClient

# INCR and the window's expiry in one step, so concurrent replicas never lose a count and a
# key never outlives its window (memory stays bounded by the number of active clients).
_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


# Give back one count, only within a live window (a DECR on an expired key would leave a
# key without expiry behind).
_REFUND = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Window:
    """One subject's count in the current window, and when the window resets."""

    limit: int
    count: int
    reset_ms: int

    @property
    def exceeded(self) -> bool:
        """True once the count is over the limit."""
        return self.count > self.limit

    @property
    def retry_after(self) -> int:
        """Whole seconds until the window resets (at least 1)."""
        return max(1, math.ceil(self.reset_ms / 1000))

    def headers(self) -> dict[str, str]:
        """The `RateLimit-Limit`, `-Remaining` and `-Reset` response headers."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.limit - self.count)),
            "RateLimit-Reset": str(self.retry_after),
        }


class RateLimiter:
    """`hit` counts one event for a subject; `refund` gives one back."""

    def __init__(self, redis: RedisClient, name: str, rate: Rate) -> None:
        self._redis = redis
        self._prefix = f"sidecar:rl:{name}:"
        self._rate = rate
        self._window_ms = max(1, int(rate.per_seconds * 1000))
        self._script = redis.register_script(_SCRIPT)
        self._refund = redis.register_script(_REFUND)

    async def hit(self, subject: str) -> Window:
        """Count one event for `subject` and return its window."""
        count, ttl = await self._script(keys=[self._prefix + subject], args=[self._window_ms])
        return Window(self._rate.requests, int(count), int(ttl))

    async def refund(self, subject: str) -> None:
        """Take back one `hit` that turned out not to count (a verification that succeeded)."""
        await self._refund(keys=[self._prefix + subject])

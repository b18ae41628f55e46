"""Pure: the in-process cache of verified keys (bounded, TTL, with a stale window).

Entries are found by the key's public id and only count when the digest of the presented
key matches the one that was verified, compared in constant time.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.keys.records import KeyRecord


@dataclass(slots=True)
class _Entry:
    digest: bytes
    record: KeyRecord
    stored_at: float


@dataclass(frozen=True, slots=True)
class CacheHit:
    """A cached verification of the presented key."""

    record: KeyRecord
    fresh: bool  # False: past the TTL, usable only while Redis cannot be asked


class KeyCache:
    """Verified keys by id, at most `max_entries` (least recently used go first): fresh for
    `ttl_s`, then usable for `stale_s` more only while Redis cannot be asked."""

    def __init__(
        self,
        ttl_s: float,
        stale_s: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._stale = stale_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, key_id: str, digest: bytes) -> CacheHit | None:
        """The entry for `key_id` if it was verified for this very key string (`digest`)."""
        entry = self._entries.get(key_id)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        age = self._clock() - entry.stored_at
        if age < self._ttl:
            self._entries.move_to_end(key_id)
            return CacheHit(entry.record, fresh=True)
        if age < self._ttl + self._stale:
            return CacheHit(entry.record, fresh=False)
        del self._entries[key_id]
        return None

    def put(self, key_id: str, digest: bytes, record: KeyRecord) -> None:
        """Remember that the key string with `digest` verified as `record`."""
        self._entries[key_id] = _Entry(digest, record, self._clock())
        self._entries.move_to_end(key_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def drop(self, key_id: str) -> None:
        """Forget `key_id` (it changed in the store); unknown ids are ignored."""
        self._entries.pop(key_id, None)

    def expire_all(self) -> None:
        """Make every entry past its TTL: each key is checked against Redis again on its next
        use, yet stays usable for the stale window while Redis cannot be asked. For when
        invalidations may have been missed (the feed was down), which is also when a failover
        makes Redis briefly unreachable: dropping the entries would then refuse every key."""
        latest = self._clock() - self._ttl
        for entry in self._entries.values():
            entry.stored_at = min(entry.stored_at, latest)

    def __len__(self) -> int:
        return len(self._entries)

"""Pure: the in-process cache of verified keys (bounded, TTL, with a stale window), and
beside it the negative cache of ids Redis does not hold (`keys.unknown`).

Entries are found by the key's public id and only count when the digest of the presented
key matches the one that was verified, compared in constant time. One object for both, so
the invalidation feed's `drop` and `expire_all` reach both.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.keys.records import KeyRecord
from sidecar.keys.unknown import UnknownIds


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
    `ttl_s`, then usable for `stale_s` more only while Redis cannot be asked; `unknown`:
    the ids found absent, for `unknown_ttl_s`."""

    def __init__(
        self,
        ttl_s: float,
        stale_s: float,
        *,
        max_entries: int = 10_000,
        unknown_ttl_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unknown = UnknownIds(unknown_ttl_s, max_entries=max_entries, clock=clock)
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
        """Forget `key_id` (it changed in the store, or was created: `unknown` forgets it
        too); ids not cached are ignored."""
        self._entries.pop(key_id, None)
        self.unknown.drop(key_id)

    def expire_all(self) -> None:
        """Make every entry past its TTL: each key is checked against Redis again on its next
        use, yet stays usable for the stale window while Redis cannot be asked. For when
        invalidations may have been missed (the feed was down), which is also when a failover
        makes Redis briefly unreachable: dropping the entries would then refuse every key.
        The negative entries are cleared outright: a missed creation would refuse a new key."""
        self.unknown.clear()
        latest = self._clock() - self._ttl
        for entry in self._entries.values():
            entry.stored_at = min(entry.stored_at, latest)

    def __len__(self) -> int:
        return len(self._entries)

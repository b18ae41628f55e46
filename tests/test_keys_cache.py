"""Pure units of the verified-key cache (`sidecar.keys.cache`): fresh, stale, gone, bounded.
No I/O: a fake clock."""

from __future__ import annotations

from sidecar.keys.cache import KeyCache
from sidecar.keys.records import KeyRecord

# --- the verified-key cache ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(key_id: str = "id1", name: str = "n") -> KeyRecord:
    return KeyRecord(
        key_id=key_id, name=name, hash="h", scopes=(), environment="live", created_at=0.0
    )


def freshness(cache: KeyCache, key_id: str, digest: bytes) -> str:
    hit = cache.get(key_id, digest)
    if hit is None:
        return "miss"
    return "fresh" if hit.fresh else "stale"


def test_cache_is_fresh_within_ttl_then_stale_then_gone() -> None:
    clock = FakeClock()
    cache = KeyCache(ttl_s=30, stale_s=300, clock=clock)
    cache.put("id1", b"d", record())
    hit = cache.get("id1", b"d")
    assert hit is not None
    assert hit.record.key_id == "id1"
    assert freshness(cache, "id1", b"d") == "fresh"
    clock.now += 29.9
    assert freshness(cache, "id1", b"d") == "fresh"
    clock.now += 0.1  # exactly the TTL: no longer fresh
    assert freshness(cache, "id1", b"d") == "stale"
    clock.now += 299.9
    assert freshness(cache, "id1", b"d") == "stale"
    clock.now += 0.1  # past TTL + stale window: forgotten
    assert freshness(cache, "id1", b"d") == "miss"
    assert len(cache) == 0


def test_cache_without_stale_window_forgets_at_ttl() -> None:
    clock = FakeClock()
    cache = KeyCache(ttl_s=5, stale_s=0, clock=clock)
    cache.put("id1", b"d", record())
    clock.now += 5
    assert freshness(cache, "id1", b"d") == "miss"


def test_cache_put_again_restarts_the_ttl() -> None:
    clock = FakeClock()
    cache = KeyCache(ttl_s=10, stale_s=0, clock=clock)
    cache.put("id1", b"d", record())
    clock.now += 8
    cache.put("id1", b"d", record(name="renamed"))
    clock.now += 8
    assert freshness(cache, "id1", b"d") == "fresh"
    hit = cache.get("id1", b"d")
    assert hit is not None
    assert hit.record.name == "renamed"


def test_cache_digest_mismatch_is_a_miss_and_keeps_the_entry() -> None:
    cache = KeyCache(ttl_s=30, stale_s=0, clock=FakeClock())
    cache.put("id1", b"right", record())
    assert cache.get("id1", b"wrong") is None
    assert cache.get("id1", b"") is None
    assert cache.get("id2", b"right") is None
    assert cache.get("id1", b"right") is not None


def test_cache_is_bounded_and_evicts_the_oldest() -> None:
    cache = KeyCache(ttl_s=30, stale_s=0, max_entries=3, clock=FakeClock())
    for key_id in ("a", "b", "c", "d"):
        cache.put(key_id, b"d", record(key_id))
    assert len(cache) == 3
    assert cache.get("a", b"d") is None
    assert all(cache.get(key_id, b"d") is not None for key_id in ("b", "c", "d"))


def test_cache_keeps_recently_used_entries_over_older_ones() -> None:
    cache = KeyCache(ttl_s=30, stale_s=0, max_entries=2, clock=FakeClock())
    cache.put("a", b"d", record("a"))
    cache.put("b", b"d", record("b"))
    assert cache.get("a", b"d") is not None  # a is now the most recently used
    cache.put("c", b"d", record("c"))
    assert cache.get("b", b"d") is None
    assert cache.get("a", b"d") is not None
    assert cache.get("c", b"d") is not None


def test_cache_drop() -> None:
    cache = KeyCache(ttl_s=30, stale_s=300, clock=FakeClock())
    cache.put("a", b"d", record("a"))
    cache.put("b", b"d", record("b"))
    cache.drop("a")
    cache.drop("never-there")  # dropping an unknown id is harmless
    assert cache.get("a", b"d") is None
    assert cache.get("b", b"d") is not None
    assert len(cache) == 1

"""Pure units of the API-key layer (SPEC §4): the key format, the verified-key cache, the
durations the command line accepts, and a key record's status. No I/O: a fake clock where
time matters."""

from __future__ import annotations

import contextlib
import math
import secrets
import string
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config import Argon2
from sidecar.durations import describe, iso, parse_duration, parse_moment
from sidecar.keys import format as keys_module
from sidecar.keys.cache import KeyCache
from sidecar.keys.format import (
    BASE62,
    KEY_PATTERN,
    MalformedKey,
    checksum,
    generate_key,
    parse_key,
)
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.records import KeyRecord
from sidecar.keys.store import NewKey
from tests.keysupport import FAST_ARGON2

PREFIXES = st.from_regex(r"[a-z][a-z0-9]{0,15}", fullmatch=True)
ENVIRONMENTS = st.from_regex(r"[a-z0-9]{1,16}", fullmatch=True)


def split_key(key: str) -> tuple[str, str, str, str, str]:
    """(prefix, environment, id, secret, checksum) read off the documented layout."""
    prefix, environment, key_id, tail = key.split("_")
    return prefix, environment, key_id, tail[:-6], tail[-6:]


# --- the key format -----------------------------------------------------------------------


def test_generated_key_parses_back_to_its_parts() -> None:
    key, parsed = generate_key("sk", "live")
    prefix, environment, key_id, secret, check = split_key(key)
    assert (prefix, environment) == ("sk", "live")
    again = parse_key(key, "sk")
    assert again == parsed
    assert again.key_id == key_id
    assert again.secret == secret + check  # the argon2 hash covers the secret with its checksum
    assert check == checksum(key[:-6])
    assert KEY_PATTERN.search(key)
    assert KEY_PATTERN.fullmatch(key)


def test_id_has_at_least_64_and_secret_at_least_256_random_bits() -> None:
    key, _ = generate_key("sk", "live")
    _, _, key_id, secret, _ = split_key(key)
    assert set(key_id) <= set(BASE62)
    assert set(secret) <= set(BASE62)
    # What the encoding can carry...
    assert len(key_id) * math.log2(62) >= 64
    assert len(secret) * math.log2(62) >= 256


def test_generation_draws_enough_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    """...and what is actually drawn from the CSPRNG for each part."""
    drawn: list[int] = []
    real = secrets.token_bytes

    def recording(n: int) -> bytes:
        drawn.append(n)
        return real(n)

    monkeypatch.setattr(secrets, "token_bytes", recording)
    generate_key("sk", "live")
    assert len(drawn) == 2
    id_bytes, secret_bytes = drawn
    assert id_bytes * 8 >= 64
    assert secret_bytes * 8 >= 256


def test_generated_ids_and_secrets_vary_in_every_position() -> None:
    parts = [split_key(generate_key("sk", "live")[0]) for _ in range(300)]
    ids = [part[2] for part in parts]
    key_secrets = [part[3] for part in parts]
    assert len(set(ids)) == len(ids)
    assert len(set(key_secrets)) == len(key_secrets)
    for column in zip(*ids, strict=True):
        assert len(set(column)) > 1
    for column in zip(*key_secrets, strict=True):
        assert len(set(column)) > 1


def test_every_single_character_change_is_refused() -> None:
    key, _ = generate_key("sk", "live")
    start = len("sk_live_")
    for position in range(start, len(key)):
        if key[position] == "_":
            continue
        for replacement in ("0", "z"):
            if replacement == key[position]:
                continue
            changed = key[:position] + replacement + key[position + 1 :]
            with pytest.raises(MalformedKey):
                parse_key(changed, "sk")


def test_changed_environment_breaks_the_checksum() -> None:
    key, _ = generate_key("sk", "staging")
    with pytest.raises(MalformedKey, match="checksum"):
        parse_key(key.replace("_staging_", "_live_", 1), "sk")


def test_wrong_prefix_is_refused() -> None:
    key, _ = generate_key("pk", "live")
    with pytest.raises(MalformedKey, match="prefix"):
        parse_key(key, "sk")
    assert parse_key(key, "pk").prefix == "pk"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k + "\n",
        lambda k: " " + k,
        lambda k: k + " ",
        lambda k: k[:-1],
        lambda k: k + "0",
        lambda k: k.upper(),
        lambda k: "",
        lambda k: k.replace("_", "-"),
    ],
    ids=[
        "trailing-newline",
        "leading-space",
        "trailing-space",
        "short",
        "long",
        "upper",
        "empty",
        "dashes",
    ],
)
def test_malformed_shapes_are_refused(mangle: object) -> None:
    key, _ = generate_key("sk", "live")
    assert callable(mangle)
    with pytest.raises(MalformedKey):
        parse_key(mangle(key), "sk")


def test_trailing_newline_is_refused_for_its_shape_not_by_checksum_luck() -> None:
    key, _ = generate_key("sk", "live")
    with pytest.raises(MalformedKey, match="well-formed"):
        parse_key(key + "\n", "sk")


def test_repr_and_errors_never_contain_the_secret() -> None:
    key, parsed = generate_key("sk", "live")
    _, _, key_id, secret, check = split_key(key)
    record = KeyRecord(
        key_id=key_id,
        name="n",
        hash=SecretHasher(Argon2(**FAST_ARGON2)).hash(parsed.secret),
        scopes=("a:b",),
        environment="live",
        created_at=0.0,
    )
    shown = [repr(parsed), str(parsed), f"{parsed!r}", repr(NewKey(key=key, record=record))]
    for text in shown:
        assert secret not in text
        assert check not in text
        assert key not in text
    assert key_id in repr(parsed)  # the public id may appear: it is what logs carry
    assert record.hash not in repr(record)
    for broken in (key[:-1] + ("0" if key[-1] != "0" else "1"), key + "x", key[:40]):
        with pytest.raises(MalformedKey) as caught:
            parse_key(broken, "sk")
        assert secret[:8] not in str(caught.value)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_parse_key_raises_only_malformed_key_on_any_text(text: str) -> None:
    with contextlib.suppress(MalformedKey):
        parse_key(text, "sk")


@settings(max_examples=300, deadline=None)
@given(st.from_regex(KEY_PATTERN, fullmatch=True))
def test_parse_key_raises_only_malformed_key_on_key_shaped_text(text: str) -> None:
    try:
        parsed = parse_key(text, "sk")
    except MalformedKey:
        return
    # Accepted only when the checksum really matches.
    assert text[-6:] == checksum(text[:-6])
    assert parsed.prefix == "sk"


@settings(max_examples=200, deadline=None)
@given(PREFIXES, ENVIRONMENTS)
def test_every_generated_key_parses(prefix: str, environment: str) -> None:
    key, parsed = generate_key(prefix, environment)
    assert parse_key(key, prefix) == parsed
    assert parsed.environment == environment
    assert KEY_PATTERN.search(key)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_checksum_alphabet_and_width(value: int) -> None:
    encoded = keys_module.encode_base62(value, 6)
    assert len(encoded) == 6
    assert set(encoded) <= set(string.ascii_letters + string.digits)


# --- argon2id -----------------------------------------------------------------------------


def test_default_argon2_parameters_are_the_owasp_minimum() -> None:
    hasher = SecretHasher(Argon2())
    _, parsed = generate_key("sk", "live")
    stored = hasher.hash(parsed.secret)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert parsed.secret not in stored
    assert hasher.verify(stored, parsed.secret)
    other = "y" if parsed.secret.endswith("x") else "x"  # a different secret, always
    assert not hasher.verify(stored, parsed.secret[:-1] + other)


def test_verify_is_false_for_an_unusable_hash_and_rehash_follows_parameters() -> None:
    fast = SecretHasher(Argon2(**FAST_ARGON2))
    stored = fast.hash("s3")
    assert fast.verify(stored, "s3")
    assert not fast.verify("not-a-hash", "s3")
    assert not fast.verify("", "s3")
    assert not fast.needs_rehash(stored)
    assert SecretHasher(Argon2(time_cost=2, memory_cost=1024, parallelism=1)).needs_rehash(stored)


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


# --- durations ----------------------------------------------------------------------------

YEAR = timedelta(days=365)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("90s", 90),
        ("15m", 900),
        ("24h", 86400),
        ("1.5h", 5400),
        ("30d", 30 * 86400),
        ("2w", 14 * 86400),
        (" 24h ", 86400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, at_most=YEAR) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "10", "-1d", "1y", "d", "1 d", "1h30m", "0s0", "tomorrow", "1h\n1h", "1h\x00"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text, at_most=YEAR)


@pytest.mark.parametrize(
    "text", ["366d", "53w", "99999999999d", "9" * 400 + "d", "31536000.001s", "8785h"]
)
def test_parse_duration_refuses_more_than_its_bound_in_one_line(text: str) -> None:
    with pytest.raises(ValueError, match=r"too long: at most 365d") as raised:
        parse_duration(text, at_most=YEAR)
    assert "\n" not in str(raised.value)
    assert len(str(raised.value)) < 200


def test_parse_duration_takes_its_bound_exactly() -> None:
    assert parse_duration("365d", at_most=YEAR) == YEAR
    assert parse_duration("52w", at_most=YEAR) == timedelta(weeks=52)


def test_parse_moment() -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_moment("30d", now=now, at_most=YEAR) == datetime(2027, 1, 31, tzinfo=UTC)
    assert parse_moment("2027-02-01T00:00:00Z", now=now, at_most=YEAR) == datetime(
        2027, 2, 1, tzinfo=UTC
    )
    assert parse_moment("2027-02-01T02:00:00+02:00", now=now, at_most=YEAR) == datetime(
        2027, 2, 1, tzinfo=UTC
    )
    naive_is_utc = parse_moment("2027-02-01T00:00:00", now=now, at_most=YEAR)
    assert naive_is_utc == datetime(2027, 2, 1, tzinfo=UTC)
    assert naive_is_utc.tzinfo is not None
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_moment("next tuesday", now=now, at_most=YEAR)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0", "has passed"),
        ("2026-12-31T23:59:59Z", "has passed"),
        ("2027-01-01T00:00:00Z", "has passed"),
        ("0001-01-01T00:00:00+14:00", "has passed"),
        ("2028-01-02T00:00:00Z", "too far ahead: at most 365d"),
        ("9999-12-31T23:59:59-14:00", "too far ahead"),
        ("367d", "too long: at most 365d from now"),
        ("99999999999d", "too long: at most 365d from now"),
        ("10000-01-01T00:00:00Z", "neither an ISO 8601 time"),
    ],
)
def test_parse_moment_refuses_the_past_and_the_too_far(text: str, problem: str) -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match=problem):
        parse_moment(text, now=now, at_most=YEAR)


def test_describe_says_a_bound_in_its_largest_unit() -> None:
    assert describe(YEAR) == "365d"
    assert describe(timedelta(hours=36)) == "36h"
    assert describe(timedelta(minutes=90)) == "90m"
    assert describe(timedelta(seconds=61)) == "61s"


def test_iso() -> None:
    assert iso(None) is None
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(datetime(2027, 2, 1, 12, 30, tzinfo=UTC).timestamp()) == "2027-02-01T12:30:00Z"


# --- a key record's status ----------------------------------------------------------------

NOW = 1_800_000_000.0
DAY = 86400.0


def made(**fields: object) -> KeyRecord:
    base: dict[str, object] = {
        "key_id": "id",
        "name": "n",
        "hash": "h",
        "scopes": ("orders:read",),
        "environment": "live",
        "created_at": NOW - DAY,
    }
    base.update(fields)
    return KeyRecord(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({}, "active"),
        ({"expires_at": NOW + 1}, "active"),
        ({"expires_at": NOW}, "expired"),
        ({"expires_at": NOW - 1}, "expired"),
        ({"rotated_to": "new", "expires_at": NOW + 60}, "rotating"),
        ({"rotated_to": "new", "expires_at": NOW - 60}, "expired"),
        ({"revoked": True}, "revoked"),
        ({"revoked": True, "expires_at": NOW - 1}, "revoked"),
        ({"revoked": True, "rotated_to": "new", "expires_at": NOW + 60}, "revoked"),
    ],
)
def test_record_status(fields: dict[str, object], status: str) -> None:
    assert made(**fields).status(NOW) == status


@pytest.mark.parametrize(
    ("fields", "due"),
    [
        ({"created_at": NOW - 364 * DAY}, False),
        ({"created_at": NOW - 366 * DAY}, True),
        ({"created_at": NOW - 366 * DAY, "revoked": True}, False),
        ({"created_at": NOW - 366 * DAY, "expires_at": NOW - 1}, False),
        ({"created_at": NOW - 366 * DAY, "rotated_to": "x", "expires_at": NOW + 9}, False),
    ],
)
def test_record_rotation_due(fields: dict[str, object], due: bool) -> None:
    assert made(**fields).rotation_due(NOW, 365) is due


def test_rotation_due_follows_max_age_days() -> None:
    assert made(created_at=NOW - 2 * DAY).rotation_due(NOW, 1)
    assert not made(created_at=NOW - 2 * DAY).rotation_due(NOW, 3)


def test_record_round_trips_through_redis_fields() -> None:
    full = made(
        service="billing",
        expires_at=NOW + 5,
        rotated_from="old",
        rotated_to="new",
        last_used_at=NOW - 3,
        exposed=True,
        revoked=True,
        allow_ips=("10.0.0.0/8",),
    )
    as_bytes = {k.encode(): v.encode() for k, v in full.to_redis().items()}
    assert KeyRecord.from_redis(as_bytes) == full
    bare = made()
    stored = bare.to_redis()
    for absent in ("service", "expires_at", "rotated_from", "rotated_to", "last_used_at"):
        assert absent not in stored
    assert KeyRecord.from_redis(stored) == bare

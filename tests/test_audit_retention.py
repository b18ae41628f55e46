"""SPEC §7, §17: retention trims by Redis's clock, never the host's, refuses to trim fresh
entries, and checkpoints what it trims so `audit verify` still passes — also when it dies
between the checkpoint and the trim."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from sidecar.audit.checkpoints import checkpoints_key, decode_checkpoint
from sidecar.audit.integrity import IntegrityKeys, check
from sidecar.audit.retention import DAY_MS, redis_now_ms, trim_older_than
from tests.chainsupport import (
    AUDIT_STREAM,
    EVENTS_STREAM,
    ChainWriter,
    add_raw,
    integrity_keys,
    kinds,
    verified,
)

KEYS = integrity_keys("k1")
HUNDRED_DAYS_S = 100 * 86400


@pytest.fixture(params=["keyed", "chain-only"])
def keys(request: pytest.FixtureRequest) -> IntegrityKeys | None:
    return KEYS if request.param == "keyed" else None


class CrashesBeforeTrim:
    """The Redis client of a process that dies right after writing its checkpoints."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def xtrim(self, *_args: Any, **_kwargs: Any) -> int:
        raise RedisConnectionError("the process died here")


async def trim(redis: Any, stream: str, days: int = 90, **options: Any) -> int:
    return await trim_older_than(redis, stream, days, **options)


def digest_of(document: bytes, keys: IntegrityKeys | None) -> str:
    return check(AUDIT_STREAM, document, keys).digest


async def stream_ids(redis: aioredis.Redis, stream: str) -> list[str]:
    entries: Any = await redis.xrange(stream)
    return [entry_id.decode() for entry_id, _fields in entries]


async def stored_checkpoints(
    redis: aioredis.Redis, stream: str, keys: IntegrityKeys | None
) -> dict[str, tuple[int, str]]:
    stored: Any = await redis.hgetall(checkpoints_key(stream))
    decoded = {
        writer.decode(): decode_checkpoint(stream, writer.decode(), value, keys)
        for writer, value in stored.items()
    }
    return {writer: (c.seq, c.digest) for writer, c in decoded.items()}


async def test_a_host_clock_100_days_fast_trims_nothing(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for stream in (AUDIT_STREAM, EVENTS_STREAM):
        await ChainWriter(stream, KEYS).append(redis_client, 3, age_days=80)
        await ChainWriter(stream, KEYS).append(redis_client, 2)
    before = {s: await stream_ids(redis_client, s) for s in (AUDIT_STREAM, EVENTS_STREAM)}
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + HUNDRED_DAYS_S)
    for stream in (AUDIT_STREAM, EVENTS_STREAM):
        assert await trim(redis_client, stream, integrity=KEYS) == 0
        assert await stream_ids(redis_client, stream) == before[stream]
    assert await redis_client.exists(checkpoints_key(AUDIT_STREAM)) == 0


async def test_entries_older_than_retention_by_redis_time_are_checkpointed_and_trimmed(
    redis_client: aioredis.Redis, keys: IntegrityKeys | None
) -> None:
    long_lived, gone = ChainWriter(AUDIT_STREAM, keys), ChainWriter(AUDIT_STREAM, keys)
    old = await long_lived.append(redis_client, 5, age_days=100)
    await gone.append(redis_client, 2, age_days=95)  # a writer whose records all go
    kept = await long_lived.append(redis_client, 3, age_days=10)
    with capture_logs() as logs:
        assert await trim(redis_client, AUDIT_STREAM, integrity=keys) == 7
    assert await stream_ids(redis_client, AUDIT_STREAM) == [entry_id for entry_id, _ in kept]
    assert await stored_checkpoints(redis_client, AUDIT_STREAM, keys) == {
        long_lived.writer: (5, digest_of(old[-1][1], keys)),
        gone.writer: (2, gone.prev),
    }
    (line,) = [log for log in logs if log["event"] == "audit stream trimmed"]
    assert (line["log_level"], line["stream"], line["removed"]) == ("info", AUDIT_STREAM, 7)
    cutoff_ms = await redis_now_ms(redis_client, AUDIT_STREAM) - 90 * DAY_MS
    assert line["cutoff"][:10] == time.strftime("%Y-%m-%d", time.gmtime(cutoff_ms / 1000))

    report = await verified(redis_client, AUDIT_STREAM, keys)
    assert kinds(report) == {}
    assert (report.trimmed_writers, report.writers[0].first_seq) == (1, 6)


async def test_a_trim_after_a_spool_replay_still_verifies(redis_client: aioredis.Redis) -> None:
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    old = await writer.append(redis_client, 4, age_days=100)
    await writer.append(redis_client, 4)
    for _entry_id, document in old[2:]:  # replayed after their originals, now: not trimmed
        await add_raw(redis_client, AUDIT_STREAM, document)
    assert await trim(redis_client, AUDIT_STREAM, integrity=KEYS) == 4
    report = await verified(redis_client, AUDIT_STREAM, KEYS)
    assert kinds(report) == {}
    assert (report.writers[0].records, report.writers[0].replays) == (4, 2)


async def test_a_replay_of_trimmed_records_still_verifies(redis_client: aioredis.Redis) -> None:
    """A spool replayed after retention trimmed the originals and the writer's mark expired:
    the copies come after the checkpoint's cutoff, with seqs it already covers."""
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    old = await writer.append(redis_client, 5, age_days=100)
    await writer.append(redis_client, 2)
    assert await trim(redis_client, AUDIT_STREAM, integrity=KEYS) == 5
    for _entry_id, document in old[3:]:
        await add_raw(redis_client, AUDIT_STREAM, document)
    report = await verified(redis_client, AUDIT_STREAM, KEYS)
    assert kinds(report) == {}
    assert (report.writers[0].records, report.writers[0].replays) == (2, 2)


async def test_a_crash_between_checkpoint_and_trim_still_verifies(
    redis_client: aioredis.Redis,
) -> None:
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    await writer.append(redis_client, 4, age_days=120)
    await writer.append(redis_client, 4, age_days=100)
    await writer.append(redis_client, 2)
    now_ms = await redis_now_ms(redis_client, AUDIT_STREAM)
    assert await trim(redis_client, AUDIT_STREAM, integrity=KEYS, cutoff_ms=now_ms - 110 * DAY_MS)
    with pytest.raises(RedisConnectionError):
        await trim(CrashesBeforeTrim(redis_client), AUDIT_STREAM, integrity=KEYS)
    assert await stored_checkpoints(redis_client, AUDIT_STREAM, KEYS) == {
        writer.writer: (8, digest_of(writer.appended[7][1], KEYS))
    }
    assert len(await stream_ids(redis_client, AUDIT_STREAM)) == 6  # seq 5..10: not trimmed
    report = await verified(redis_client, AUDIT_STREAM, KEYS)
    assert kinds(report) == {}
    assert (report.writers[0].first_seq, report.writers[0].checkpoint_seq) == (5, 8)

    assert await trim(redis_client, AUDIT_STREAM, integrity=KEYS) == 4  # the next pass
    assert kinds(await verified(redis_client, AUDIT_STREAM, KEYS)) == {}


async def test_a_checkpoint_ahead_of_a_deletion_is_no_cover(redis_client: aioredis.Redis) -> None:
    """A checkpoint ahead of the trim vouches for the records it names: one of them deleted
    from the middle is still a gap, and one newer than its cutoff is reported."""
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    old = await writer.append(redis_client, 6, age_days=100)
    await writer.append(redis_client, 2)
    with pytest.raises(RedisConnectionError):
        await trim(CrashesBeforeTrim(redis_client), AUDIT_STREAM, integrity=KEYS)
    await redis_client.xdel(AUDIT_STREAM, old[3][0])
    assert kinds(await verified(redis_client, AUDIT_STREAM, KEYS)) == {"gap": 1}


@pytest.mark.parametrize("cutoff_days", [89, 0, -5])
async def test_a_cutoff_newer_than_retention_is_refused(
    redis_client: aioredis.Redis, cutoff_days: int
) -> None:
    await ChainWriter(AUDIT_STREAM, KEYS).append(redis_client, 2, age_days=95)
    before = await stream_ids(redis_client, AUDIT_STREAM)
    now_ms = await redis_now_ms(redis_client, AUDIT_STREAM)
    with capture_logs() as logs:
        removed = await trim(redis_client, AUDIT_STREAM, cutoff_ms=now_ms - cutoff_days * DAY_MS)
    assert removed == 0
    assert await stream_ids(redis_client, AUDIT_STREAM) == before
    assert [log["log_level"] for log in logs] == ["error"]
    assert "refused" in logs[0]["event"]


@pytest.mark.parametrize("days", [0, -1])
async def test_a_retention_below_a_day_is_refused(redis_client: aioredis.Redis, days: int) -> None:
    await ChainWriter(AUDIT_STREAM, KEYS).append(redis_client, 2, age_days=2)
    with capture_logs() as logs:
        assert await trim(redis_client, AUDIT_STREAM, days) == 0
    assert len(await stream_ids(redis_client, AUDIT_STREAM)) == 2
    assert [log["log_level"] for log in logs] == ["error"]


async def test_checkpoints_only_move_forward(redis_client: aioredis.Redis) -> None:
    """A replica whose pass saw less (an earlier cutoff) cannot move a checkpoint back."""
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    await writer.append(redis_client, 3, age_days=120)
    await writer.append(redis_client, 3, age_days=100)
    now_ms = await redis_now_ms(redis_client, AUDIT_STREAM)
    with pytest.raises(RedisConnectionError):
        await trim(CrashesBeforeTrim(redis_client), AUDIT_STREAM, integrity=KEYS)
    await trim(redis_client, AUDIT_STREAM, integrity=KEYS, cutoff_ms=now_ms - 110 * DAY_MS)
    checkpoints = await stored_checkpoints(redis_client, AUDIT_STREAM, KEYS)
    assert checkpoints[writer.writer][0] == 6


async def test_a_forged_checkpoint_is_replaced_and_forged_records_are_not_vouched_for(
    redis_client: aioredis.Redis,
) -> None:
    writer = ChainWriter(AUDIT_STREAM, KEYS)
    await writer.append(redis_client, 3, age_days=100)
    fake = ChainWriter(AUDIT_STREAM, None, writer.writer, seq=500)
    old_ms = await redis_now_ms(redis_client, AUDIT_STREAM) - 99 * DAY_MS
    await redis_client.xadd(AUDIT_STREAM, {"record": fake.seal()}, id=f"{old_ms}-0")
    await writer.append(redis_client, 2)
    await redis_client.hset(
        checkpoints_key(AUDIT_STREAM),
        writer.writer,
        b'{"stream":"sidecar:audit","writer":"' + writer.writer.encode() + b'","seq":9999}',
    )
    with capture_logs() as logs:
        assert await trim(redis_client, AUDIT_STREAM, integrity=KEYS) == 4
    assert any(log["log_level"] == "warning" and log["entries"] == 1 for log in logs)
    assert (await stored_checkpoints(redis_client, AUDIT_STREAM, KEYS))[writer.writer][0] == 3
    assert kinds(await verified(redis_client, AUDIT_STREAM, KEYS)) == {}


async def test_a_rotated_key_verifies_while_its_records_are_kept(
    redis_client: aioredis.Redis,
) -> None:
    """Rotation: the new line first, the old one kept as long as the records it signed are;
    once retention removed them all (and the writer's mark expired), the old line may go."""
    old_key, new_key = integrity_keys("k2025"), integrity_keys("k2026")
    before = ChainWriter(AUDIT_STREAM, old_key)
    await before.append(redis_client, 3, age_days=100)
    await before.append(redis_client, 1, age_days=50)
    after = ChainWriter(AUDIT_STREAM, new_key)  # the restarted sidecar, on the new file
    await after.append(redis_client, 3)
    both = IntegrityKeys.of([*new_key.keys.items(), *old_key.keys.items()])
    assert await trim(redis_client, AUDIT_STREAM, integrity=both) == 3
    assert kinds(await verified(redis_client, AUDIT_STREAM, both)) == {}
    # Without the old line its last record cannot be checked: forged, and so missing.
    assert kinds(await verified(redis_client, AUDIT_STREAM, new_key)) == {
        "forged": 1,
        "truncated": 1,
    }

    await trim(redis_client, AUDIT_STREAM, 40, integrity=both)  # the old key's last record goes
    await redis_client.delete(f"{{{AUDIT_STREAM}}}:writer:{before.writer}")  # its mark expired
    report = await verified(redis_client, AUDIT_STREAM, new_key)
    assert kinds(report) == {}
    assert report.trimmed_writers == 1

"""Key records in Redis, and the key lifecycle: create, rotate, revoke, delete.

Layout (all under one hash tag, so a Redis Cluster keeps them in one slot and the
multi-key scripts below stay legal there):
- `sidecar:{keys}:id:<id>`   a hash: the record (argon2 hash + metadata), never the key
- `sidecar:{keys}:name:<n>`  the id currently issued under name n
- `sidecar:{keys}:ids`       every id, for listing
Changes are announced on `INVALIDATE_CHANNEL` so every replica drops its cached copy, and
so are new ids (a creation, a rotation's successor): a replica that cached the id as unknown
must not refuse the new key.

Every change that touches more than one key is one Lua script: atomic on a single server, on
a Sentinel-managed master and on a cluster alike (redis-py's cluster transactions are not
something to build on), and a rotation checks what it read is still current in the same step
that writes, in place of WATCH/MULTI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from sidecar.errors import SidecarError
from sidecar.keys.format import generate_key
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.records import KeyRecord, text
from sidecar.storage.client import RedisClient

_PREFIX = "sidecar:{keys}:"
_IDS = _PREFIX + "ids"
INVALIDATE_CHANNEL = "sidecar:keys:invalidate"
_REQUIRED = frozenset({"id", "name", "hash", "scopes", "environment", "created_at"})

# One field on each record that still exists. Checking and writing in one step matters: a
# flag (last_used_at, exposed, revoked) written as a key is deleted must not leave behind a
# remnant hash holding only that field.
_SET_IF_PRESENT = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, ARGV[1], ARGV[2])
    n = n + 1
  end
end
return n
"""

# KEYS: name, record, ids. ARGV: the id, then the record's field/value pairs.
_CREATE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# KEYS: name, old record, new record, ids, then the records of the name's earlier keys (still
# in an earlier rotation's grace). ARGV: old id, new id, the old key's end, the number of
# earlier records, then the new record's field/value pairs. 0: the name has moved on since it
# was read (read again); -1: the old key was revoked meanwhile. No earlier key outlives the
# old one: `rotate --grace 0` ends every earlier secret at once, not only the last.
_ROTATE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'revoked') == '1' then return -1 end
local earlier = tonumber(ARGV[4])
redis.call('HSET', KEYS[3], unpack(ARGV, 5))
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[2], 'rotated_to', ARGV[2], 'expires_at', ARGV[3])
for i = 5, 4 + earlier do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local ends = redis.call('HGET', KEYS[i], 'expires_at')
    if not ends or tonumber(ends) > tonumber(ARGV[3]) then
      redis.call('HSET', KEYS[i], 'expires_at', ARGV[3])
    end
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# KEYS: name, ids, then the records. ARGV: their ids.
_DELETE = """
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
for i = 1, #ARGV do redis.call('SREM', KEYS[2], ARGV[i]) end
redis.call('DEL', KEYS[1])
return #ARGV
"""


class KeyStoreError(SidecarError):
    """A key-management request that cannot be carried out (name taken, no such key)."""


class KeyExists(KeyStoreError):
    """The name is taken (the admin API answers 409)."""


class NoSuchKey(KeyStoreError):
    """No key has that name (404)."""


class KeyRevoked(KeyStoreError):
    """The key is revoked and cannot be rotated (409)."""


def _id_key(key_id: str) -> str:
    return f"{_PREFIX}id:{key_id}"


def _name_key(name: str) -> str:
    return f"{_PREFIX}name:{name}"


def _pairs(fields: Mapping[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]


def _record(raw: Mapping[bytes | str, bytes | str]) -> KeyRecord | None:
    """The record in a hash, or None when the hash is not a whole record (absent, or a
    remnant of fields written around a deletion)."""
    if not {text(name) for name in raw} >= _REQUIRED:
        return None
    return KeyRecord.from_redis(raw)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly issued key: `key` is shown to the operator once and then forgotten."""

    key: str = field(repr=False)
    record: KeyRecord


class KeyStore:
    """Key records in Redis. Used by the serving path (`fetch`) and by `sidecar keys`."""

    def __init__(self, redis: RedisClient, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock
        self._set_if_present = redis.register_script(_SET_IF_PRESENT)
        self._create = redis.register_script(_CREATE)
        self._rotate = redis.register_script(_ROTATE)
        self._delete = redis.register_script(_DELETE)

    async def fetch(self, key_id: str) -> KeyRecord | None:
        """The record of `key_id`, or None when there is none."""
        return _record(await self._redis.hgetall(_id_key(key_id)))

    async def create(
        self,
        *,
        name: str,
        scopes: Iterable[str],
        prefix: str,
        environment: str,
        hasher: SecretHasher,
        expires_at: float | None = None,
        service: str | None = None,
        allow_ips: Iterable[str] = (),
    ) -> NewKey:
        """Issue a key under a new, unique name."""
        key, parsed = generate_key(prefix, environment)
        record = KeyRecord(
            key_id=parsed.key_id,
            name=name,
            hash=hasher.hash(parsed.secret),
            scopes=tuple(scopes),
            environment=environment,
            created_at=self._clock(),
            service=service,
            expires_at=expires_at,
            allow_ips=tuple(allow_ips),
        )
        created = await self._create(
            keys=[_name_key(name), _id_key(record.key_id), _IDS],
            args=[record.key_id, *_pairs(record.to_redis())],
        )
        if not created:
            raise KeyExists(f"a key named {name!r} exists already (rotate or delete it)")
        await self._announce(record.key_id)
        return NewKey(key=key, record=record)

    async def rotate(
        self, name: str, *, grace_s: float, prefix: str, hasher: SecretHasher
    ) -> NewKey:
        """Issue a new key under `name`; the old one keeps working for `grace_s` seconds, and
        no earlier key of the name longer than the old one (with 0, all end at once)."""
        while True:
            old = await self._current(name)
            if old.revoked:
                raise KeyRevoked(f"key {name!r} is revoked: delete it and create anew")
            now = self._clock()
            key, parsed = generate_key(prefix, old.environment)
            # The new key lives as long as the old one was made to: copying the old end
            # would issue a key as close to expiry as the one it replaces, or already
            # expired when an expired key is rotated.
            lifetime = None if old.expires_at is None else old.expires_at - old.created_at
            new = replace(
                old,
                key_id=parsed.key_id,
                hash=hasher.hash(parsed.secret),
                created_at=now,
                expires_at=None if lifetime is None else now + lifetime,
                rotated_from=old.key_id,
                rotated_to=None,
                last_used_at=None,
                exposed=False,
            )
            grace_end = now + max(grace_s, 0.0)
            old_end = grace_end if old.expires_at is None else min(old.expires_at, grace_end)
            # The earlier keys whose end the old one's now comes before. Read before the
            # script; a rotation in between moves the name on, and the script reads again.
            earlier = [
                record.key_id
                for record in await self.records_named(name)
                if record.key_id != old.key_id
                and (record.expires_at is None or record.expires_at > old_end)
            ]
            outcome = await self._rotate(
                keys=[
                    _name_key(name),
                    _id_key(old.key_id),
                    _id_key(new.key_id),
                    _IDS,
                    *(_id_key(key_id) for key_id in earlier),
                ],
                args=[
                    old.key_id,
                    new.key_id,
                    repr(old_end),
                    str(len(earlier)),
                    *_pairs(new.to_redis()),
                ],
            )
            if outcome == -1:
                raise KeyRevoked(f"key {name!r} is revoked: delete it and create anew")
            if outcome == 1:
                break
            # 0: someone rotated, deleted or re-created the name meanwhile: read again.
        # Every replica drops its cached copies of each key whose end moved, and forgets the
        # new id if it had it as unknown (first: it is the one a client is about to use).
        await self._announce(new.key_id, old.key_id, *earlier)
        return NewKey(key=key, record=new)

    async def revoke(self, name: str) -> list[str]:
        """Revoke the key under `name` and any older key of it still in its rotation grace."""
        ids = [record.key_id for record in await self.records_named(name)]
        if not ids:
            raise NoSuchKey(f"no key named {name!r}")
        await self._set_field(ids, "revoked", "1")
        await self._announce(*ids)
        return ids

    async def delete(self, name: str) -> list[str]:
        """Remove every record of `name`; its keys fail as unknown from then on."""
        ids = [record.key_id for record in await self.records_named(name)]
        if not ids:
            raise NoSuchKey(f"no key named {name!r}")
        await self._delete(
            keys=[_name_key(name), _IDS, *(_id_key(key_id) for key_id in ids)], args=ids
        )
        await self._announce(*ids)
        return ids

    async def records(self) -> list[KeyRecord]:
        """Every key's record, in id order."""
        ids = sorted(text(member) for member in await self._redis.smembers(_IDS))
        async with self._redis.pipeline(transaction=False) as pipe:
            for key_id in ids:
                pipe.hgetall(_id_key(key_id))
            raws = await pipe.execute()
        records = [record for record in map(_record, raws) if record is not None]
        return sorted(records, key=lambda record: (record.name, record.created_at))

    async def records_named(self, name: str) -> list[KeyRecord]:
        """The records of every key issued under `name` (rotations keep the name)."""
        return [record for record in await self.records() if record.name == name]

    async def mark_exposed(self, key_id: str) -> None:
        """Flag the key `exposed` (it was seen where keys must not be)."""
        await self._set_field([key_id], "exposed", "1")

    async def touch(self, key_id: str, when: float) -> None:
        """Record `last_used_at`; a key deleted meanwhile is not brought back as a stub."""
        await self._set_field([key_id], "last_used_at", repr(when))

    async def replace_hash(self, key_id: str, new_hash: str) -> None:
        """After the argon2 parameters change, store the hash re-made with the new ones."""
        await self._set_field([key_id], "hash", new_hash)

    async def _set_field(self, key_ids: list[str], name: str, value: str) -> None:
        await self._set_if_present(keys=[_id_key(key_id) for key_id in key_ids], args=[name, value])

    async def _current(self, name: str) -> KeyRecord:
        key_id = await self._redis.get(_name_key(name))
        if key_id is None:
            raise NoSuchKey(f"no key named {name!r}")
        record = _record(await self._redis.hgetall(_id_key(text(key_id))))
        if record is None:
            raise KeyStoreError(f"key {name!r} has no record (delete it and create anew)")
        return record

    async def _announce(self, *key_ids: str) -> None:
        for key_id in key_ids:
            await self._redis.publish(INVALIDATE_CHANNEL, key_id)

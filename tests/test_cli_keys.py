"""SPEC §10 `sidecar keys …` through the real command line (`python -m sidecar` subprocesses)
against the tests' Redis: a key is printed once, by create and rotate only; list shows
metadata and flags, never a hash or a key; exit 0 / 1 (runtime) / 2 (usage)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.config import Argon2
from sidecar.keys.format import KEY_PATTERN, parse_key
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.records import KeyRecord
from sidecar.keys.store import KeyStore
from sidecar.storage.embedded import EmbeddedRedis
from tests.authsupport import ROUTES, call
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import free_port, wait_until, write_config
from tests.keysupport import FAST_ARGON2, FAST_KEYS, Completed, sidecar_cli

CREATE_FIELDS = {"name", "id", "key", "scopes", "environment", "expires_at"}
DAY = 86400.0

pytestmark = pytest.mark.slow


@pytest.fixture
def config(tmp_path: Path, redis_server: EmbeddedRedis) -> Path:
    return write_config(
        tmp_path / "sidecar.yaml", {"redis": {"url": redis_server.url}, "keys": FAST_KEYS}
    )


@pytest.fixture
def store(redis_client: aioredis.Redis) -> KeyStore:
    """The keys as Redis holds them (and an emptied database to begin with)."""
    return KeyStore(redis_client)


async def keys_cli(config: Path, *args: str) -> Completed:
    # --config after the action: that placement works with every version of the parser.
    return await sidecar_cli("keys", *args, "--config", str(config))


def created(result: Completed) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def one_record(records: list[KeyRecord], name: str) -> KeyRecord:
    named = [record for record in records if record.name == name]
    assert len(named) == 1, named
    return named[0]


def assert_no_key_material(text: str, *keys: str) -> None:
    assert not KEY_PATTERN.search(text), text
    assert "$argon2" not in text
    for key in keys:
        assert key.split("_")[3][:16] not in text


# --- create -------------------------------------------------------------------------------


async def test_create_shows_the_key_once_and_it_verifies(config: Path, store: KeyStore) -> None:
    result = await keys_cli(
        config, "create", "--name", "billing", "--scope", "orders:read", "--scope", "orders:*"
    )
    assert result.returncode == 0, result.stderr
    shown = KEY_PATTERN.findall(result.stdout)
    assert len(shown) == 1, result.stdout
    key = shown[0]
    assert result.stdout.count(key.split("_")[3]) == 1
    assert not KEY_PATTERN.search(result.stderr)
    assert "only time" in result.stdout

    parsed = parse_key(key, "sk")
    assert parsed.environment == "live"
    record = one_record(await store.records(), "billing")
    assert record.key_id == parsed.key_id
    assert record.scopes == ("orders:read", "orders:*")
    assert record.expires_at is None
    assert SecretHasher(Argon2(**FAST_ARGON2)).verify(record.hash, parsed.secret)


async def test_create_json_has_exactly_the_documented_fields(config: Path, store: KeyStore) -> None:
    never, dated, at = await asyncio.gather(
        keys_cli(config, "create", "--name", "a", "--scope", "orders:read", "--json"),
        keys_cli(config, "create", "--name", "b", "--scope", "*", "--expires", "30d", "--json"),
        keys_cli(
            config,
            "create",
            "--name",
            "c",
            "--scope",
            "orders:write",
            "--service",
            "shop",
            "--expires",
            (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--json",
        ),
    )
    documents = [created(result) for result in (never, dated, at)]
    for document in documents:
        assert set(document) == CREATE_FIELDS
        parsed = parse_key(document["key"], "sk")
        assert parsed.key_id == document["id"]
        assert document["environment"] == "live"
    assert documents[0]["scopes"] == ["orders:read"]
    assert documents[0]["expires_at"] is None
    in_30_days = datetime.fromisoformat(documents[1]["expires_at"])
    assert abs((in_30_days - datetime.now(UTC)).total_seconds() - 30 * DAY) < 120
    in_2_days = datetime.fromisoformat(documents[2]["expires_at"])
    assert abs((in_2_days - datetime.now(UTC)).total_seconds() - 2 * DAY) < 120

    records = await store.records()
    assert {record.name for record in records} == {"a", "b", "c"}
    assert one_record(records, "c").service == "shop"
    assert one_record(records, "b").expires_at == pytest.approx(in_30_days.timestamp(), abs=1)


async def test_create_with_a_taken_name_fails_clearly(config: Path, store: KeyStore) -> None:
    first = created(await keys_cli(config, "create", "--name", "dup", "--scope", "a:b", "--json"))
    again = await keys_cli(config, "create", "--name", "dup", "--scope", "a:b", "--json")
    assert again.returncode == 1
    assert "dup" in again.stderr
    assert "exists" in again.stderr
    assert "Traceback" not in again.stderr
    assert again.stdout == ""
    record = one_record(await store.records(), "dup")
    assert record.key_id == first["id"]  # the first key is untouched


FAR = (datetime.now(UTC) + timedelta(days=3660)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--scope", "orders"], "--scope"),
        (["--scope", "orders:read\n"], "--scope"),
        (["--scope", "a:b", "--scope", "*\n"], "--scope"),
        (["--scope", "a:b:c"], "--scope"),
        (["--scope", "r:" + "a" * 63], "--scope"),
        (["--scope", "a:b", "--expires", "soon"], "--expires"),
        (["--scope", "a:b", "--expires", "2020-01-01T00:00:00Z"], "--expires"),
        (["--scope", "a:b", "--expires", "0"], "--expires"),
        (["--scope", "a:b", "--expires", "99999999999d"], "--expires"),
        (["--scope", "a:b", "--expires", "3651d"], "--expires"),
        (["--scope", "a:b", "--expires", FAR], "--expires"),
        (["--scope", "a:b", "--expires", "9999-12-31T23:59:59-14:00"], "--expires"),
        (["--scope", "a:b", "--expires", "0001-01-01T00:00:00+14:00"], "--expires"),
        (["--scope", "a:b", "--allow-ip", "not-a-cidr"], "--allow-ip"),
        (["--scope", "a:b", "--allow-ip", "10.0.0.0/8\n"], "--allow-ip"),
        (["--scope", "a:b", "--service", "shop\n"], "--service"),
        (["--scope", "a:b", "--service", "{keys}"], "--service"),
        (["--scope", "a:b", "--service", ""], "--service"),
    ],
    ids=["scope-without-action", "scope-with-newline", "star-with-newline", "two-colons",
         "scope-of-65", "bad-expires", "past-expires", "expires-now", "expires-overflow",
         "expires-too-far", "iso-too-far", "iso-year-9999", "iso-year-1", "bad-cidr",
         "cidr-with-newline", "service-with-newline", "service-with-braces", "empty-service"],
)  # fmt: skip
async def test_create_refuses_bad_values_with_exit_2(
    config: Path, store: KeyStore, options: list[str], named: str
) -> None:
    result = await keys_cli(config, "create", "--name", "bad", *options)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr  # one line, never a traceback
    assert result.stderr[:-1].isprintable()
    assert not KEY_PATTERN.search(result.stdout)
    assert await store.records() == []


@pytest.mark.parametrize(
    "name",
    ["billing\n", "", "x" * 65, "{keys}", "a b", "bill\x1b[2J"],
    ids=["trailing-newline", "empty", "65", "braces", "space", "escape"],
)
async def test_every_command_refuses_a_bad_name_with_exit_2(
    config: Path, store: KeyStore, name: str
) -> None:
    results = await asyncio.gather(
        keys_cli(config, "create", "--name", name, "--scope", "a:b"),
        # `--` ends the options (a NAME may start with '-'); --config comes before it.
        sidecar_cli("keys", "rotate", "--config", str(config), "--grace", "0", "--", name),
        sidecar_cli("keys", "revoke", "--config", str(config), "--", name),
        sidecar_cli("keys", "delete", "--config", str(config), "--", name),
    )
    for result, option in zip(results, ("--name", "NAME", "NAME", "NAME"), strict=True):
        assert result.returncode == 2, (result.returncode, result.stderr)
        assert result.stderr.startswith(f"sidecar: {option}: "), result.stderr
        assert "is not a name" in result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr[:-1].isprintable()
        assert result.stdout == ""
    assert await store.records() == []


async def test_the_spec_alphabet_and_its_bounds_are_taken(config: Path, store: KeyStore) -> None:
    name = "Team.svc_1:" + "x" * 53  # 64 characters, every kind the alphabet has
    document = created(
        await keys_cli(
            config,
            "create",
            "--name",
            name,
            "--scope",
            "Orders:Read",
            "--scope",
            "r:" + "a" * 62,
            "--service",
            "ns:shop-2",
            "--expires",
            "3650d",
            "--json",
        )
    )
    assert document["name"] == name
    record = one_record(await store.records(), name)
    assert record.scopes == ("Orders:Read", "r:" + "a" * 62)
    assert record.service == "ns:shop-2"
    assert record.expires_at == pytest.approx(time.time() + 3650 * DAY, abs=120)
    rotated = await keys_cli(config, "rotate", name, "--grace", "365d", "--json")
    assert created(rotated)["name"] == name


async def test_the_bounds_are_in_the_help() -> None:
    create, rotate = await asyncio.gather(
        sidecar_cli("keys", "create", "--help"), sidecar_cli("keys", "rotate", "--help")
    )
    assert "at most 3650d ahead" in " ".join(create.stdout.split())
    assert "at most 365d" in " ".join(rotate.stdout.split())


# --- list ---------------------------------------------------------------------------------


async def test_list_shows_status_and_flags_but_no_hash_and_no_key(
    config: Path, store: KeyStore, redis_client: aioredis.Redis
) -> None:
    hasher = SecretHasher(Argon2(**FAST_ARGON2))
    common: dict[str, Any] = {"prefix": "sk", "environment": "live", "hasher": hasher}
    aged = await KeyStore(redis_client, clock=lambda: time.time() - 400 * DAY).create(
        name="aged", scopes=["a:b"], **common
    )
    used = await store.create(name="used", scopes=["a:b"], **common)
    await store.touch(used.record.key_id, time.time())
    leaked = await store.create(name="leaked", scopes=["a:b"], **common)
    await store.mark_exposed(leaked.record.key_id)
    gone = await store.create(name="gone", scopes=["a:b"], **common)
    await store.revoke("gone")
    lapsed = await store.create(name="lapsed", scopes=["a:b"], expires_at=time.time() - 1, **common)
    rotating = await store.create(name="rot", scopes=["a:b"], **common)
    successor = await store.rotate("rot", grace_s=3600, prefix="sk", hasher=hasher)
    keys = [k.key for k in (aged, used, leaked, gone, lapsed, rotating, successor)]

    as_json, as_text = await asyncio.gather(
        keys_cli(config, "list", "--json"), keys_cli(config, "list")
    )
    assert as_json.returncode == 0, as_json.stderr
    assert as_text.returncode == 0, as_text.stderr
    for output in (as_json.stdout, as_text.stdout):
        assert_no_key_material(output, *keys)
        assert "hash" not in output.lower()

    rows = json.loads(as_json.stdout)
    assert isinstance(rows, list)
    assert len(rows) == 7
    for row in rows:
        for name in ("status", "rotation_due", "exposed", "last_used_at", "name", "id"):
            assert name in row, (name, row)
        assert "hash" not in row
        assert "key" not in row
    by_id = {row["id"]: row for row in rows}

    def row_of(new: Any) -> dict[str, Any]:
        return by_id[new.record.key_id]  # type: ignore[no-any-return]

    assert row_of(aged)["rotation_due"] is True
    assert row_of(aged)["status"] == "active"
    assert row_of(used)["rotation_due"] is False
    assert row_of(used)["last_used_at"] is not None
    assert row_of(aged)["last_used_at"] is None
    assert row_of(leaked)["exposed"] is True
    assert row_of(used)["exposed"] is False
    assert row_of(gone)["status"] == "revoked"
    assert row_of(lapsed)["status"] == "expired"
    assert row_of(rotating)["status"] == "rotating"
    assert row_of(successor)["status"] == "active"
    assert row_of(successor)["rotated_from"] == rotating.record.key_id

    lines = as_text.stdout.splitlines()
    header = lines[0].split()
    for column in ("NAME", "ID", "STATUS", "SCOPES", "EXPIRES_AT", "LAST_USED_AT", "FLAGS"):
        assert column in header
    line_of = {line.split()[1]: line for line in lines[1:] if line.strip()}
    assert "rotation_due" in line_of[aged.record.key_id]
    assert "exposed" in line_of[leaked.record.key_id]
    assert "revoked" in line_of[gone.record.key_id]
    assert "expired" in line_of[lapsed.record.key_id]
    assert "rotating" in line_of[rotating.record.key_id]


async def test_list_text_escapes_control_characters_in_what_it_shows(
    config: Path, store: KeyStore
) -> None:
    """Names are checked at `keys create`, but a record written some other way (an older
    version, a hand-made one) must not drive the terminal either."""
    hasher = SecretHasher(Argon2(**FAST_ARGON2))
    hostile = "x\x1b[2J\nFORGED  active\u202e\x9b"
    await store.create(
        name=hostile, scopes=["a:b\x07"], prefix="sk", environment="live", hasher=hasher
    )
    as_text, as_json = await asyncio.gather(
        keys_cli(config, "list"), keys_cli(config, "list", "--json")
    )
    assert as_text.returncode == 0, as_text.stderr
    lines = as_text.stdout.splitlines()
    assert len(lines) == 2  # the header and the one key: no forged line
    assert all(line.isprintable() for line in lines), lines
    assert "x\\x1b[2J\\nFORGED  active\\u202e\\x9b" in lines[1]
    assert "a:b\\x07" in lines[1]
    assert as_json.stdout[:-1].isprintable()
    (row,) = json.loads(as_json.stdout)
    assert row["name"] == hostile
    assert row["scopes"] == ["a:b\x07"]


async def test_list_with_no_keys_says_how_to_make_one(config: Path, store: KeyStore) -> None:
    as_text, as_json = await asyncio.gather(
        keys_cli(config, "list"), keys_cli(config, "list", "--json")
    )
    assert as_text.returncode == 0
    assert "keys create" in as_text.stdout
    assert json.loads(as_json.stdout) == []


# --- rotate, revoke, delete ---------------------------------------------------------------


async def test_rotate_with_no_grace_ends_the_old_key_at_once(config: Path, store: KeyStore) -> None:
    old = created(await keys_cli(config, "create", "--name", "svc", "--scope", "a:b", "--json"))
    result = await keys_cli(config, "rotate", "svc", "--grace", "0", "--json")
    new = created(result)
    assert set(new) == CREATE_FIELDS
    assert new["id"] != old["id"]
    assert new["name"] == "svc"
    assert parse_key(new["key"], "sk").key_id == new["id"]

    now = time.time()
    records = {record.key_id: record for record in await store.records()}
    assert records[old["id"]].status(now) == "expired"
    assert records[old["id"]].rotated_to == new["id"]
    assert records[new["id"]].status(now) == "active"


async def test_rotate_with_grace_keeps_the_old_key_for_it(config: Path, store: KeyStore) -> None:
    old = created(await keys_cli(config, "create", "--name", "svc", "--scope", "a:b", "--json"))
    result = await keys_cli(config, "rotate", "svc", "--grace", "24h")
    assert result.returncode == 0, result.stderr
    shown = KEY_PATTERN.findall(result.stdout)
    assert len(shown) == 1  # the new key, once
    assert old["key"] not in result.stdout
    new_id = parse_key(shown[0], "sk").key_id

    now = time.time()
    records = {record.key_id: record for record in await store.records()}
    previous = records[old["id"]]
    assert previous.status(now) == "rotating"
    assert previous.expires_at == pytest.approx(now + DAY, abs=60)
    assert records[new_id].status(now) == "active"


async def test_rotate_refuses_a_bad_grace_and_an_unknown_name(
    config: Path, store: KeyStore
) -> None:
    created(await keys_cli(config, "create", "--name", "svc", "--scope", "a:b", "--json"))
    unknown, *bad_graces = await asyncio.gather(
        keys_cli(config, "rotate", "nobody"),
        *(
            keys_cli(config, "rotate", "svc", "--grace", grace)
            for grace in ("a while", "99999999999d", "366d", "9" * 400 + "h")
        ),
    )
    for bad_grace in bad_graces:
        assert bad_grace.returncode == 2, bad_grace.stderr
        assert bad_grace.stderr.startswith("sidecar: --grace: "), bad_grace.stderr
        assert len(bad_grace.stderr.splitlines()) == 1, bad_grace.stderr
        assert "Traceback" not in bad_grace.stderr
    assert unknown.returncode == 1
    assert "nobody" in unknown.stderr
    assert len(await store.records()) == 1  # none made a key


async def test_revoke_then_delete(config: Path, store: KeyStore) -> None:
    key = created(await keys_cli(config, "create", "--name", "svc", "--scope", "a:b", "--json"))

    revoked = await keys_cli(config, "revoke", "svc")
    assert revoked.returncode == 0, revoked.stderr
    assert one_record(await store.records(), "svc").status(time.time()) == "revoked"
    assert_no_key_material(revoked.stdout, key["key"])

    deleted = await keys_cli(config, "delete", "svc", "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["name"] == "svc"
    assert await store.records() == []

    again = await asyncio.gather(
        keys_cli(config, "revoke", "svc"), keys_cli(config, "delete", "svc")
    )
    for result in again:
        assert result.returncode == 1
        assert "svc" in result.stderr
        assert "Traceback" not in result.stderr


# --- Redis unreachable --------------------------------------------------------------------


async def test_unreachable_redis_is_exit_1_naming_the_url_without_password(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "down.yaml",
        {"redis": {"url": f"redis://:hunter2@127.0.0.1:{port}/0"}, "keys": FAST_KEYS},
    )
    results = await asyncio.gather(
        keys_cli(config, "list"),
        keys_cli(config, "create", "--name", "x", "--scope", "a:b"),
        keys_cli(config, "revoke", "x"),
    )
    for result in results:
        assert result.returncode == 1, (result.returncode, result.stderr)
        assert f"127.0.0.1:{port}" in result.stderr
        assert "redis://" in result.stderr
        assert "hunter2" not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr
        assert not KEY_PATTERN.search(result.stdout)  # no key shown for a key never stored


# --- a CLI key through the proxy ----------------------------------------------------------


async def test_a_cli_key_works_and_list_reflects_its_use(
    config: Path, store: KeyStore, start_proxy: ProxyFactory
) -> None:
    proxy: Proxy = await start_proxy(keys=FAST_KEYS, routes=ROUTES)
    key = created(
        await keys_cli(config, "create", "--name", "app", "--scope", "orders:read", "--json")
    )
    assert (await call(proxy, "/v1/orders/1", key=key["key"])).status == 200
    assert (await call(proxy, "/v1/orders/1", params={"k": key["key"]})).status == 400

    async def last_used_written() -> bool:
        return one_record(await store.records(), "app").last_used_at is not None

    await wait_until(last_used_written, within=3)
    listed = await keys_cli(config, "list", "--json")
    (row,) = json.loads(listed.stdout)
    assert row["last_used_at"] is not None
    assert row["exposed"] is True
    assert_no_key_material(listed.stdout, key["key"])

    revoked = await keys_cli(config, "revoke", "app")
    assert revoked.returncode == 0

    async def refused() -> bool:
        return (await call(proxy, "/v1/orders/1", key=key["key"])).status == 401

    await wait_until(refused, within=1)

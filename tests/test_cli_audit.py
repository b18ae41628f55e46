"""SPEC §10: `sidecar audit tail|query` and `sidecar events tail` through the real command line,
reading records the sidecar's own record and event builders made, from the tests' real Redis."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sidecar.audit.crypto import BodyCipher, generate_key_line
from sidecar.audit.record import dumps_record
from sidecar.storage.embedded import EmbeddedRedis, free_port
from tests.audit_exchanges import an_event
from tests.helpers import write_config
from tests.keysupport import sidecar_cli
from tests.readsupport import (
    a_record,
    following,
    json_lines,
    next_line,
    seed,
    seeded,
    stop_following,
    ts_of,
)

AUDIT_STREAM = "sidecar:audit"
EVENTS_STREAM = "sidecar:auth-events"
EXIT_FAILURE, EXIT_USAGE = 1, 2
MINUTE_MS = 60_000
QUIET_S = 2.0


@pytest.fixture
def config(tmp_path: Path, redis_server: EmbeddedRedis) -> str:
    """A configuration for the reading commands: only where Redis is."""
    return str(write_config(tmp_path / "sidecar.yaml", {"redis": {"url": redis_server.url}}))


@pytest.fixture
def unreachable_config(tmp_path: Path) -> str:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    return str(write_config(tmp_path / "down.yaml", {"redis": {"url": url}}))


# -- audit tail -----------------------------------------------------------------------------------


async def test_audit_tail_shows_the_last_records_oldest_first(
    config: str, redis_client: aioredis.Redis
) -> None:
    entries = [seeded(status=200 + n, path=f"/v1/orders/{n}") for n in range(7)]
    documents = await seed(redis_client, [(1000 * (7 - n), e) for n, e in enumerate(entries)])

    table, as_json = await asyncio.gather(
        sidecar_cli("audit", "tail", "-n", "5", "--config", config),
        sidecar_cli("audit", "tail", "-n", "5", "--json", "--config", config),
    )
    assert as_json.stderr == ""
    assert json_lines(as_json) == documents[2:]  # one record per line, exactly as stored

    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert len(lines) == 5
    for line, entry in zip(lines, entries[2:], strict=True):
        assert f"id={entry.request_id}" in line
        assert str(entry.status) in line.split()
        assert "POST" in line.split()
        assert f"{entry.path}?a=1" in line.split()
        assert "key=alpha" in line.split()
    for entry in entries[:2]:
        assert entry.request_id not in table.stdout


async def test_audit_tail_on_an_empty_stream(config: str, redis_client: aioredis.Redis) -> None:
    table, as_json = await asyncio.gather(
        sidecar_cli("audit", "tail", "--config", config),
        sidecar_cli("audit", "tail", "--json", "--config", config),
    )
    assert table.returncode == 0, table.stderr
    assert "no entries" in table.stdout
    assert json_lines(as_json) == []  # --json prints nothing that is not a record


async def test_audit_tail_follow_waits_for_new_records(
    config: str, redis_client: aioredis.Redis
) -> None:
    """`--follow` keeps reading: longer than `redis.timeout_s` with nothing new is no error."""
    (old,) = await seed(redis_client, [(1000, seeded())])
    async with following("audit", "tail", "--config", config) as process:
        assert await next_line(process, 20) == old
        # Nothing new for four times the default redis.timeout_s (0.5 s): it must keep waiting.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), QUIET_S)
        assert process.returncode is None
        fresh = seeded(status=201)
        await redis_client.xadd(AUDIT_STREAM, {"record": dumps_record(a_record(fresh))})
        assert (await next_line(process, 10))["request_id"] == fresh.request_id
        await stop_following(process, signal.SIGINT)


async def test_events_tail_follow_on_an_empty_stream_shows_every_new_event(
    config: str, redis_client: aioredis.Redis
) -> None:
    async with following("events", "tail", "--config", config) as process:
        for n in range(3):
            event = an_event(
                "missing_key",
                request_id=f"follow-{n}",
                method="GET",
                path="/v1/orders/1",
                client_ip="198.51.100.7",
                detail="no key",
            )
            await redis_client.xadd(EVENTS_STREAM, {"event": json.dumps(event)})
            assert await next_line(process, 20) == event
        await stop_following(process, signal.SIGTERM)


# -- audit query ----------------------------------------------------------------------------------


async def test_audit_query_filters_by_time_status_key_and_path(
    config: str, redis_client: aioredis.Redis
) -> None:
    too_old = seeded()  # matches everything but --since
    wanted = [seeded(path="/v1/orders/1"), seeded(201, "/v1/customers"), seeded(204, "/v1/a/b/c")]
    others = [
        seeded(404, "/v1/orders/2"),  # status
        seeded(500, "/v1/orders/3"),  # status
        seeded(200, "/v1/orders/4", key_name="beta"),  # key
        seeded(200, "/v1/orders/5", key_name=None),  # public: no key name
        seeded(200, "/public/x"),  # path
        seeded(200, "/v2/orders/1"),  # path
    ]
    recent = [wanted[0], *others[:3], wanted[1], *others[3:], wanted[2]]
    await seed(
        redis_client,
        [(120 * MINUTE_MS, too_old), *[(1000 * (20 - n), e) for n, e in enumerate(recent)]],
    )

    def query(*filters: str) -> Any:
        return sidecar_cli("audit", "query", "--json", "--config", config, *filters)

    everything, filtered, exact, server_errors, table = await asyncio.gather(
        query("--since", "3h"),
        query("--since", "1h", "--status", "2xx", "--key-name", "alpha", "--path", "/v1/**"),
        query("--status", "404"),
        query("--status", "5XX", "--since", "30m"),
        sidecar_cli("audit", "query", "--key-name", "beta", "--config", config),
    )
    ids = [record["request_id"] for record in json_lines(everything)]
    assert ids == [too_old.request_id] + [entry.request_id for entry in recent]
    assert [r["request_id"] for r in json_lines(filtered)] == [e.request_id for e in wanted]
    assert [r["request_id"] for r in json_lines(exact)] == [others[0].request_id]
    assert [r["request_id"] for r in json_lines(server_errors)] == [others[1].request_id]
    assert table.returncode == 0, table.stderr
    assert [line.split("id=")[1] for line in table.stdout.splitlines()] == [others[2].request_id]


async def test_audit_query_pages_through_a_long_stream(
    config: str, redis_client: aioredis.Redis
) -> None:
    entries = [seeded(path=f"/v1/orders/{n}") for n in range(1200)]  # more than one page of 500
    pipe = redis_client.pipeline(transaction=False)
    now_ms = int(time.time() * 1000)
    for n, entry in enumerate(entries):
        pipe.xadd(AUDIT_STREAM, {"record": dumps_record(a_record(entry))}, id=f"{now_ms}-{n + 1}")
    await pipe.execute()
    result = await sidecar_cli("audit", "query", "--json", "--config", config)
    assert [r["request_id"] for r in json_lines(result)] == [e.request_id for e in entries]


# -- events tail ----------------------------------------------------------------------------------


async def test_events_tail_shows_authentication_events(
    config: str, redis_client: aioredis.Redis
) -> None:
    names = ["missing_key", "invalid_secret", "revoked_key", "missing_scope"]
    documents: list[dict[str, Any]] = []
    for n, name in enumerate(names):
        event = an_event(
            name,
            request_id=f"ev-{n}",
            method="GET",
            path=f"/v1/orders/{n}",
            client_ip="198.51.100.7",
            detail=f"detail {n}",
            key_id=None if name == "missing_key" else f"kid{n}",
            key_name=None if name == "missing_key" else "alpha",
        )
        await redis_client.xadd(EVENTS_STREAM, {"event": json.dumps(event)})
        documents.append(event)

    table, as_json = await asyncio.gather(
        sidecar_cli("events", "tail", "-n", "3", "--config", config),
        sidecar_cli("events", "tail", "--json", "--config", config),
    )
    assert json_lines(as_json) == documents
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert len(lines) == 3
    for line, name, n in zip(lines, names[1:], range(1, 4), strict=True):
        assert name in line.split()
        assert f"/v1/orders/{n}" in line
        assert "client=198.51.100.7" in line
        assert "key=alpha" in line
        assert f"detail {n}" in line
    assert "missing_key" not in table.stdout


async def test_audit_query_since_goes_by_the_records_own_time(
    config: str, redis_client: aioredis.Redis
) -> None:
    """SPEC §17: a record keeps the request's time; `--since` is about that, not the stream id."""
    now_ms = int(time.time() * 1000)
    skewed = seeded()  # made 50 min ago, its id 65 min ago: the host clock ahead of Redis's
    recent = seeded()
    replayed = seeded()  # made 2 h ago, in the stream only now: a spool replay
    for entry, ts_ms, id_ms in [
        (skewed, now_ms - 50 * MINUTE_MS, now_ms - 65 * MINUTE_MS),
        (recent, now_ms - MINUTE_MS, now_ms - MINUTE_MS),
        (replayed, now_ms - 120 * MINUTE_MS, now_ms),
    ]:
        record = dumps_record(a_record(entry, ts_of(ts_ms)))
        await redis_client.xadd(AUDIT_STREAM, {"record": record}, id=f"{id_ms}-0")
    hour, three_hours = await asyncio.gather(
        sidecar_cli("audit", "query", "--since", "1h", "--json", "--config", config),
        sidecar_cli("audit", "query", "--since", "3h", "--json", "--config", config),
    )
    assert [r["request_id"] for r in json_lines(hour)] == [skewed.request_id, recent.request_id]
    assert [r["request_id"] for r in json_lines(three_hours)] == [
        skewed.request_id,
        recent.request_id,
        replayed.request_id,
    ]


# -- encrypted streams and malformed entries (SPEC §17) -------------------------------------------


@pytest.fixture
def audit_keys(tmp_path: Path) -> Path:
    path = tmp_path / "audit.keys"
    path.write_text(generate_key_line("k2026") + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def encrypted_config(tmp_path: Path, redis_server: EmbeddedRedis, audit_keys: Path) -> str:
    document = {
        "redis": {"url": redis_server.url},
        "audit": {"encryption_key_file": str(audit_keys)},
    }
    return str(write_config(tmp_path / "encrypted.yaml", document))


async def add_between(
    redis: aioredis.Redis, stream: str, good: list[bytes], bad: list[tuple[dict[bytes, bytes], str]]
) -> list[str]:
    """XADD good and bad entries alternately, a good one first; the warning each bad one is due."""
    warnings = []
    for n, document in enumerate(good):
        await redis.xadd(stream, {stream_field(stream): document})
        if n < len(bad):
            fields, reason = bad[n]
            added: Any = await redis.xadd(stream, fields)  # type: ignore[arg-type]
            entry_id = added.decode()
            warnings.append(f"sidecar: warning: skipped {stream} entry {entry_id}: {reason}")
    return warnings


def stream_field(stream: str) -> str:
    return "record" if stream == AUDIT_STREAM else "event"


async def test_the_audit_readers_skip_malformed_entries_and_decrypt_the_rest(
    encrypted_config: str, audit_keys: Path, redis_client: aioredis.Redis
) -> None:
    cipher = BodyCipher.from_file(audit_keys)
    good = [seeded(path=f"/v1/orders/{n}") for n in range(6)]
    plain = [a_record(entry) for entry in good]
    sealed = [cipher.encrypt_record(record) for record in plain]
    swapped = cipher.encrypt_record(a_record(seeded()))
    swapped["path"] = sealed[0]["path"]  # a ciphertext moved here from another record
    bad = [
        ({b"other": b"x"}, "no 'record' field"),
        ({b"record": b"{not json"}, "the 'record' field is not JSON"),
        ({b"record": b"[1, 2]"}, "the 'record' field is not a JSON object"),
        ({b"record": b"\xff\xfe"}, "the 'record' field is not JSON"),
        ({b"record": dumps_record(swapped)}, "cannot decrypt: path: failed authentication "
         "(altered, or moved from another record or field)"),
    ]  # fmt: skip
    warnings = await add_between(redis_client, AUDIT_STREAM, [dumps_record(r) for r in sealed], bad)
    entries: Any = await redis_client.xrange(AUDIT_STREAM)
    stored = b"".join(value for _id, fields in entries for value in fields.values())
    assert b"/v1/orders/" not in stored  # the paths are sealed in Redis

    def cli(*arguments: str) -> Any:
        return sidecar_cli("audit", *arguments, "--config", encrypted_config)

    tail, query, text, filtered = await asyncio.gather(
        cli("tail", "-n", "100", "--json"),
        cli("query", "--json"),
        cli("tail", "-n", "100"),
        cli("query", "--path", "/v1/orders/3", "--json"),
    )
    for result in (tail, query):
        assert json_lines(result) == [json.loads(dumps_record(record)) for record in plain]
        assert result.stderr.splitlines() == warnings
    assert text.returncode == 0, text.stderr
    assert [line.split("id=")[1] for line in text.stdout.splitlines()] == [
        entry.request_id for entry in good
    ]
    assert f"{good[0].path}?a=1" in text.stdout.split()  # decrypted for the table too
    assert text.stderr.splitlines() == warnings
    # --path matches the decrypted path.
    assert [r["request_id"] for r in json_lines(filtered)] == [good[3].request_id]


async def test_events_tail_skips_malformed_entries_and_decrypts_paths(
    encrypted_config: str, audit_keys: Path, redis_client: aioredis.Redis
) -> None:
    cipher = BodyCipher.from_file(audit_keys)
    events = [
        an_event(
            "invalid_secret",
            request_id=f"ev-{n}",
            method="GET",
            path=f"/v1/orders/{n}",
            client_ip="198.51.100.7",
            detail="unknown or invalid API key",
        )
        for n in range(4)
    ]
    sealed = [cipher.encrypt_event(event) for event in events]
    moved = {**sealed[1], "path": sealed[0]["path"]}
    bad = [
        ({b"record": b"{}"}, "no 'event' field"),
        ({b"event": b"null"}, "the 'event' field is not a JSON object"),
        ({b"event": json.dumps(moved).encode()}, "cannot decrypt: path: failed authentication "
         "(altered, or moved from another record or field)"),
    ]  # fmt: skip
    documents = [json.dumps(event).encode() for event in sealed]
    warnings = await add_between(redis_client, EVENTS_STREAM, documents, bad)
    result = await sidecar_cli("events", "tail", "--json", "--config", encrypted_config)
    assert json_lines(result) == events
    assert result.stderr.splitlines() == warnings
    assert "/v1/orders" not in result.stderr


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["audit", "query", "--status", "2x"], "--status"),
        (["audit", "query", "--status", "600"], "--status"),
        (["audit", "query", "--status", "ok"], "--status"),
        (["audit", "query", "--since", "yesterday"], "--since"),
        (["audit", "tail", "-n", "0"], "-n"),
        (["events", "tail", "-n", "-3"], "-n"),
        # SPEC §14: out of range is a usage error in one line, not a traceback or a Redis error.
        (["audit", "query", "--since", "99999999999d"], "--since"),
        (["audit", "query", "--since", "3651d"], "--since"),
        (["audit", "query", "--since", "9" * 400 + "s"], "--since"),
        (["audit", "query", "--status", "404\n"], "--status"),
        (["audit", "tail", "-n", "99999999999999999999999"], "-n"),
        (["events", "tail", "-n", "100001"], "-n"),
    ],
)
async def test_bad_values_are_usage_errors(config: str, arguments: list[str], named: str) -> None:
    result = await sidecar_cli(*arguments, "--config", config)
    assert result.returncode == EXIT_USAGE, (result.stdout, result.stderr)
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert len(result.stderr) < 300
    assert result.stdout == ""


async def test_the_bounds_are_in_the_help() -> None:
    query, tail = await asyncio.gather(
        sidecar_cli("audit", "query", "--help"), sidecar_cli("events", "tail", "--help")
    )
    assert "at most 3650d" in " ".join(query.stdout.split())
    assert "1 to 100000" in " ".join(tail.stdout.split())


async def test_the_largest_since_is_taken(config: str, redis_client: aioredis.Redis) -> None:
    (document,) = await seed(redis_client, [(1000, seeded())])
    result = await sidecar_cli("audit", "query", "--since", "3650d", "--json", "--config", config)
    assert json_lines(result) == [document]


# -- text output is inert on a terminal (SPEC §14) ------------------------------------------------

HOSTILE = "/v1/\x1b[2J\x1b]0;pwned\x07\n2026-11-29T10:00:00Z  200  GET  /forged\u202e\x9b\u2028"
HOSTILE_SHOWN = (
    "/v1/\\x1b[2J\\x1b]0;pwned\\x07\\n2026-11-29T10:00:00Z  200  GET  /forged\\u202e\\x9b\\u2028"
)


def assert_inert(output: str, lines: int) -> None:
    """`lines` lines of output, none with a control character (the newlines end them)."""
    assert output.count("\n") == lines, output
    for line in output.splitlines():
        assert line.isprintable(), repr(line)


async def test_audit_text_output_escapes_what_a_request_carried(
    config: str, redis_client: aioredis.Redis
) -> None:
    entry = seeded(path=HOSTILE, key_name="k\x1b[31m")
    (document,) = await seed(redis_client, [(1000, entry)])

    tail, query, tail_json, query_json = await asyncio.gather(
        sidecar_cli("audit", "tail", "--config", config),
        sidecar_cli("audit", "query", "--config", config),
        sidecar_cli("audit", "tail", "--json", "--config", config),
        sidecar_cli("audit", "query", "--json", "--config", config),
    )
    for result in (tail, query):
        assert result.returncode == 0, result.stderr
        assert_inert(result.stdout, lines=1)
        assert HOSTILE_SHOWN in result.stdout
        assert "key=k\\x1b[31m" in result.stdout
    for result in (tail_json, query_json):
        assert_inert(result.stdout, lines=1)
        assert json_lines(result) == [document]  # the exact values, escaped only as JSON


async def test_events_text_output_escapes_what_a_request_carried(
    config: str, redis_client: aioredis.Redis
) -> None:
    event = an_event(
        "invalid_secret",
        request_id="ev-hostile",
        method="GET",
        path=HOSTILE,
        client_ip="198.51.100.7",
        detail="bad\nsecret\u2029",
        key_id="kid",
        key_name="alpha",
    )
    await redis_client.xadd(EVENTS_STREAM, {"event": json.dumps(event)})
    table, as_json = await asyncio.gather(
        sidecar_cli("events", "tail", "--config", config),
        sidecar_cli("events", "tail", "--json", "--config", config),
    )
    assert table.returncode == 0, table.stderr
    assert_inert(table.stdout, lines=1)
    assert HOSTILE_SHOWN in table.stdout
    assert "bad\\nsecret\\u2029" in table.stdout
    assert_inert(as_json.stdout, lines=1)
    assert json_lines(as_json) == [event]


@pytest.mark.parametrize(
    "arguments",
    [["audit", "tail"], ["audit", "query", "--status", "2xx"], ["events", "tail", "--json"]],
)
async def test_redis_unreachable_is_a_runtime_failure(
    unreachable_config: str, arguments: list[str]
) -> None:
    result = await sidecar_cli(*arguments, "--config", unreachable_config)
    assert result.returncode == EXIT_FAILURE, (result.stdout, result.stderr)
    assert "cannot reach Redis" in result.stderr
    assert "Traceback" not in result.stderr

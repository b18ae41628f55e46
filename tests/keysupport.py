"""Helpers shared by the API-key tests: issuing keys at run time, reading metrics and events.

Keys are always generated while the tests run; none is ever written into the repository.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from sidecar.config import Settings
from sidecar.keys.format import BASE62, checksum
from sidecar.keys.hashing import SecretHasher
from sidecar.keys.store import INVALIDATE_CHANNEL, KeyStore, NewKey
from tests.helpers import sidecar_env, wait_until

# argon2id at its cheapest, so the suite stays fast; one test checks the real defaults.
FAST_ARGON2: dict[str, int] = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
FAST_KEYS: dict[str, Any] = {"argon2": FAST_ARGON2}
EVENTS_STREAM = "sidecar:auth-events"


def keys_section(**overrides: Any) -> dict[str, Any]:
    """A `keys:` settings section with fast argon2 and the given overrides."""
    return {**FAST_KEYS, **overrides}


async def issue(
    redis: aioredis.Redis,
    settings: Settings,
    name: str,
    scopes: Iterable[str],
    *,
    environment: str | None = None,
    **options: Any,
) -> NewKey:
    """A new key in Redis, made the way `sidecar keys create` makes it."""
    return await KeyStore(redis).create(
        name=name,
        scopes=scopes,
        prefix=settings.keys.prefix,
        environment=environment or settings.keys.environment,
        hasher=SecretHasher(settings.keys.argon2),
        **options,
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample from Prometheus text; 0.0 when the series does not exist yet."""
    wanted = ",".join(f'{k}="{v}"' for k, v in (labels or {}).items())
    series = f"{name}{{{wanted}}}" if wanted else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        if sample == series:
            return float(value)
    return 0.0


async def command_calls(redis: aioredis.Redis) -> dict[str, int]:
    """Calls per Redis command so far (`INFO commandstats`), e.g. {"hgetall": 3}."""
    info = await redis.info("commandstats")
    calls: dict[str, int] = {}
    for name, stats in info.items():
        command = name.removeprefix("cmdstat_")
        if isinstance(stats, dict):
            calls[command] = int(stats["calls"])
        else:  # some redis-py versions leave the value unparsed: "calls=3,usec=…"
            match = re.search(r"calls=(\d+)", str(stats))
            calls[command] = int(match.group(1)) if match else 0
    return calls


async def read_events(redis: aioredis.Redis, stream: str = EVENTS_STREAM) -> list[dict[str, Any]]:
    """Every authentication event in the stream, oldest first, as parsed JSON documents."""
    entries = await redis.xrange(stream) or []
    return [json.loads(fields[b"event"]) for _id, fields in entries if fields is not None]


async def event_for(
    redis: aioredis.Redis, request_id: str, stream: str = EVENTS_STREAM
) -> dict[str, Any] | None:
    for event in await read_events(redis, stream):
        if event.get("request_id") == request_id:
            return event
    return None


async def invalidation_listeners(redis: aioredis.Redis) -> int:
    """How many processes are subscribed to key invalidations right now."""
    counts = await redis.pubsub_numsub(INVALIDATE_CHANNEL)
    return int(counts[0][1]) if counts else 0


async def wait_for_invalidation_listeners(redis: aioredis.Redis, count: int = 1) -> None:
    """A sidecar clears its key cache when its invalidation feed (re)subscribes; tests that
    count argon2 runs or cache hits wait for that first, so the clear cannot land mid-test."""

    async def listening() -> bool:
        return await invalidation_listeners(redis) >= count

    await wait_until(listening, within=5)


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


CLI_DEADLINE_S = 30.0


async def sidecar_cli(*args: str) -> Completed:
    """`python -m sidecar ARGS` without blocking the event loop (in-process sidecars and the
    upstream keep serving meanwhile); killed if it outlives `CLI_DEADLINE_S`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=sidecar_env(),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_DEADLINE_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Completed(process.returncode, out.decode(), err.decode())


def with_other_secret(key: str) -> str:
    """The same prefix, environment and id with another secret and a valid checksum."""
    prefix, environment, key_id, _ = key.split("_")
    secret = "".join(secrets.choice(BASE62) for _ in range(43))
    body = f"{prefix}_{environment}_{key_id}_{secret}"
    return body + checksum(body)


def with_one_char_changed(key: str) -> str:
    position = len(key) - 20  # inside the secret
    replacement = "A" if key[position] != "A" else "B"
    return key[:position] + replacement + key[position + 1 :]

"""A downstream consumer of the audit stream, with a consumer group.

Every record is delivered to exactly one consumer of the group and stays pending until it is
acknowledged, so a consumer that crashes mid-record gets it again (or another consumer claims
it). Run several copies with different --consumer names to share the load:

    python examples/consume_audit.py --redis redis://127.0.0.1:6379/0 --consumer worker-1

Records are JSON in the field `record` (SPEC §7). Bodies may be `enc:v1:…` tokens when
audit encryption is on: decrypt them with sidecar.audit.crypto.BodyCipher if you hold the key.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import redis


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create the group at the start of the stream (and the stream itself) if missing."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def consume(
    client: redis.Redis,
    handle: Callable[[dict[str, Any]], None],
    *,
    stream: str = "sidecar:audit",
    group: str = "audit-readers",
    consumer: str = "worker-1",
    batch: int = 100,
    block_ms: int = 5000,
    max_batches: int | None = None,
) -> int:
    """Read, handle and acknowledge records; return how many were handled.

    First re-reads this consumer's own pending records (delivered before a crash, never
    acknowledged), then new ones. `max_batches` bounds the loop (None: forever).
    """
    ensure_group(client, stream, group)
    handled = 0
    start_id = "0"  # our pending entries first; ">" means never-delivered ones
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        response: Any = client.xreadgroup(
            group, consumer, {stream: start_id}, count=batch, block=block_ms
        )
        entries = response[0][1] if response else []
        if not entries and start_id == "0":
            start_id = ">"  # nothing pending any more: switch to new records
            continue
        for entry_id, fields in entries:
            handle(json.loads(fields[b"record"]))
            client.xack(stream, group, entry_id)  # only after the record is safely handled
            handled += 1
    return handled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--stream", default="sidecar:audit")
    parser.add_argument("--group", default="audit-readers")
    parser.add_argument("--consumer", default="worker-1")
    args = parser.parse_args()

    def show(record: dict[str, Any]) -> None:
        status = record["response"]["status"]
        print(record["ts"], status, record["method"], record["path"], record["key_name"])

    client = redis.Redis.from_url(args.redis)
    consume(client, show, stream=args.stream, group=args.group, consumer=args.consumer)


if __name__ == "__main__":
    main()

"""Streams of sealed documents for the tests of `audit verify` and retention: each document is
sealed with `integrity.seal` exactly as a writer seals it, then XADDed with the writer's
high-water mark set as its append script sets it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from sidecar.archive.tables import AUDIT_RECORDS, AUTH_EVENTS, ArchivedStream
from sidecar.audit.crypto import BodyCipher, generate_key_line
from sidecar.audit.findings import StreamReport
from sidecar.audit.integrity import IntegrityKeys, seal
from sidecar.audit.keyfiles import load_audit_keys
from sidecar.audit.record import capture, dumps_record
from sidecar.audit.retention import DAY_MS, redis_now_ms
from sidecar.cli.verify import verify_stream
from sidecar.config import Settings
from tests.audit_exchanges import a_record, an_event
from tests.helpers import write_config

AUDIT_STREAM = "sidecar:audit"
EVENTS_STREAM = "sidecar:auth-events"
FIELDS = {AUDIT_STREAM: "record", EVENTS_STREAM: "event"}
SOURCES = {
    AUDIT_STREAM: ArchivedStream(AUDIT_STREAM, "record", AUDIT_RECORDS),
    EVENTS_STREAM: ArchivedStream(EVENTS_STREAM, "event", AUTH_EVENTS),
}


def integrity_keys(*ids: str) -> IntegrityKeys:
    """Fresh random integrity keys under `ids` (the first signs)."""
    return IntegrityKeys.of([(key_id, os.urandom(32)) for key_id in ids or ("k1",)])


def a_document(stream: str, n: int) -> bytes:
    """A realistic unsealed document for `stream`: a record or an event, numbered `n`."""
    if stream == EVENTS_STREAM:
        event = an_event(
            "invalid_secret",
            request_id=f"ev-{n}",
            method="GET",
            path=f"/v1/orders/{n}",
            client_ip="198.51.100.7",
            detail="no such key",
        )
        return json.dumps(event, separators=(",", ":")).encode()
    record = a_record(
        ts="2026-11-29T10:00:00.123456Z",
        request_id=f"req-{n}",
        method="POST",
        path=f"/v1/orders/{n}",
        query="a=1",
        client_ip="203.0.113.9",
        key_name="billing",
        key_id="kid",
        scopes=["orders:write"],
        request_headers={"content-type": "application/json"},
        raw_body=capture(b'{"qty":%d}' % n, 65536),
        mapped_body=None,
        response_status=201,
        response_headers={},
        response_body=capture(b"{}", 65536),
        duration_ms=3.25,
        upstream_ms=2.5,
        card_numbers="redact",
        credentials="redact",
    )
    return dumps_record(record)


@dataclass
class ChainWriter:
    """One writer's chain on one stream: seals the next document and appends it."""

    stream: str
    keys: IntegrityKeys | None
    writer: str = field(default_factory=lambda: os.urandom(8).hex())
    seq: int = 0
    prev: str = ""
    appended: list[tuple[str, bytes]] = field(default_factory=list)  # (entry id, document)

    @property
    def field(self) -> str:
        """The stream's document field."""
        return FIELDS[self.stream]

    def seal(self, document: bytes | None = None) -> bytes:
        """The next document of the chain, sealed (a fresh realistic one when not given)."""
        self.seq += 1
        sealed = seal(
            self.stream,
            document if document is not None else a_document(self.stream, self.seq),
            writer=self.writer,
            seq=self.seq,
            prev=self.prev,
            keys=self.keys,
        )
        self.prev = sealed.digest
        return sealed.document

    async def append(
        self, redis: aioredis.Redis, count: int = 1, *, age_days: float | None = None
    ) -> list[tuple[str, bytes]]:
        """Seal and XADD `count` documents, `age_days` old by Redis's clock when given (else
        now); set the writer's mark as its append script does. The (entry id, document)s."""
        added = []
        start_ms = None
        if age_days is not None:
            start_ms = await redis_now_ms(redis, self.stream) - int(age_days * DAY_MS)
        for n in range(count):
            document = self.seal()
            entry_id = "*" if start_ms is None else f"{start_ms}-{n + 1}"
            stored: Any = await redis.xadd(self.stream, {self.field: document}, id=entry_id)
            added.append((stored.decode(), document))
        await self.set_mark(redis)
        self.appended += added
        return added

    async def set_mark(self, redis: aioredis.Redis) -> None:
        """The writer's high-water mark: its last seq, as its append script records it."""
        await redis.set(f"{{{self.stream}}}:writer:{self.writer}", self.seq)


async def add_raw(redis: aioredis.Redis, stream: str, document: bytes) -> str:
    """XADD `document` as is (a forgery, a replay): its entry id."""
    entry_id: Any = await redis.xadd(stream, {FIELDS[stream]: document})
    return str(entry_id.decode())


async def verified(
    redis: aioredis.Redis, stream: str, keys: IntegrityKeys | None, **options: Any
) -> StreamReport:
    """What `audit verify` reports on `stream` (its own walk: checkpoints, marks, pages)."""
    client: Any = redis
    return await verify_stream(client, SOURCES[stream], keys, **options)


def kinds(report: StreamReport) -> dict[str, int]:
    """Every finding of the stream, counted by kind."""
    counts: dict[str, int] = {}
    for writer in [*report.writers, report.unattributed]:
        for kind, count in writer.counts.items():
            counts[kind] = counts.get(kind, 0) + count
    return counts


class Keyed:
    """A configuration with an encryption key file (integrity keys derived from it), and
    writers that encrypt and seal as the sidecar does."""

    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        key_file = tmp_path / "audit.keys"
        key_file.write_text(generate_key_line("k2026") + "\n", encoding="utf-8")
        key_file.chmod(0o600)
        audit = {"encryption_key_file": str(key_file)}
        self.config = str(
            write_config(tmp_path / "keyed.yaml", {"redis": {"url": redis_url}, "audit": audit})
        )
        settings = Settings(redis={"url": redis_url}, audit=audit)
        keys = load_audit_keys(settings).integrity
        assert keys is not None
        self.keys: IntegrityKeys = keys
        self.cipher = BodyCipher.from_file(key_file)

    async def append(self, redis: aioredis.Redis, writer: ChainWriter, count: int) -> list[str]:
        """`count` documents, content encrypted, sealed and added: their entry ids."""
        ids = []
        for _ in range(count):
            plain = json.loads(a_document(writer.stream, writer.seq + 1))
            sealed = (
                self.cipher.encrypt_record(plain)
                if writer.stream == AUDIT_STREAM
                else self.cipher.encrypt_event(plain)
            )
            document = writer.seal(dumps_record(sealed))
            entry_id: Any = await redis.xadd(writer.stream, {writer.field: document})
            ids.append(entry_id.decode())
        await writer.set_mark(redis)
        return ids

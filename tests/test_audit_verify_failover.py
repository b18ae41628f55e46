"""SPEC §17 across SPEC §13's failover (issue 12): a sidecar started through Sentinel, with an
encryption key file (so every record and event is MAC'd), keeps writing while the master is
killed and the replica promoted; `audit verify` on the new master then finds nothing wrong in
either stream, every answered request has exactly one record, and one XDEL there is found.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from sidecar.archive.tables import AUDIT_RECORDS, AUTH_EVENTS, ArchivedStream
from sidecar.audit.crypto import generate_key_line
from sidecar.audit.findings import StreamReport
from sidecar.audit.integrity import IntegrityKeys
from sidecar.audit.keyfiles import load_audit_keys
from sidecar.cli.verify import verify_stream
from tests.auditsupport import send
from tests.chainsupport import kinds
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import readyz_status, wait_until
from tests.keysupport import metric_value
from tests.redis_scenarios import (
    AUDIT_STREAM,
    EVENTS_STREAM,
    FAILOVER_DEADLINE_S,
    metrics,
    wait_recorded,
)
from tests.redis_topologies import SentinelSetup, caught_up, running_sentinel_setup

pytestmark = pytest.mark.slow

ROUTES = [
    {"path": "/public/**", "public": True},
    {"path": "/v1/**", "scopes": ["orders:read"]},
]
WRONG_KEY = {"Authorization": "Bearer nope"}  # refused with 401: an event, no record


@pytest.fixture
def setup() -> Iterator[SentinelSetup]:
    with running_sentinel_setup() as started:
        yield started


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.keys"
    path.write_text(generate_key_line("k1") + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass
class Answered:
    """The request ids the sidecar answered, by the stream that must hold them."""

    audited: list[str] = field(default_factory=list)  # routed: 2xx and the upstream's 404
    refused: list[str] = field(default_factory=list)  # 401: an authentication event each

    async def some(self, proxy: Proxy, tag: str) -> None:
        """A 200, an upstream 404 and a 401 (asserting each status)."""
        ok = await send(proxy, "POST", f"/public/{tag}", data=b'{"n": 1}')
        missing = await send(proxy, "GET", "/public/status/404")
        refused = await send(proxy, "GET", "/v1/orders/1", headers=WRONG_KEY)
        assert (ok.status, missing.status, refused.status) == (200, 404, 401), tag
        self.audited += [ok.request_id, missing.request_id]
        self.refused.append(refused.request_id)


async def verified(client: aioredis.Redis, keys: IntegrityKeys) -> tuple[StreamReport, ...]:
    """`audit verify`'s reports on the audit stream and the events stream."""
    redis_client: Any = client
    return (
        await verify_stream(
            redis_client, ArchivedStream(AUDIT_STREAM, "record", AUDIT_RECORDS), keys
        ),
        await verify_stream(
            redis_client, ArchivedStream(EVENTS_STREAM, "event", AUTH_EVENTS), keys
        ),
    )


async def exactly_once(client: aioredis.Redis, answered: Answered) -> None:
    """Each stream holds one entry per answered request id, and nothing else."""
    redis_client: Any = client
    for stream, wanted in ((AUDIT_STREAM, answered.audited), (EVENTS_STREAM, answered.refused)):
        counts = await wait_recorded(redis_client, wanted, stream=stream)
        assert counts == Counter(wanted), stream
        assert set(counts.values()) == {1}, stream


async def test_verify_is_clean_on_the_new_master_after_a_failover(
    setup: SentinelSetup, start_proxy: ProxyFactory, key_file: Path
) -> None:
    proxy: Proxy = await start_proxy(
        redis={"url": setup.url},
        audit={"encryption_key_file": str(key_file)},
        rate_limits={"unauthenticated_per_ip": None},
        routes=ROUTES,
    )
    keys = load_audit_keys(proxy.server.sidecar.settings).integrity
    assert keys is not None, "an encryption key file implies a derived integrity key"
    answered = Answered()
    async with (
        aioredis.Redis(port=setup.master.port, socket_timeout=5) as old_master,
        aioredis.Redis(port=setup.replica.port, socket_timeout=5) as new_master,
    ):
        for n in range(3):
            await answered.some(proxy, f"before/{n}")
        await exactly_once(old_master, answered)

        async def replica_synced() -> bool:
            with (
                redis.Redis(port=setup.master.port, socket_timeout=5) as master,
                redis.Redis(port=setup.replica.port, socket_timeout=5) as replica,
            ):
                return caught_up(master, replica)

        # Asynchronous replication loses what the replica has not received: that would be a
        # real gap, rightly reported, and not what this test is about.
        await wait_until(replica_synced, within=10, interval=0.05)

        killed_at = time.monotonic()
        setup.master.stop()
        during = 0

        async def serving_again() -> bool:
            # Requests keep coming while Redis has no master: their records go to the spool
            # and must reach the new master once, in chain order, with the rest.
            nonlocal during
            await answered.some(proxy, f"during/{during}")
            during += 1
            promoted = setup.master_port() == setup.replica.port
            # `/readyz` is green only once the sidecar writes to Redis again (its probe key
            # and its writers' last append): the sidecar, not only the Sentinel, moved on.
            return promoted and await readyz_status(proxy.session, proxy.server.health_port) == 200

        await wait_until(serving_again, within=FAILOVER_DEADLINE_S, interval=0.05)
        failover_s = time.monotonic() - killed_at

        for n in range(3):
            await answered.some(proxy, f"after/{n}")
        await exactly_once(new_master, answered)
        # The records of the requests answered meanwhile went through the spool: the chain
        # crossed the failover by replay, not only by the writer reconnecting.
        text = await metrics(proxy)
        assert metric_value(text, "sidecar_audit_records_total", {"outcome": "replayed"}) >= 1

        records, events = await verified(new_master, keys)
        assert records.findings == 0, kinds(records)
        assert events.findings == 0, kinds(events)
        assert records.entries == len(answered.audited)
        assert events.entries == len(answered.refused)
        # One sidecar process, one writer per stream: a single chain across the failover.
        assert [w.records for w in records.writers] == [len(answered.audited)]
        assert [w.records for w in events.writers] == [len(answered.refused)]

        # The same streams with one entry removed each: the verifier must see it.
        for stream in (AUDIT_STREAM, EVENTS_STREAM):
            entries: Any = await new_master.xrange(stream)
            await new_master.xdel(stream, entries[len(entries) // 2][0])
        records, events = await verified(new_master, keys)
        assert kinds(records) == {"gap": 1}
        assert kinds(events) == {"gap": 1}
    print(f"failover: {failover_s:.1f} s, {during} rounds sent meanwhile")

"""SPEC §13 on a real Sentinel-managed Redis (`redis+sentinel://…/mymaster/0`): a master, its
replica and a Sentinel, each a `redis-server` on loopback; the URL also lists a Sentinel that
is not there, which the client must get past. The sidecar and the CLI run against it
unchanged; killing the master makes the Sentinel promote the replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import ProxyFactory
from tests.redis_scenarios import (
    Topology,
    failover_keeps_serving_and_recovers,
    keys_audit_events_and_revocation,
)
from tests.redis_topologies import SentinelSetup, caught_up, running_sentinel_setup

pytestmark = pytest.mark.slow


@pytest.fixture
def setup() -> Iterator[SentinelSetup]:
    with running_sentinel_setup() as started:
        yield started


def topology_of(setup: SentinelSetup) -> Topology:
    def replica_synced() -> bool:
        with (
            redis.Redis(port=setup.master.port, socket_timeout=5) as master,
            redis.Redis(port=setup.replica.port, socket_timeout=5) as replica,
        ):
            return caught_up(master, replica)

    def promoted() -> bool:
        return setup.master_port() == setup.replica.port

    return Topology(
        redis={"url": setup.url},
        servers=lambda: [setup.master, setup.replica],
        doomed=setup.master,
        replica_synced=replica_synced,
        promoted=promoted,
    )


async def test_keys_audit_events_and_revocation_through_sentinel(
    setup: SentinelSetup, start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    await keys_audit_events_and_revocation(start_proxy, topology_of(setup), tmp_path)


async def test_failover_of_the_master(setup: SentinelSetup, start_proxy: ProxyFactory) -> None:
    outage = await failover_keeps_serving_and_recovers(
        start_proxy, topology_of(setup), setup.master.stop
    )
    print(f"sentinel failover: {outage}")

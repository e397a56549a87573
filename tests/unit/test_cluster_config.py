"""A local cluster's nodes agree on voters and cluster id, and keep their ports (no JVM)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from maas import broker_cli
from maas.broker import BrokerError
from maas.cluster import LocalCluster, cluster_properties


def test_three_nodes_share_voters_and_cluster_id(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    assert [n.node_id for n in cluster.nodes] == [1, 2, 3]
    assert len({n.port for n in cluster.nodes} | {n.controller_port for n in cluster.nodes}) == 6
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in cluster.nodes)
    assert {n.voters for n in cluster.nodes} == {voters}
    assert len({n.cluster_id for n in cluster.nodes}) == 1
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes)
    assert cluster.node(2) is cluster.nodes[1]
    with pytest.raises(BrokerError):
        cluster.node(4)


def test_saved_ports_are_used_again(tmp_path: Path) -> None:
    state = {"cluster_id": "AAAAAAAAAAAAAAAAAAAAAA", "nodes": [[1001, 2001], [1002, 2002]]}
    (tmp_path / "cluster.json").write_text(json.dumps(state))
    assert LocalCluster.saved_nodes(tmp_path) == 2
    cluster = LocalCluster(tmp_path, nodes=2)
    assert cluster.bootstrap == "127.0.0.1:1001,127.0.0.1:1002"
    assert cluster.voters == "1@127.0.0.1:2001,2@127.0.0.1:2002"
    assert {n.cluster_id for n in cluster.nodes} == {"AAAAAAAAAAAAAAAAAAAAAA"}
    with pytest.raises(BrokerError, match="describes 2 nodes, not 3"):
        LocalCluster(tmp_path, nodes=3)


def test_durability_settings_follow_the_node_count() -> None:
    three = cluster_properties(3)
    assert three["default.replication.factor"] == "3"
    assert three["min.insync.replicas"] == "2"
    assert three["transaction.state.log.min.isr"] == "2"
    assert three["unclean.leader.election.enable"] == "false"
    # Fewer nodes than three: a replication factor the cluster can hold.
    assert cluster_properties(2)["offsets.topic.replication.factor"] == "2"


def _args(**values: object) -> argparse.Namespace:
    return argparse.Namespace(**{"nodes": None, "home": None, "port": None, **values})


def test_cli_picks_the_single_broker_or_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAS_DATA_DIR", str(tmp_path))
    assert broker_cli._cluster_home(_args()) is None
    assert broker_cli._cluster_home(_args(nodes=1)) is None
    assert broker_cli._cluster_home(_args(nodes=3)) == tmp_path / "kafka-cluster"
    with pytest.raises(BrokerError):
        broker_cli._cluster_home(_args(nodes=3, port=9092))
    # A home with a cluster.json is a cluster's; any other is a single broker's.
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cluster.json").write_text('{"cluster_id": "x", "nodes": [[1, 2]]}')
    assert broker_cli._cluster_home(_args(home=tmp_path / "c")) == tmp_path / "c"
    assert broker_cli._cluster_home(_args(home=tmp_path / "single")) is None


def test_a_broken_cluster_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text('["not", "a", "cluster"]')
    with pytest.raises(BrokerError, match="not a cluster's"):
        LocalCluster(tmp_path)

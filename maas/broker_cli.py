"""``maas kafka start|stop|status|logs``: the local single-node broker of ``maas.broker``,
or with ``--nodes N`` (N > 1) the local N-node cluster of ``maas.cluster``.

Output is one ``key=value`` line per event so scripts can grep it; a started cluster also
prints one ``export ...`` line for the shell. When ``KAFKA_BOOTSTRAP_SERVERS`` names a
cluster, that cluster is used and nothing is started.

Which local Kafka a command means: ``--nodes 1`` the single broker (``<data_dir>/kafka``),
``--nodes N`` the cluster (``<data_dir>/kafka-cluster``); ``--home`` overrides the folder,
and a folder with a ``cluster.json`` is a cluster's. Without either, ``stop`` and
``status`` act on the single broker and, if one was ever started, the cluster too.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from core.settings import Settings
from maas.arguments import positive, positive_seconds, tcp_port
from maas.broker import BrokerError, LocalBroker
from maas.cluster import LocalCluster

DEFAULT_PORT = 9092


def say(**fields: object) -> None:
    parts = []
    for key, value in fields.items():
        text = str(value)
        parts.append(f"{key}={text!r}" if (" " in text or not text) else f"{key}={text}")
    print(" ".join(parts), flush=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    kafka = subparsers.add_parser("kafka", help="run a local Kafka broker or cluster")
    sub = kafka.add_subparsers(dest="kafka_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--home",
            type=Path,
            default=None,
            help="default: <data_dir>/kafka, or <data_dir>/kafka-cluster with --nodes N > 1",
        )
        p.add_argument("--port", type=tcp_port, default=None, help=f"default: {DEFAULT_PORT}")
        p.add_argument(
            "--nodes",
            type=positive,
            default=None,
            help="1: the single broker (start's default); N > 1: a local N-node cluster",
        )

    start = sub.add_parser("start", help="start the broker (format storage on first use)")
    common(start)
    start.add_argument(
        "--timeout",
        type=positive_seconds,
        default=None,
        help="seconds to wait (default 120; cluster 180)",
    )
    start.set_defaults(func=cmd_start)

    stop = sub.add_parser("stop", help="stop the broker (SIGTERM, then SIGKILL)")
    common(stop)
    stop.set_defaults(func=cmd_stop)

    status = sub.add_parser("status", help="is the broker running? (exit 1 if not)")
    common(status)
    status.set_defaults(func=cmd_status)

    logs = sub.add_parser("logs", help="print the end of the broker log")
    common(logs)
    logs.add_argument("-n", "--lines", type=positive, default=40)
    logs.add_argument(
        "--node", type=positive, default=None, help="a cluster's node id (default: all)"
    )
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.set_defaults(func=cmd_logs)


def _broker(args: argparse.Namespace) -> LocalBroker:
    home = args.home or _data_dir() / "kafka"
    # Without --port, stop/status/logs find the port the broker was last started with.
    port = args.port or _configured_port(home) or DEFAULT_PORT
    return LocalBroker(home, port=port)


def _configured_port(home: Path) -> int | None:
    try:
        lines = (home / "config" / "server.properties").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("advertised.listeners="):
            return int(line.rsplit(":", 1)[1])
    return None


def _data_dir() -> Path:
    return Settings.from_env().data_dir


def _cluster_home(args: argparse.Namespace) -> Path | None:
    """The cluster this command means, or None for the single broker (module docstring)."""
    if args.nodes is not None:
        if args.nodes == 1:
            return None
        if args.port is not None:
            raise BrokerError("a cluster's ports are chosen free and kept in its cluster.json")
        return args.home or _data_dir() / "kafka-cluster"
    if args.home is not None:
        return args.home if LocalCluster.saved_nodes(args.home) else None
    return None


def _cluster(home: Path, nodes: int | None = None) -> LocalCluster:
    return LocalCluster(home, nodes=nodes or LocalCluster.saved_nodes(home) or 3)


def _default_cluster_home(args: argparse.Namespace) -> Path | None:
    """With neither --nodes nor --home: the default cluster's home if it was ever started."""
    if args.nodes is not None or args.home is not None:
        return None
    home = _data_dir() / "kafka-cluster"
    return home if LocalCluster.saved_nodes(home) else None


def _usage_errors(command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """A BrokerError the command does not handle (a wrong --nodes, --node or --home)
    ends it with its message and exit code 2."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except BrokerError as exc:
            print(exc, file=sys.stderr)
            return 2

    return run


def _external() -> str | None:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None


@_usage_errors
def cmd_start(args: argparse.Namespace) -> int:
    if external := _external():
        say(event="kafka_external", bootstrap=external, note="KAFKA_BOOTSTRAP_SERVERS is set")
        return 0
    cluster_home = _cluster_home(args)
    if cluster_home is not None:
        return _start_cluster(cluster_home, args)
    broker = _broker(args)
    was_running = broker.is_running()
    if not was_running and args.port is None:
        broker.port = DEFAULT_PORT  # a new start uses the default, not the last port
    started = time.monotonic()
    try:
        broker.start(timeout_s=args.timeout or 120)
    except BrokerError as exc:
        say(event="kafka_start_failed", home=broker.home, log=broker.log_path)
        print(exc, file=sys.stderr)
        return 1
    say(
        event="kafka_already_running" if was_running else "kafka_started",
        bootstrap=broker.bootstrap,
        pid=broker.pid(),
        seconds=f"{time.monotonic() - started:.1f}",
        log=broker.log_path,
    )
    return 0


def _start_cluster(home: Path, args: argparse.Namespace) -> int:
    cluster = _cluster(home, args.nodes)
    was_running = all(node.is_running() for node in cluster.nodes)
    started = time.monotonic()
    try:
        cluster.start(timeout_s=args.timeout or 180)
    except BrokerError as exc:
        say(event="kafka_cluster_start_failed", home=cluster.home)
        print(exc, file=sys.stderr)
        return 1
    say(
        event="kafka_cluster_already_running" if was_running else "kafka_cluster_started",
        nodes=len(cluster.nodes),
        bootstrap=cluster.bootstrap,
        seconds=f"{time.monotonic() - started:.1f}",
        home=cluster.home,
    )
    # Topics must be created with the cluster's replication factor, and every process
    # must find the cluster: both come from these two variables.
    rf = min(3, len(cluster.nodes))
    print(f"export KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap} MAAS_REPLICATION_FACTOR={rf}")
    return 0


@_usage_errors
def cmd_stop(args: argparse.Namespace) -> int:
    if external := _external():
        say(event="kafka_external", bootstrap=external, note="not started here; not stopped")
        return 0
    cluster_home = _cluster_home(args)
    if cluster_home is not None:
        _stop_cluster(cluster_home, args.nodes)
        return 0
    if (home := _default_cluster_home(args)) is not None:
        _stop_cluster(home, None)
    broker = _broker(args)
    if not broker.is_running():
        say(event="kafka_not_running", home=broker.home)
        return 0
    broker.stop()
    say(event="kafka_stopped", home=broker.home)
    return 0


def _stop_cluster(home: Path, nodes: int | None) -> None:
    cluster = _cluster(home, nodes)
    if not any(node.is_running() for node in cluster.nodes):
        say(event="kafka_cluster_not_running", home=cluster.home)
        return
    cluster.stop()
    say(event="kafka_cluster_stopped", home=cluster.home)


@_usage_errors
def cmd_status(args: argparse.Namespace) -> int:
    if external := _external():
        say(kafka="external", bootstrap=external)
        return 0
    cluster_home = _cluster_home(args)
    if cluster_home is not None:
        return 0 if _cluster_status(cluster_home, args.nodes) else 1
    broker = _broker(args)
    pid = broker.pid()
    if pid is None:
        say(kafka="stopped", home=broker.home)
        running = False
    else:
        say(kafka="running", pid=pid, bootstrap=broker.bootstrap, log=broker.log_path)
        running = True
    if (home := _default_cluster_home(args)) is not None:
        running = _cluster_status(home, None) or running
    return 0 if running else 1


def _cluster_status(home: Path, nodes: int | None) -> bool:
    """One line for the cluster, one per node; True if any node runs."""
    cluster = _cluster(home, nodes)
    pids = {node.node_id: node.pid() for node in cluster.nodes}
    up = sum(pid is not None for pid in pids.values())
    state = "running" if up == len(pids) else "degraded" if up else "stopped"
    say(kafka_cluster=state, nodes=len(pids), up=up, bootstrap=cluster.bootstrap, home=home)
    for node in cluster.nodes:
        pid = pids[node.node_id]
        say(
            node=node.node_id,
            kafka="running" if pid else "stopped",
            pid=pid or "-",
            bootstrap=node.bootstrap,
            log=node.log_path,
        )
    return up > 0


@_usage_errors
def cmd_logs(args: argparse.Namespace) -> int:
    cluster_home = _cluster_home(args)
    if cluster_home is not None:
        cluster = _cluster(cluster_home, args.nodes)
        if args.node is None:
            if args.follow:
                print("--follow needs --node ID on a cluster", file=sys.stderr)
                return 2
            for node in cluster.nodes:
                print(f"--- node {node.node_id}: {node.log_path} ---")
                sys.stdout.write(node.tail(args.lines))
            return 0
        broker = cluster.node(args.node)
    elif args.node not in (None, 1):
        print(f"--node {args.node}: a single broker is node 1 (no cluster here)", file=sys.stderr)
        return 2
    else:
        broker = _broker(args)
    path = broker.log_path
    if not path.is_file():
        say(event="kafka_no_log", log=path)
        return 1
    sys.stdout.write(broker.tail(args.lines))
    sys.stdout.flush()
    if not args.follow:
        return 0
    try:
        with path.open(errors="replace") as f:
            f.seek(0, os.SEEK_END)
            while True:
                line = f.readline()
                if line:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)
    except KeyboardInterrupt:
        return 0

"""Admin queries the nemesis asks while brokers fail, each in a child process.

librdkafka's admin client aborted the whole runner once (``rd_kafka_enq_once_del_source_
return: Assertion `eonce->refcnt > 0' failed``) when a ``describe_consumer_groups`` timed
out across a broker restart: a lost run, history and all. A child process costs about a
second and can only fail itself; a failed or slow query answers "unknown" (None).

    python -m tests.jepsen.admin owned BOOTSTRAP GROUP TOPIC   # {instance: [partitions]}
    python -m tests.jepsen.admin leaders BOOTSTRAP TOPIC       # {partition: leader node}
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

QUERY_TIMEOUT_S = 15.0


def owned_partitions(bootstrap: str, group: str, topic: str) -> dict[str, set[int]] | None:
    """Partitions of ``topic`` each static member of ``group`` owns, by the part of its
    ``group.instance.id`` after ``<group>.``; None if the coordinator did not answer."""
    found = _ask("owned", bootstrap, group, topic)
    if found is None:
        return None
    return {instance: set(partitions) for instance, partitions in found.items()}


def partition_leaders(bootstrap: str, topic: str) -> dict[int, int] | None:
    """Partition -> leader node id (-1: none right now); None if no answer."""
    found = _ask("leaders", bootstrap, topic)
    if found is None:
        return None
    return {int(p): int(leader) for p, leader in found.items()}


def _ask(*args: str) -> Any:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.jepsen.admin", *args],
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)


def _owned(bootstrap: str, group: str, topic: str) -> dict[str, list[int]]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    prefix = f"{group}."
    owned: dict[str, list[int]] = {}
    for member in description.members:
        instance = member.group_instance_id or ""
        if instance.startswith(prefix):
            assignment = member.assignment.topic_partitions if member.assignment else []
            owned[instance[len(prefix) :]] = sorted(
                tp.partition for tp in assignment if tp.topic == topic
            )
    return owned


def _leaders(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    return {p: info.leader for p, info in metadata.partitions.items()}


def main(argv: list[str]) -> int:
    match argv:
        case ["owned", bootstrap, group, topic]:
            print(json.dumps(_owned(bootstrap, group, topic)))
        case ["leaders", bootstrap, topic]:
            print(json.dumps(_leaders(bootstrap, topic)))
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

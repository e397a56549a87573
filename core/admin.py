"""Topic creation for one region: names, partition counts and retention in one place."""

from __future__ import annotations

import contextlib
import logging

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from core.settings import Settings, SettingsError
from core.topics import Topics

log = logging.getLogger(__name__)

FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}
COMPACTED = {"cleanup.policy": "compact"}


def topic_specs(settings: Settings) -> list[NewTopic]:
    """Inputs, ledger and changelog share the partition count: they are co-partitioned."""
    t = Topics(settings.region)
    rf = settings.replication_factor
    n = settings.partitions
    durable = {"min.insync.replicas": str(min(2, rf))}

    def spec(name: str, partitions: int, config: dict[str, str]) -> NewTopic:
        return NewTopic(
            name, num_partitions=partitions, replication_factor=rf, config={**durable, **config}
        )

    # Topics that carry personal request details (coordinates, query, caption) keep them
    # only this long: see docs/data-retention.md.
    personal = {"retention.ms": str(settings.personal_data_retention_ms)}
    # The changelog keeps only the latest version of a request record, but an older
    # version (with a caption that was erased since) lives until the cleaner compacts
    # it: this lag bounds that, and also rolls the active segment, which is never
    # compacted, at least that often.
    erasable = {"max.compaction.lag.ms": str(settings.personal_data_retention_ms)}
    return [
        spec(t.requests, n, personal),
        spec(t.purchases, n, FOREVER),
        spec(t.outcomes, n, personal),
        spec(t.ledger, n, FOREVER),
        spec(t.ledger_checkpoints, 1, FOREVER),
        spec(t.dead_letters, n, personal),
        spec(t.ledger_changelog, n, {**COMPACTED, **erasable}),
        spec(t.clients, n, COMPACTED),
        spec(t.approved("standard"), n, personal),
        spec(t.approved("ai"), n, personal),
        spec(t.replies, settings.reply_partitions, {"retention.ms": str(3_600_000)}),
    ]


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create the region's topics; existing ones are left as they are, and must have the
    partition counts the settings give (``check_partition_counts``)."""
    admin = AdminClient(settings.kafka_common())
    futures = admin.create_topics(
        topic_specs(settings), operation_timeout=timeout_s, request_timeout=timeout_s
    )
    for name, future in futures.items():
        try:
            future.result()
            log.info("topic created name=%s", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    check_partition_counts(admin, settings, timeout_s)


def check_partition_counts(
    client: AdminClient | Consumer, settings: Settings, timeout_s: float = 30.0
) -> None:
    """Refuse (``SettingsError``) a region whose existing topics have other partition
    counts than the settings say. Producers leave the partition to librdkafka, which
    counts the topic's partitions, while the ledger processor writes a client's entries,
    state and replies where the settings' counts put them: a mismatch would scatter a
    client's records over partitions that other instances own."""
    found = client.list_topics(timeout=timeout_s).topics
    wrong = [
        f"{spec.topic} has {len(found[spec.topic].partitions)}, the settings say "
        f"{spec.num_partitions}"
        for spec in topic_specs(settings)
        if spec.topic in found and len(found[spec.topic].partitions) != spec.num_partitions
    ]
    if wrong:
        raise SettingsError(
            f"partition counts differ: {'; '.join(wrong)}. A region's counts never change "
            "(docs/capacity.md): set MAAS_PARTITIONS and MAAS_REPLY_PARTITIONS to the "
            "topics' counts, or name a new MAAS_REGION"
        )


def delete_region_topics(bootstrap: str, region: str, timeout_s: float = 30.0) -> None:
    """Delete every topic of ``region`` (``<region>.*``, the usage worker's too): for a
    region whose data is not kept, a benchmark's or a test's. Left behind, each region's
    ~70 partitions stay on the broker: at 1,500 a local broker took 5 s to stop and 5 s
    to start, against 0.5 and 1.5 s."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    prefix = region + "."
    names = [t for t in admin.list_topics(timeout=timeout_s).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=timeout_s).values():
            with contextlib.suppress(KafkaException):  # gone already: the same end
                future.result()

"""A region's topics keep the partition counts they were created with, and a process whose
settings say otherwise refuses to start.

Producers leave a record's partition to librdkafka, which counts the topic's partitions;
the ledger processor writes a client's entries, state and replies where the settings'
counts put them. With ``MAAS_PARTITIONS`` changed after the topics were created, the two
would disagree, and a client's records would land on partitions other instances own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.admin import delete_region_topics, ensure_topics
from core.settings import Settings, SettingsError
from core.topic_reader import read_topic
from core.topics import Topics

pytestmark = pytest.mark.kafka


def test_settings_with_other_partition_counts_than_the_topics_are_refused(
    kafka, unique: str, tmp_path: Path
) -> None:
    region = f"r{unique[:20]}".lower()
    settings = Settings(region=region, bootstrap_servers=kafka.bootstrap)
    ensure_topics(settings)
    try:
        ensure_topics(settings)  # the counts they have: accepted again

        other = settings.model_copy(update={"partitions": 4, "reply_partitions": 8})
        with pytest.raises(SettingsError) as refused:
            ensure_topics(other)
        assert f"{region}.requests has 6, the settings say 4" in str(refused.value)
        assert f"{region}.replies has 16, the settings say 8" in str(refused.value)

        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "MAAS_REGION": region,
            "MAAS_PARTITIONS": "4",
            "MAAS_DATA_DIR": str(tmp_path),
        }
        processor = subprocess.run(
            [sys.executable, "-m", "maas.cli", "processor"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert processor.returncode == 2, processor.stderr[-3000:]
        assert "maas processor: partition counts differ" in processor.stderr
        assert f"{region}.ledger has 6, the settings say 4" in processor.stderr
        assert list(read_topic(settings, Topics(region).ledger)) == []  # nothing decided
    finally:
        delete_region_topics(kafka.bootstrap, region)

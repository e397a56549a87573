"""Asking where a partition's log begins and ends, across a leader's kill.

A librdkafka client whose watermark query failed while the partition's leader was killed
can keep failing when asked again: it waits for the old leader. On a 3-node cluster, with
the leader killed and started again 4 s later, the same client answered 4-17 s after the
kill (time-outs, then NOT_LEADER_FOR_PARTITION; 2 of 4 trials took 16 s), a fresh client
per ask 5.5-8 s, as soon as the partition had a leader again (docs/reliability.md, "Known
limits"). So a failed ask drops its client, and the next ask makes a fresh one.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

log = logging.getLogger(__name__)


class WatermarkAsker:
    """Asks partitions' (low, high) offsets with one client, replaced after a failure.

    High is the last stable offset under ``isolation.level: read_committed`` in
    ``config``, the log's end otherwise.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._client: Consumer | None = None

    def ask(self, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
        """Raises the query's ``KafkaException``; the next ask is then a fresh client's."""
        if self._client is None:
            self._client = Consumer(self._config)
        try:
            low, high = self._client.get_watermark_offsets(tp, timeout=timeout_s)
        except KafkaException as exc:
            log.info(
                "watermarks not answered topic=%s partition=%d error=%s; the next ask uses a "
                "fresh client",
                tp.topic,
                tp.partition,
                exc.args[0].name(),
            )
            self.close()
            raise
        return low, high

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

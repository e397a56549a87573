"""Whether this API process reaches any Kafka broker. While it reaches none, a call is
refused at once (503 ``kafka_unavailable``, Retry-After), before anything is appended,
instead of each one waiting out ``message.timeout.ms`` (the request deadline, 7.5 s by
default) to learn the same.

librdkafka's word that the producer lost every broker connection (``word``, its
error_cb, ``core.broker_reach``) refuses nothing by itself: the producer's thread then
asks a broker for metadata (``KafkaOutage.look``); only an unanswered question declares
the outage, and it is asked again after every poll until one is answered. (A metadata
request, not a TCP connection: a broker that listens while it starts up still answers
no request.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaException

from core.broker_reach import AllBrokersDown

log = logging.getLogger(__name__)


class KafkaOutage:
    def __init__(self) -> None:
        self.word = AllBrokersDown(log)  # the producer's error_cb: ``word.note``
        self.since: float | None = None  # time.monotonic() of the first unanswered look

    @property
    def down(self) -> bool:
        return self.since is not None

    def look(self, ask_broker: Callable[[], object]) -> None:
        """Once librdkafka said it: ``ask_broker()`` (bounded by its own timeout) tells
        whether a broker answers. Runs on the producer's thread, the one that serves the
        error_cb."""
        if not self.word.said:
            return
        try:
            ask_broker()
        except KafkaException as exc:
            if self.since is None:
                self.since = time.monotonic()
                log.warning(
                    "no Kafka broker answers: calls are refused at once until one does error=%s",
                    exc.args[0].str(),
                )
            return
        if self.since is not None:
            log.info("a Kafka broker answers again after %.1f s", time.monotonic() - self.since)
        self.since = None
        self.word.said = False

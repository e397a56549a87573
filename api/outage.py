"""Whether this API process reaches any Kafka broker. While it reaches none, a call is
refused at once (503 ``kafka_unavailable``, Retry-After), before anything is appended,
instead of each one waiting out ``message.timeout.ms`` (the request deadline, 7.5 s by
default) to learn the same.

librdkafka says ``_ALL_BROKERS_DOWN`` (the producer's error_cb, served in its ``poll``)
when its last broker connection goes down, also when a connection closed idle would
come back at the next request; so the word alone refuses nothing. The producer's thread
then asks a broker for metadata (``KafkaOutage.look``); only an unanswered question
declares the outage, and it is asked again after every poll until one is answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger(__name__)


class KafkaOutage:
    """Kept apart from the bridge: the producer holding ``note`` as its callback holds no
    cycle back to the bridge (its threads go when it is dropped)."""

    def __init__(self) -> None:
        self.suspected = False  # set by librdkafka's thread, cleared by a look
        self.since: float | None = None  # time.monotonic() of the first unanswered look

    @property
    def down(self) -> bool:
        return self.since is not None

    def note(self, error: KafkaError) -> None:
        """The producer's error_cb. librdkafka logs an error only where no callback takes
        it; its lost connections it logs anyway, each one (``_TRANSPORT``)."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.suspected = True
        elif error.code() != KafkaError._TRANSPORT:
            log.warning("kafka producer error code=%s error=%s", error.name(), error.str())

    def look(self, ask_broker: Callable[[], object]) -> None:
        """While suspected: ``ask_broker()`` (bounded by its own timeout) tells whether a
        broker answers. Runs on the producer's thread, the one that serves ``note``."""
        if not self.suspected:
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
        self.suspected = False

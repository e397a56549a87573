"""Whether this API process reaches any Kafka broker. While it reaches none, a call is
refused at once (503 ``kafka_unavailable``, Retry-After), before anything is appended,
instead of each one waiting out ``message.timeout.ms`` (the request deadline, 7.5 s by
default) to learn the same.

librdkafka's word that the producer lost every broker connection (``lost``, its
error_cb, ``core.broker_reach``) refuses nothing by itself: the producer's thread then
looks whether a broker answers (``KafkaOutage.look``: none listens, which a dead local
broker tells at once, or a metadata request goes unanswered, since a broker that
listens while it starts up answers no request yet); only then is the outage declared,
and it is looked at again after every poll until a broker answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from core.broker_reach import LostBrokers

log = logging.getLogger(__name__)


class KafkaOutage:
    def __init__(self) -> None:
        self.lost = LostBrokers(log)  # the producer's error_cb: ``lost.note``
        self.since: float | None = None  # time.monotonic() of the first unanswered look

    @property
    def down(self) -> bool:
        return self.since is not None

    def look(self, why_no_broker: Callable[[], str | None]) -> None:
        """Once librdkafka said it: ``why_no_broker()`` (bounded by its own timeouts) is
        None if a broker answers, else why not. Runs on the producer's thread, the one
        that serves the error_cb."""
        if not self.lost.all_down:
            return
        why = why_no_broker()
        if why is not None:
            if self.since is None:
                self.since = time.monotonic()
                log.warning(
                    "no Kafka broker answers: calls are refused at once until one does error=%s",
                    why,
                )
            return
        if self.since is not None:
            log.info("a Kafka broker answers again after %.1f s", time.monotonic() - self.since)
        self.since = None
        self.lost.all_down = False

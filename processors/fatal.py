"""Kafka errors after which a process must end, and the exit code that says so.

A fatal consumer error (e.g. a static member fenced after a coordinator move or a session
that timed out while the broker was away) leaves the client unusable: it consumes
nothing more. A fresh process rejoins cleanly, and the supervisor starts one
(``maas.supervisor``), so the process ends instead of idling on.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

FATAL_EXIT_CODE = 71


def raise_if_fatal(error: KafkaError) -> None:
    if error.fatal() or error.code() == KafkaError._FATAL:
        raise KafkaException(error)

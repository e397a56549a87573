"""Kafka errors after which a process must end, and the exit code that says so.

A fatal consumer error (e.g. a static member fenced after a coordinator move or a session
that timed out while the broker was away) leaves the client unusable: it consumes
nothing more. The ledger processor then ends, and the supervisor starts a fresh process
(``maas.supervisor``) instead of it idling on; a generator pool, which holds no state a
fresh consumer could not rejoin with, starts one in the same process
(``processors.generators.worker.run``).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

FATAL_EXIT_CODE = 71


def is_fatal(error: KafkaError) -> bool:
    return error.fatal() or error.code() == KafkaError._FATAL


def raise_if_fatal(error: KafkaError) -> None:
    if is_fatal(error):
        raise KafkaException(error)

"""Which failed offset and metadata queries the ledger processor asks again
(``processors.ledger.restore.is_transient``) instead of exiting for a restart.

The Jepsen faults run once lost a processor to a ``_DESTROY_BROKER`` answer while the
broker it had asked was being killed: a restart for a condition that passes by itself,
and the process it restarted was carrying a fault point that then never fired.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from processors.ledger.restore import FRESH_CLIENT_CODES, is_transient


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._DESTROY_BROKER,
        KafkaError._TRANSPORT,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    ],
)
def test_a_broker_going_away_or_a_leader_not_elected_yet_is_asked_again(code: int) -> None:
    assert is_transient(KafkaError(code))


def test_what_librdkafka_flags_retriable_is_asked_again() -> None:
    assert is_transient(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=True))


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._FENCED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError._INVALID_ARG,
    ],
)
def test_fencing_and_permanent_errors_are_not(code: int) -> None:
    assert not is_transient(KafkaError(code))


@pytest.mark.parametrize("code", [KafkaError._UNKNOWN_PARTITION, KafkaError._TIMED_OUT])
def test_a_partition_missing_from_the_clients_metadata_is_not_asked_again_by_that_client(
    code: int,
) -> None:
    """Tried as transient: in a faults run one instance asked the same client again for
    40 s, holding all its partitions, where a restart (a fresh client) serves again in
    about 2 s. A restore's watermark query asks a fresh client instead
    (``FRESH_CLIENT_CODES``); the committed offsets' query ends the process."""
    assert not is_transient(KafkaError(code))
    assert code in FRESH_CLIENT_CODES

"""``api.outage.KafkaOutage``: librdkafka's word that every broker connection is down
refuses nothing by itself; an unanswered question to a broker declares the outage, and
the first answered one ends it (the word: ``core.broker_reach.LostBrokers``). (The
API refusing calls meanwhile, against a stopped broker:
``tests/scenarios/test_api_faults.py``.)"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from api.outage import KafkaOutage

ALL_DOWN = KafkaError(KafkaError._ALL_BROKERS_DOWN)


def unanswered() -> str:
    return "no bootstrap broker accepts a connection"


def answered() -> None:
    return None


def test_the_word_alone_is_no_outage_and_nobody_is_asked_without_it() -> None:
    outage = KafkaOutage()
    outage.look(unanswered)  # not said: not asked
    assert not outage.down
    outage.lost.note(KafkaError(KafkaError._TRANSPORT))  # one connection lost: nothing
    assert not outage.lost.all_down
    outage.lost.note(ALL_DOWN)
    assert outage.lost.all_down and not outage.down
    outage.look(answered)  # a connection closed idle, back at once
    assert not outage.lost.all_down and not outage.down


def test_an_unanswered_question_declares_it_until_one_is_answered() -> None:
    outage = KafkaOutage()
    outage.lost.note(ALL_DOWN)
    outage.look(unanswered)
    assert outage.down
    since = outage.since
    outage.look(unanswered)  # asked again after every poll; it began at the first
    assert outage.down and outage.since == since
    outage.look(answered)
    assert not outage.down and not outage.lost.all_down


@pytest.mark.parametrize("code", [KafkaError._FATAL, KafkaError._MSG_TIMED_OUT])
def test_other_errors_are_logged_and_say_nothing(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    outage = KafkaOutage()
    outage.lost.note(KafkaError(code, "what librdkafka said"))
    assert not outage.lost.all_down
    assert "what librdkafka said" in caplog.text

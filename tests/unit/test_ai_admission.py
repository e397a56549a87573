"""An API process keeps at most ``limit`` AI memes waiting, for the clients it knows as AI
from their answers; it refuses the next at once, and never holds back anyone else."""

from __future__ import annotations

import pytest

from api.ai_admission import AiAdmission
from api.errors import Overloaded
from api.metrics import Metrics


def refused_total(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("maas_overloaded_total", {"limit": "ai"})


def test_past_the_limit_an_ai_client_is_refused_and_a_standard_one_is_not() -> None:
    metrics = Metrics()
    gate = AiAdmission(limit=2, metrics=metrics)
    gate.learn("ai-client", "ai")
    assert refused_total(metrics) == 0  # exported before the first refusal

    with gate.admit("ai-client"), gate.admit("ai-client"):
        assert gate.in_flight == 2
        assert metrics.registry.get_sample_value("maas_ai_memes_waiting") == 2
        with pytest.raises(Overloaded), gate.admit("ai-client"):
            pass
        with gate.admit("standard-client"), gate.admit("unknown-client"):
            assert gate.in_flight == 2  # only AI memes count
    assert gate.in_flight == 0
    assert refused_total(metrics) == 1

    with gate.admit("ai-client"):  # the slots are free again
        assert gate.in_flight == 1


def test_a_slot_is_freed_when_the_call_fails() -> None:
    gate = AiAdmission(limit=1, metrics=Metrics())
    gate.learn("c", "ai")
    with pytest.raises(RuntimeError), gate.admit("c"):
        raise RuntimeError("the ledger call failed")
    assert gate.in_flight == 0


def test_a_standard_answer_forgets_the_client() -> None:
    gate = AiAdmission(limit=1, metrics=Metrics())
    gate.learn("c", "ai")
    assert gate.is_ai("c")
    gate.learn("c", "standard")
    assert not gate.is_ai("c")


def test_the_least_recently_seen_ai_client_is_forgotten_first() -> None:
    gate = AiAdmission(limit=1, metrics=Metrics(), capacity=2)
    gate.learn("a", "ai")
    gate.learn("b", "ai")
    gate.learn("a", "ai")  # seen again: now the most recent
    gate.learn("c", "ai")
    assert gate.is_ai("a") and gate.is_ai("c")
    assert not gate.is_ai("b")

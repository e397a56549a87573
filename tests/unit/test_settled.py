"""An API instance answers a retry of a settled request itself, and only with a final
outcome, for a bounded number of requests and a bounded time."""

from __future__ import annotations

from api.settled import SettledRequests, is_final
from schemas.events import RefundReason, RejectReason, Reply


def reply(outcome: str, reason: int | None = None) -> Reply:
    return Reply.model_validate({"correlation_id": "c1", "outcome": outcome, "reason": reason})


def test_only_final_outcomes_are_kept() -> None:
    assert is_final(reply("delivered")) and is_final(reply("made"))
    assert is_final(reply("refunded", RefundReason.DEADLINE_EXPIRED))
    assert is_final(reply("rejected", RejectReason.INSUFFICIENT_TOKENS))
    assert not is_final(reply("rejected", RejectReason.IDEMPOTENCY_CONFLICT))
    assert not is_final(reply("rejected", RejectReason.UNKNOWN_CLIENT))
    assert not is_final(reply("in_progress"))

    settled = SettledRequests()
    settled.put("r1", "c", "f", reply("in_progress"), now_ms=0)
    assert settled.get("r1", now_ms=0) is None


def test_an_answer_is_kept_until_its_time_is_up() -> None:
    settled = SettledRequests(ttl_ms=1_000)
    settled.put("r1", "c", "f", reply("delivered"), now_ms=0)

    known = settled.get("r1", now_ms=1_000)
    assert known is not None and known.fingerprint == "f"
    assert settled.get("r1", now_ms=1_001) is None
    assert len(settled) == 0


def test_the_oldest_answer_goes_first() -> None:
    settled = SettledRequests(capacity=2)
    settled.put("r1", "c", "f", reply("delivered"), now_ms=0)
    settled.put("r2", "c", "f", reply("delivered"), now_ms=1)
    settled.put("r3", "c", "f", reply("delivered"), now_ms=2)

    assert settled.get("r1", now_ms=2) is None
    assert settled.get("r2", now_ms=2) is not None
    assert settled.get("r3", now_ms=2) is not None


def test_an_answer_nobody_asks_for_again_is_dropped_when_its_time_is_up() -> None:
    """The caption is personal data: a quiet instance must not keep old answers until
    the count pushes them out."""
    settled = SettledRequests(ttl_ms=1_000)
    settled.put("r1", "c", "f", reply("delivered"), now_ms=0)
    settled.put("r2", "c", "f", reply("delivered"), now_ms=500)
    settled.put("r3", "c", "f", reply("delivered"), now_ms=1_200)

    assert len(settled) == 2  # r1 is gone without being asked for
    assert settled.get("r2", now_ms=1_200) is not None


def test_an_erasure_forgets_the_client_only() -> None:
    settled = SettledRequests()
    settled.put("r1", "erased", "f", reply("delivered"), now_ms=0)
    settled.put("r2", "kept", "f", reply("delivered"), now_ms=0)

    settled.forget_client("erased")

    assert settled.get("r1", now_ms=0) is None
    assert settled.get("r2", now_ms=0) is not None

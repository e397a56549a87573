"""What-if pricing (``ledger.whatif``) over ledgers the real fold wrote.

That re-deciding at the list price reproduces any ledger is a property test
(``tests/property/test_ledger_model.py``); these are the worked examples."""

from __future__ import annotations

import pytest

from ledger.fold import Expire, Pricing
from ledger.memory import MemoryLedger
from ledger.whatif import WhatIf, csv_row, parse_pricing
from schemas.events import MemeFailed, SubscriptionRequested
from tests.unit.test_replay_asof import REGION, Inputs


class Day(Inputs):
    def subscribe(self, client: str, at_ms: int) -> None:
        self.ledger.handle(
            SubscriptionRequested(
                event_id=self._id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms,
                active=True,
                reply_to=0,
            )
        )

    def failed_meme(self, client: str, at_ms: int) -> None:
        """A request whose generator fails: charged, then refunded."""
        request_id = self.request_only(client, at_ms)
        self.ledger.handle(
            MemeFailed(
                event_id=self._id(),
                client_id=client,
                region=REGION,
                occurred_at_ms=at_ms + 1,
                request_id=request_id,
                kind="ai",
                error="boom",
            )
        )


def whatif(day: Inputs, text: str) -> WhatIf:
    return WhatIf(parse_pricing(text)).apply_all(day.ledger.entries)


def test_same_prices_change_nothing() -> None:
    day = Day()
    day.register("alice", 1)
    day.buy("alice", 3, 2)
    for t in range(10, 60, 10):  # 3 charged, 2 rejected
        day.meme("alice", t)
    result = whatif(day, "standard=1,ai=1").clients["alice"]
    assert result.old_balance == result.new_balance == 0
    assert result.old_charged == result.new_charged == 3
    assert result.rejected == 0


def test_a_dearer_ai_meme_turns_late_charges_into_rejections() -> None:
    day = Day()
    day.register("alice", 1)
    day.buy("alice", 5, 2)
    day.subscribe("alice", 3)
    for t in range(10, 50, 10):  # 4 AI memes at 1 token: balance 1
        day.meme("alice", t)
    day.register("bob", 4)
    day.buy("bob", 5, 5)
    day.meme("bob", 60)  # standard: price unchanged

    result = whatif(day, "ai=2")
    alice, bob = result.clients["alice"], result.clients["bob"]
    assert (alice.old_balance, alice.new_balance) == (1, 1)
    assert (alice.old_charged, alice.new_charged) == (4, 4)  # 2 + 2, then 1 token left
    assert alice.requests_charged == 4
    assert alice.rejected == 2
    assert (bob.old_balance, bob.new_balance, bob.rejected) == (4, 4, 0)
    total = result.totals()
    assert (total.old_balance, total.new_balance, total.rejected) == (5, 5, 2)
    assert csv_row(alice) == "alice,1,1,0,4,4,0,0,4,2,0"


def test_a_refund_gives_back_the_new_price_and_nothing_for_a_rejection() -> None:
    day = Day()
    day.register("alice", 1)
    day.buy("alice", 4, 2)
    day.subscribe("alice", 3)
    day.meme("alice", 10)  # delivered
    day.failed_meme("alice", 20)  # charged, then refunded
    result = whatif(day, "ai=3").clients["alice"]
    # old: 4 - 1 - 1 + 1 = 3; new: 4 - 3, then 1 < 3: rejected, its refund gives nothing
    assert (result.old_balance, result.new_balance) == (3, 1)
    assert (result.old_refunded, result.new_refunded) == (1, 0)
    assert result.rejected == 1

    cheaper = whatif(day, "ai=2").clients["alice"]
    # 4 - 2 = 2, - 2 = 0, refunded 2 -> 2
    assert (cheaper.new_balance, cheaper.new_charged, cheaper.new_refunded) == (2, 4, 2)
    assert cheaper.difference == -1


def test_a_cheaper_price_charges_what_was_rejected_and_says_so() -> None:
    """Scenario: the ledger was written at 2 tokens a standard meme; alice has 3 tokens
    and asks 3 times (1 charged, 2 rejected). What if a meme had cost 1?
    We expect: 3 charged, balance 0; the 2 recorded rejections counted as newly charged
    (their outcome is unknown: the charge stands)."""
    day = Day()
    day.ledger = MemoryLedger(Pricing(standard=2))
    day.register("alice", 1)
    day.buy("alice", 3, 2)
    for t in (10, 20, 30):
        day.meme("alice", t)
    result = whatif(day, "standard=1").clients["alice"]
    assert (result.old_balance, result.new_balance, result.new_charged) == (1, 0, 3)
    assert (result.requests_charged, result.rejected, result.newly_charged) == (1, 0, 2)


def test_an_expired_request_is_refunded_what_it_cost_at_the_new_price() -> None:
    day = Day()
    day.register("alice", 1)
    day.buy("alice", 5, 2)
    day.subscribe("alice", 3)
    request_id = day.request_only("alice", 10)
    day.ledger.handle(Expire("alice", request_id, REGION, now_ms=10 + 5_000))
    result = whatif(day, "ai=4").clients["alice"]
    assert (result.new_charged, result.new_refunded, result.new_balance) == (4, 4, 5)


@pytest.mark.parametrize("text", ["", "ai", "gold=2", "ai=-1", "ai=0", "ai=x"])
def test_bad_pricing_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_pricing(text)


def test_pricing_parses() -> None:
    assert parse_pricing("ai=2, standard=3") == Pricing(standard=3, ai=2)
    assert parse_pricing("ai=2") == Pricing(standard=1, ai=2)

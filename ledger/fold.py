"""The ledger's decisions, as a pure fold: ``decide(state, input) -> Decision``.

No I/O, no clock, no randomness: time is the input's ``occurred_at_ms`` (or the
``now_ms`` of an ``Expire`` or a ``Forget``), and every id is derived from the input's id
(``derived_id``). Request ids and purchase ids are scoped to their client. The live
processor, the replay and the tests run this same code.

``evolve(account, entry)`` applies one ledger entry to an account. ``decide`` builds
every entry through it, so a replay of the ledger topic (folding entries with
``evolve``) reproduces the live balances by construction; ``evolve`` also checks each
entry's ``seq``, ``balance_after`` and ``prev_hash`` (the per-client hash chain) and
raises ``LedgerCorrupt`` on any mismatch.

Checks for a meme request, in order (the first that applies decides):

1. unknown client -> rejected (reason 1), nothing stored;
2. request id remembered with other parameters -> rejected (reason 2), nothing stored;
3. request id remembered -> the first outcome again, or wait for it; nothing charged;
4. the kind is ``ai`` if the subscription is active at the request's time, else
   ``standard``; balance below that kind's price -> ``MemeRejected`` (reason 3);
5. otherwise ``TokensCharged`` of the price; the work goes to the kind's pool.

A charged request ends exactly once: ``MemeDelivered`` (meme made by the deadline) or
``TokensRefunded`` of what was charged (generator failed by the deadline; or deadline
expired: a meme made or a failure after the deadline, or no outcome by the deadline plus
the grace). "By the deadline" is judged by the outcome's event time, never by when it is
folded. Outcomes that arrive
after the end are ignored: "when in doubt, the client gets a free meme".

A request id is remembered until ``remember_ms`` after its deadline once the request
has ended (``RequestRecord.forgotten_at``, judged by the asking input's time); after
that a request under the same id is a new one, and ``GET /v1/requests/{id}`` does not
know it. ``Forget``, the processor's timer, drops those records for good.

A delivered meme's caption is kept in the request record, never in the ledger entry;
``ErasureRequested`` erases it there (``docs/data-retention.md``).

The price is a parameter (``Pricing``): the live processor charges the list price, and
the what-if replay (``ledger.whatif``) re-decides the same history under another one.

This module is the entry point; the rules live by job: ``ledger.request_rules`` (the
checks above and a request's outcome), ``ledger.account_rules`` (registration,
purchases, the subscription, the API key, erasure), and ``ledger.decision`` (``Decision``,
``evolve`` and how a rule appends an entry).
"""

from __future__ import annotations

from ledger.account_rules import (
    api_key_rotation_requested,
    client_registered,
    erasure_requested,
    subscription_requested,
    tokens_purchased,
)
from ledger.decision import (
    LIST_PRICE,
    NOTHING,
    REMEMBER_MS,
    Decision,
    Expire,
    Forget,
    LedgerCorrupt,
    Pricing,
    StateView,
    answer,
    evolve,
)
from ledger.request_rules import (
    deadline_refund,
    forget_ended,
    meme_failed,
    meme_generated,
    meme_requested,
    remembered_request,
)
from schemas.events import (
    AccountQueried,
    ApiKeyRotationRequested,
    ClientRegistered,
    ErasureRequested,
    InputEvent,
    MemeFailed,
    MemeGenerated,
    MemeRequested,
    RequestQueried,
    SubscriptionRequested,
    TokensPurchased,
)

# The entry points and the types their callers use, from one place.
__all__ = [
    "LIST_PRICE",
    "NOTHING",
    "REMEMBER_MS",
    "Decision",
    "Expire",
    "Forget",
    "LedgerCorrupt",
    "Pricing",
    "StateView",
    "decide",
    "evolve",
]


def decide(
    state: StateView,
    event: InputEvent | Expire | Forget,
    pricing: Pricing = LIST_PRICE,
    remember_ms: int = REMEMBER_MS,
) -> Decision:
    match event:
        case MemeRequested():
            return meme_requested(state, event, pricing, remember_ms)
        case MemeGenerated():
            return meme_generated(state, event)
        case MemeFailed():
            return meme_failed(state, event)
        case Expire():
            return deadline_refund(state, event, event.now_ms)
        case Forget():
            return forget_ended(state, event, remember_ms)
        case TokensPurchased():
            return tokens_purchased(state, event)
        case ClientRegistered():
            return client_registered(state, event)
        case SubscriptionRequested():
            return subscription_requested(state, event)
        case ErasureRequested():
            return erasure_requested(state, event)
        case ApiKeyRotationRequested():
            return api_key_rotation_requested(state, event)
        case AccountQueried():
            account = state.account(event.client_id)
            if account is None:
                return answer(event.reply_to, event.event_id, "not_found")
            return answer(
                event.reply_to,
                event.event_id,
                "account",
                balance=account.balance,
                account=account.view(event.occurred_at_ms),
            )
        case RequestQueried():
            record = remembered_request(state, event, remember_ms)
            if record is None:
                return answer(event.reply_to, event.event_id, "not_found")
            return answer(event.reply_to, event.event_id, "request", request=record.view())
    raise TypeError(f"no rule for {type(event).__name__}")

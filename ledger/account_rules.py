"""The rules of an account: registration, purchases, the subscription, the API key,
erasure."""

from __future__ import annotations

from itertools import islice

from msgspec.structs import replace

from core.ids import derived_id
from ledger.decision import Decision, StateView, answer, append, evolve
from ledger.state import Account, PurchaseRecord
from schemas.events import (
    AccountOpened,
    ApiKeyRotated,
    ApiKeyRotationRequested,
    ClientRegistered,
    ErasureRequested,
    ErasureView,
    PersonalDataErased,
    PurchaseRejectReason,
    ReplacedKey,
    SubscriptionChanged,
    SubscriptionRequested,
    TokensCredited,
    TokensPurchased,
)


def tokens_purchased(state: StateView, event: TokensPurchased) -> Decision:
    account = state.account(event.client_id)
    if account is None:
        return answer(
            event.reply_to,
            event.event_id,
            "purchase_rejected",
            reason=PurchaseRejectReason.UNKNOWN_CLIENT,
        )
    seen = state.purchase(event.client_id, event.purchase_id)
    if seen is not None:
        if seen.tokens != event.tokens:
            return answer(
                event.reply_to,
                event.event_id,
                "purchase_rejected",
                balance=account.balance,
                reason=PurchaseRejectReason.PURCHASE_CONFLICT,
            )
        return answer(
            event.reply_to, event.event_id, "credited", balance=account.balance, entry=seen.credited
        )
    credited, account = append(
        account,
        TokensCredited,
        event,
        event.tokens,
        purchase_id=event.purchase_id,
        tokens=event.tokens,
    )
    purchase = PurchaseRecord(
        purchase_id=event.purchase_id,
        client_id=event.client_id,
        tokens=event.tokens,
        credited=credited,
    )
    return answer(
        event.reply_to,
        event.event_id,
        "credited",
        changes=Decision(entries=(credited,), account=account, purchase=purchase),
        balance=account.balance,
        entry=credited,
    )


def client_registered(state: StateView, event: ClientRegistered) -> Decision:
    account = state.account(event.client_id)
    if account is not None:
        return answer(
            event.reply_to,
            event.event_id,
            "registered",
            balance=account.balance,
            account=account.view(event.occurred_at_ms),
        )
    opened = AccountOpened(
        event_id=derived_id(event.event_id, 1),
        client_id=event.client_id,
        region=event.region,
        occurred_at_ms=event.occurred_at_ms,
        causation_id=event.event_id,
        seq=1,
        balance_after=0,
        api_key_sha256=event.api_key_sha256,
    )
    account = evolve(None, opened)
    return answer(
        event.reply_to,
        event.event_id,
        "registered",
        changes=Decision(entries=(opened,), account=account),
        balance=0,
        entry=opened,
        account=account.view(event.occurred_at_ms),
    )


def subscription_requested(state: StateView, event: SubscriptionRequested) -> Decision:
    account = state.account(event.client_id)
    if account is None:
        return answer(event.reply_to, event.event_id, "not_found")
    changed, account = append(
        account,
        SubscriptionChanged,
        event,
        0,
        active=event.active,
        until_ms=event.until_ms if event.active else None,
    )
    return answer(
        event.reply_to,
        event.event_id,
        "subscription",
        changes=Decision(entries=(changed,), account=account),
        balance=account.balance,
        entry=changed,
        account=account.view(event.occurred_at_ms),
    )


MAX_REPLACED_KEYS = 4  # keys in a grace at once; a fifth rotation within one ends the oldest


def api_key_rotation_requested(state: StateView, event: ApiKeyRotationRequested) -> Decision:
    account = state.account(event.client_id)
    if account is None:
        return answer(event.reply_to, event.event_id, "not_found")
    rotated, account = append(
        account,
        ApiKeyRotated,
        event,
        0,
        api_key_sha256=event.api_key_sha256,
        replaced_keys=replaced_keys(account, event),
    )
    return answer(
        event.reply_to,
        event.event_id,
        "key_rotated",
        changes=Decision(entries=(rotated,), account=account),
        balance=account.balance,
        entry=rotated,
    )


def replaced_keys(account: Account, event: ApiKeyRotationRequested) -> tuple[ReplacedKey, ...]:
    """The keys that still work beside the new one after this rotation: the replaced key
    for ``old_key_valid_ms``, and those replaced before whose grace has not ended (a
    rotation repeated after a lost answer must not end the key the client still runs on).
    A rotation without a grace (a leaked key) ends them all."""
    if event.old_key_valid_ms == 0:
        return ()
    now_ms = event.occurred_at_ms
    keys = {sha256: until for sha256, until in account.replaced_keys or () if until > now_ms}
    old = account.api_key_sha256
    keys[old] = max(keys.get(old, 0), now_ms + event.old_key_valid_ms)
    keys.pop(event.api_key_sha256, None)  # the same request decided twice
    kept = sorted(keys.items(), key=lambda key: key[1])[-MAX_REPLACED_KEYS:]
    return tuple(ReplacedKey(api_key_sha256=sha256, valid_until_ms=until) for sha256, until in kept)


ERASE_BATCH = 500  # request records per ErasureRequested: bounds a transaction and a reply


def erasure_requested(state: StateView, event: ErasureRequested) -> Decision:
    """Erase the captions of one batch of the client's request records.

    Balances, entries and the hash chain are untouched; a ``PersonalDataErased`` entry
    records the batch if it erased anything. The reply lists the image of every
    delivered request in the batch, erased now or before, so that a repeated erasure
    deletes images a crashed caller had not deleted yet.
    """
    account = state.account(event.client_id)
    if account is None:
        return answer(event.reply_to, event.event_id, "not_found")
    # One record past the batch says whether another batch follows.
    read = list(islice(state.requests_of(event.client_id, event.after_request_id), ERASE_BATCH + 1))
    seen, more = read[:ERASE_BATCH], len(read) > ERASE_BATCH
    erased = tuple(replace(r, caption=None) for r in seen if r.caption is not None)
    view = ErasureView(
        requests_seen=len(seen),
        requests_erased=len(erased),
        image_keys=tuple(r.meme.image_key for r in seen if r.meme is not None),
        in_flight=sum(r.status == "charged" for r in seen),
        next_after_request_id=seen[-1].request_id if more else None,
    )
    if not erased:
        return answer(
            event.reply_to, event.event_id, "erased", balance=account.balance, erasure=view
        )
    entry, account = append(
        account,
        PersonalDataErased,
        event,
        0,
        requests_erased=len(erased),
        first_request_id=erased[0].request_id,
        last_request_id=erased[-1].request_id,
    )
    return answer(
        event.reply_to,
        event.event_id,
        "erased",
        changes=Decision(entries=(entry,), account=account, requests=erased),
        balance=account.balance,
        entry=entry,
        erasure=view,
    )

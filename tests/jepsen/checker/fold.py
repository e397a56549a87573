"""The fold: what the ledger topic says, by our own reading. Accounts, requests, credits
and the partitions' chain heads, with the chain, seq and balance problems on the way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.jepsen.checker.log import Entry
from tests.jepsen.checker.model import GENESIS_HASH, Json, Problems, roll

# The account view (/v1/me) and the account record share these fields.
VIEW_FIELDS = (
    "balance",
    "seq",
    "memes_requested",
    "memes_delivered",
    "tokens_credited",
    "tokens_charged",
    "tokens_refunded",
    "ai_active",
    "ai_until_ms",
)


@dataclass
class Account:
    client_id: str
    opened_key_sha256: str  # the registration's key
    partition: int
    api_key_sha256: str = ""  # the key now: the last ApiKeyRotated's, else the opened one
    balance: int = 0
    seq: int = 0
    memes_requested: int = 0
    memes_delivered: int = 0
    tokens_credited: int = 0
    tokens_charged: int = 0
    tokens_refunded: int = 0
    ai_active: bool = False
    ai_until_ms: int | None = None
    last_hash: str = GENESIS_HASH
    # The account view after each seq: what /v1/me answered at that seq.
    views: dict[int, tuple[Any, ...]] = field(default_factory=dict)

    def view(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in VIEW_FIELDS)


@dataclass
class Request:
    """Every ledger entry of one request id, and the status the live fold would hold."""

    client_id: str
    request_id: str
    charges: list[Json] = field(default_factory=list)
    rejections: list[Json] = field(default_factory=list)
    deliveries: list[Json] = field(default_factory=list)
    refunds: list[Json] = field(default_factory=list)
    status: str | None = None  # charged, delivered, refunded, rejected

    @property
    def ends(self) -> int:
        return len(self.rejections) + len(self.deliveries) + len(self.refunds)

    @property
    def outcome(self) -> str:
        """The final word: one of FINAL, "open" (charged, not ended) or "none"."""
        if self.status is None:
            return "none"
        return "open" if self.status == "charged" else self.status


@dataclass
class Fold:
    accounts: dict[str, Account] = field(default_factory=dict)
    requests: dict[tuple[str, str], Request] = field(default_factory=dict)
    credits: dict[tuple[str, str], list[Json]] = field(default_factory=dict)
    heads: dict[int, dict[int, str]] = field(default_factory=dict)  # partition -> offset -> head
    rotations: dict[str, list[Json]] = field(default_factory=dict)  # client -> ApiKeyRotated


def fold_ledger(entries: list[Entry], problems: Problems) -> Fold:
    """Fold every entry in log order; problems of the chain and balances on the way.

    After a bad entry the fold takes the entry as written (its seq, balance and hash),
    so that one bad entry is one problem, not a cascade.
    """
    fold = Fold()
    head: dict[int, str] = {}
    for entry in entries:
        previous = head.get(entry.partition, GENESIS_HASH)
        head[entry.partition] = roll(previous, entry.hash)
        fold.heads.setdefault(entry.partition, {})[entry.offset] = head[entry.partition]
        if _apply_to_account(fold, entry, problems):
            _apply_to_request(fold, entry, problems)
    return fold


def _where(entry: Entry) -> str:
    body = entry.body
    return (
        f"client={body.get('client_id')} seq={body.get('seq')} type={body.get('type')} "
        f"partition={entry.partition} offset={entry.offset}"
    )


def _apply_to_account(fold: Fold, entry: Entry, problems: Problems) -> bool:
    """Check and apply one entry to its account; False if it was a duplicate seq."""
    body = entry.body
    client_id, seq, kind = body["client_id"], body["seq"], body["type"]
    account = fold.accounts.get(client_id)
    if account is None:
        if kind != "AccountOpened" or seq != 1:
            problems.add("account", f"{_where(entry)}: first entry is not AccountOpened seq 1")
        opened = body.get("api_key_sha256", "")
        account = Account(client_id, opened, entry.partition, api_key_sha256=opened)
        fold.accounts[client_id] = account
    elif kind == "AccountOpened":
        problems.add("account", f"{_where(entry)}: a second AccountOpened")
    if account.partition != entry.partition:
        problems.add("account", f"{_where(entry)}: client also in partition {account.partition}")
    if seq <= account.seq:
        problems.add("account", f"{_where(entry)}: seq again after seq {account.seq}")
        return False
    if seq > account.seq + 1:
        problems.add("account", f"{_where(entry)}: seqs {account.seq + 1}..{seq - 1} missing")
    elif body["prev_hash"] != account.last_hash:
        problems.add("account", f"{_where(entry)}: prev_hash is not the hash of seq {seq - 1}")
    delta = _apply_counters(account, body)
    balance_after = body["balance_after"]
    if seq == account.seq + 1 and balance_after != account.balance + delta:
        problems.add(
            "account",
            f"{_where(entry)}: balance_after {balance_after}, expected "
            f"{account.balance} {delta:+d} = {account.balance + delta}",
        )
    if balance_after < 0:
        problems.add("account", f"{_where(entry)}: negative balance_after {balance_after}")
    account.seq, account.balance, account.last_hash = seq, balance_after, entry.hash
    account.views[seq] = account.view()
    return True


def _apply_counters(account: Account, body: Json) -> int:
    """The entry's effect on the counters; returns its effect on the balance."""
    match body["type"]:
        case "TokensCredited":
            account.tokens_credited += body["tokens"]
            return int(body["tokens"])
        case "TokensCharged":
            account.tokens_charged += body["tokens"]
            account.memes_requested += 1
            return -int(body["tokens"])
        case "MemeRejected":
            account.memes_requested += 1
        case "MemeDelivered":
            account.memes_delivered += 1
        case "TokensRefunded":
            account.tokens_refunded += body["tokens"]
            return int(body["tokens"])
        case "SubscriptionChanged":
            account.ai_active, account.ai_until_ms = body["active"], body.get("until_ms")
        case "ApiKeyRotated":
            account.api_key_sha256 = body["api_key_sha256"]
    return 0


# How each entry moves a request: the statuses it may follow, and where it goes.
TRANSITIONS: dict[str, tuple[tuple[str | None, ...], str]] = {
    "TokensCharged": ((None,), "charged"),
    "MemeRejected": ((None,), "rejected"),
    "MemeDelivered": (("charged",), "delivered"),
    "TokensRefunded": (("charged",), "refunded"),
}
LISTS = {
    "TokensCharged": "charges",
    "MemeRejected": "rejections",
    "MemeDelivered": "deliveries",
    "TokensRefunded": "refunds",
}


def _apply_to_request(fold: Fold, entry: Entry, problems: Problems) -> None:
    body = entry.body
    kind = body["type"]
    if kind == "TokensCredited":
        fold.credits.setdefault((body["client_id"], body["purchase_id"]), []).append(body)
        return
    if kind == "ApiKeyRotated":
        fold.rotations.setdefault(body["client_id"], []).append(body)
        return
    if kind not in TRANSITIONS:
        if kind not in (
            "AccountOpened",
            "SubscriptionChanged",
            "PersonalDataErased",
        ):
            problems.add("log", f"{_where(entry)}: unknown entry type")
        return
    key = (body["client_id"], body["request_id"])
    request = fold.requests.get(key) or Request(*key)
    fold.requests[key] = request
    getattr(request, LISTS[kind]).append(body)
    allowed, to = TRANSITIONS[kind]
    if request.status in allowed:
        request.status = to
    else:
        problems.add(
            "outcome",
            f"client={key[0]} request={key[1]}: {kind} (seq {body['seq']}) after "
            f"{request.status or 'nothing'}",
        )

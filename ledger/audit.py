"""Audit of the ledger log: hash chains, order, and signed checkpoints. Pure, no I/O.

``verify(entries)`` reads entries in log order (optionally as ``Logged`` with their
partition and offset) and reports every problem as a ``Finding`` naming the client and
seq. The checks are the fold's own: each entry goes through ``Replay.apply`` (so
``evolve`` checks seq, ``prev_hash`` and ``balance_after``, and ``Replay`` checks that a
request ends once). This module only puts entries in their turn, names which check
refused an entry, and resynchronises the chain so that one bad entry is one finding,
not a cascade. Kinds:

- ``gap``: a seq of a client never appears (reported at the first missing seq);
- ``reordered``: an entry arrives before an earlier seq of its client, or a partition's
  offsets go backwards;
- ``altered``: the hash of seq N is not the ``prev_hash`` of seq N+1 (reported at N:
  N was edited, or N+1's link was), or a first entry that is not ``AccountOpened``;
- ``balance``: ``balance_after`` does not follow from the previous balance and the
  entry (an edited amount);
- ``duplicate``: a seq appears twice (``detail`` says whether the copies differ);
- ``outcome``: a request charged twice, ended twice or ended without a charge;
- ``unreadable``: a record that does not parse as a ledger entry (the caller reports it).

What the chain cannot show is a cut at the end: dropping the last entries of a client
leaves a valid, shorter chain. Checkpoints cover that: ``chain_head`` is a rolling
sha256 over the entry hashes of one partition in offset order; ``sign_checkpoint``
signs (topic, partition, offset, head) with HMAC-SHA256; ``verify_checkpoints`` reports
a forged signature (``checkpoint_signature``), a log that ends before a checkpoint's
offset (``truncated``) and a head that differs (``checkpoint_head``: something at or
below that offset was removed, added, reordered or edited).

Memory: one hash per entry (to tell a duplicate from a fork) plus the entries that
arrive ahead of their turn; an audit of a very long log needs memory in proportion
(``verify_all`` holds no entry beyond that).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from msgspec.structs import replace
from pydantic import BaseModel, ConfigDict, Field

from ledger.replay import Replay
from ledger.state import Account
from schemas.events import GENESIS_HASH, AccountOpened, LedgerEntryUnion, entry_hash

FindingKind = Literal[
    "gap",
    "reordered",
    "altered",
    "balance",
    "duplicate",
    "outcome",
    "truncated",
    "checkpoint_head",
    "checkpoint_signature",
    "unreadable",  # a record of the log that is not a ledger entry (found by the reader)
]


class Logged(NamedTuple):
    """An entry with its place in the log."""

    partition: int
    offset: int
    entry: LedgerEntryUnion


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FindingKind
    client_id: str | None = None
    seq: int | None = None
    partition: int | None = None
    offset: int | None = None
    detail: str = ""

    def line(self) -> str:
        """``key=value`` form for logs and the CLI."""
        fields = [f"kind={self.kind}"]
        for name in ("client_id", "seq", "partition", "offset"):
            value = getattr(self, name)
            if value is not None:
                fields.append(f"{name}={value}")
        fields.append(f'detail="{self.detail}"')
        return " ".join(fields)


@dataclass
class AuditReport:
    entries: int = 0
    clients: int = 0
    findings: list[Finding] = field(default_factory=list)
    replay: Replay = field(default_factory=Replay)

    @property
    def ok(self) -> bool:
        return not self.findings


# --- chains ----------------------------------------------------------------------------


@dataclass
class _Chain:
    hashes: dict[int, str] = field(default_factory=dict)  # seq -> entry_hash, applied
    ahead: dict[int, Logged] = field(default_factory=dict)  # arrived before their turn


def _logged(items: Iterable[LedgerEntryUnion | Logged]) -> Iterator[Logged]:
    for index, item in enumerate(items):
        # A bare entry has no partition; its position stands in for an offset.
        yield item if isinstance(item, Logged) else Logged(-1, index, item)


def _finding(kind: FindingKind, item: Logged, detail: str, seq: int | None = None) -> Finding:
    return Finding(
        kind=kind,
        client_id=item.entry.client_id,
        seq=item.entry.seq if seq is None else seq,
        partition=item.partition if item.partition >= 0 else None,
        offset=item.offset if item.partition >= 0 else None,
        detail=detail,
    )


class _Verifier:
    def __init__(self) -> None:
        self.report = AuditReport()
        self.chains: dict[str, _Chain] = defaultdict(_Chain)
        self.last_offset: dict[int, int] = {}

    def add(self, item: Logged) -> None:
        self.report.entries += 1
        entry = item.entry
        if item.partition >= 0:
            last = self.last_offset.get(item.partition)
            if last is not None and item.offset <= last:
                self.report.findings.append(
                    _finding(
                        "reordered",
                        item,
                        f"offset {item.offset} after offset {last} in partition {item.partition}",
                    )
                )
            if last is None or item.offset > last:
                self.last_offset[item.partition] = item.offset
        chain = self.chains[entry.client_id]
        account = self.report.replay.accounts.get(entry.client_id)
        expected = (account.seq if account else 0) + 1
        if entry.seq < expected or entry.seq in chain.ahead:
            waiting = chain.ahead.get(entry.seq)
            first = entry_hash(waiting.entry) if waiting else chain.hashes.get(entry.seq)
            same = entry_hash(entry) == first
            self.report.findings.append(
                _finding(
                    "duplicate",
                    item,
                    f"seq {entry.seq} appears again, "
                    + ("identical" if same else "different from the first"),
                )
            )
        elif entry.seq > expected:
            chain.ahead[entry.seq] = item
        else:
            self._apply(chain, item)
            self._drain(chain, entry.client_id)

    def _drain(self, chain: _Chain, client_id: str, *, late: bool = True) -> None:
        """Fold the entries that were waiting for the one just folded.

        They arrived early (``reordered``), unless the one folded resumes after a gap.
        """
        while chain.ahead:
            account = self.report.replay.accounts.get(client_id)
            nxt = chain.ahead.pop((account.seq if account else 0) + 1, None)
            if nxt is None:
                return
            if late:
                detail = f"seq {nxt.entry.seq} arrived before seq {nxt.entry.seq - 1}"
                self.report.findings.append(_finding("reordered", nxt, detail))
            self._apply(chain, nxt)

    def _apply(self, chain: _Chain, item: Logged) -> None:
        """Fold one entry in its turn; name the check that refused it, if any."""
        replay = self.report.replay
        entry = item.entry
        before = replay.accounts.get(entry.client_id)
        refused = self._replay(item)
        if refused and before is not None and entry.prev_hash != before.last_hash:
            self.report.findings.append(
                _finding(
                    "altered",
                    item,
                    f"hash of seq {before.seq} is not the prev_hash of seq {entry.seq}",
                    seq=before.seq,
                )
            )
            # Take the link as given and fold again: the entry's other checks still count.
            replay.accounts[entry.client_id] = replace(before, last_hash=entry.prev_hash)
            refused = self._replay(item)
        if refused:
            wrong_type = before is None or isinstance(entry, AccountOpened)
            self.report.findings.append(
                _finding("altered" if wrong_type else "balance", item, refused)
            )
            self._resync(item, before)
        chain.hashes[entry.seq] = replay.accounts[entry.client_id].last_hash

    def _replay(self, item: Logged) -> str | None:
        """``Replay.apply``; returns the fold's message if ``evolve`` refused the entry."""
        replay = self.report.replay
        client_id = item.entry.client_id
        before = replay.accounts.get(client_id)
        known = len(replay.violations)
        replay.apply(item.entry)
        new = replay.violations[known:]
        if replay.accounts.get(client_id) is before:  # evolve refused: account untouched
            return new[0] if new else "refused"
        for problem in new:
            self.report.findings.append(_finding("outcome", item, problem))
        return None

    def _resync(self, item: Logged, before: Account | None) -> None:
        """Take the entry as written and go on, so that the next one is checked.

        The entry still goes through ``Replay.apply`` (its request's transition counts):
        the account is set to the seq and link the entry names, and to a balance from
        which ``evolve`` reaches ``balance_after``. An entry moves a balance by 0 or by
        plus or minus its ``tokens``, so one of three candidates is the one ``evolve``
        accepts; the fold stays the only code that knows which.
        """
        entry = item.entry
        replay = self.report.replay
        base = before or Account(
            client_id=entry.client_id, api_key_sha256=getattr(entry, "api_key_sha256", "")
        )
        tokens = getattr(entry, "tokens", 0)
        for delta in dict.fromkeys((0, tokens, -tokens)):
            if entry.balance_after - delta < 0:
                continue
            replay.accounts[entry.client_id] = replace(
                base,
                seq=entry.seq - 1,
                last_hash=entry.prev_hash,
                balance=entry.balance_after - delta,
            )
            if self._replay(item) is None:
                return
        replay.accounts[entry.client_id] = replace(
            base, seq=entry.seq, balance=entry.balance_after, last_hash=entry_hash(entry)
        )

    def finish(self) -> AuditReport:
        for client_id, chain in self.chains.items():
            while chain.ahead:
                account = self.report.replay.accounts.get(client_id)
                expected = (account.seq if account else 0) + 1
                resume = min(chain.ahead)
                item = chain.ahead.pop(resume)
                missing = f"seqs {expected}..{resume - 1}"
                if resume == expected + 1:
                    missing = f"seq {expected}"
                self.report.findings.append(
                    _finding("gap", item, f"{missing} missing before seq {resume}", seq=expected)
                )
                self._resync(item, account)
                chain.hashes[resume] = self.report.replay.accounts[client_id].last_hash
                self._drain(chain, client_id, late=False)
        self.report.clients = len(self.chains)
        return self.report


def verify(entries: Iterable[LedgerEntryUnion | Logged]) -> AuditReport:
    """Check every client's chain in log order; see the module docstring for the kinds."""
    verifier = _Verifier()
    for item in _logged(entries):
        verifier.add(item)
    return verifier.finish()


# --- checkpoints -----------------------------------------------------------------------


class Checkpoint(BaseModel):
    """The signed head of one partition of the ledger topic up to ``offset`` (inclusive).

    ``offset`` is the offset of the last entry covered, -1 for an empty partition.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=-1)
    head: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = Field(pattern=r"^[0-9a-f]{64}$")


def roll_head(head: str, entry: LedgerEntryUnion) -> str:
    """The partition's head after ``entry``: one step of ``chain_head``."""
    return hashlib.sha256(f"{head}{entry_hash(entry)}".encode()).hexdigest()


def chain_head(entries_of_one_partition: Iterable[LedgerEntryUnion | Logged]) -> str:
    """Rolling sha256 over the entry hashes, in offset order; GENESIS_HASH if none."""
    head = GENESIS_HASH
    for item in _logged(entries_of_one_partition):
        head = roll_head(head, item.entry)
    return head


def _signature(topic: str, partition: int, offset: int, head: str, key: str) -> str:
    message = f"maas-ledger-checkpoint:v1:{topic}:{partition}:{offset}:{head}"
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign_checkpoint(topic: str, partition: int, offset: int, head: str, key: str) -> Checkpoint:
    return Checkpoint(
        topic=topic,
        partition=partition,
        offset=offset,
        head=head,
        signature=_signature(topic, partition, offset, head, key),
    )


def _checkpoint_finding(kind: FindingKind, cp: Checkpoint, detail: str) -> Finding:
    return Finding(kind=kind, partition=cp.partition, offset=cp.offset, detail=detail)


def verify_checkpoints(
    checkpoints: Iterable[Checkpoint], entries: Iterable[Logged], key: str
) -> list[Finding]:
    """Check each checkpoint against the entries of its partition (in log order)."""
    findings: list[Finding] = []
    todo: dict[int, list[Checkpoint]] = defaultdict(list)
    for cp in checkpoints:
        expected = _signature(cp.topic, cp.partition, cp.offset, cp.head, key)
        if not hmac.compare_digest(expected, cp.signature):
            findings.append(
                _checkpoint_finding("checkpoint_signature", cp, "signature does not match")
            )
        elif cp.offset < 0:
            if cp.head != GENESIS_HASH:
                findings.append(_checkpoint_finding("checkpoint_head", cp, "empty, head set"))
        else:
            todo[cp.partition].append(cp)
    for waiting in todo.values():
        waiting.sort(key=lambda cp: cp.offset, reverse=True)  # next to check at the end
    heads: dict[int, str] = defaultdict(lambda: GENESIS_HASH)
    last: dict[int, Logged] = {}
    for item in entries:
        pending = todo.get(item.partition)
        # An offset passed without landing on it: the entry at the checkpoint is gone.
        while pending and pending[-1].offset < item.offset:
            cp = pending.pop()
            findings.append(
                _checkpoint_finding("checkpoint_head", cp, f"no entry at offset {cp.offset}")
            )
        heads[item.partition] = roll_head(heads[item.partition], item.entry)
        last[item.partition] = item
        # Several checkpoints may sign one offset (rounds over a partition that did not grow).
        while pending and pending[-1].offset == item.offset:
            cp = pending.pop()
            if heads[item.partition] != cp.head:
                findings.append(
                    _checkpoint_finding(
                        "checkpoint_head",
                        cp,
                        "head differs: an entry at or below this offset was removed, "
                        "added, reordered or edited",
                    )
                )
    for partition, pending in todo.items():
        for cp in pending:
            seen = last.get(partition)
            findings.append(
                _checkpoint_finding(
                    "truncated",
                    cp,
                    f"log of partition {partition} ends at offset "
                    f"{seen.offset if seen else 'none'}, before the checkpoint",
                )
            )
    return findings


def verify_all(
    entries: Iterable[Logged], checkpoints: Iterable[Checkpoint], key: str
) -> tuple[AuditReport, list[Finding]]:
    """``verify`` and ``verify_checkpoints`` in one pass over the log, holding no entry
    once both have looked at it."""
    verifier = _Verifier()

    def chained() -> Iterator[Logged]:
        for item in entries:
            verifier.add(item)
            yield item

    findings = verify_checkpoints(checkpoints, chained(), key)
    return verifier.finish(), findings


def verify_checkpoint(checkpoint: Checkpoint, entries: Iterable[Logged], key: str) -> list[Finding]:
    return verify_checkpoints([checkpoint], entries, key)

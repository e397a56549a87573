"""``ledger.audit``: a clean log verifies; each kind of tampering is named with client/seq."""

from __future__ import annotations

import pytest

from ledger.audit import (
    Finding,
    Logged,
    chain_head,
    sign_checkpoint,
    verify,
    verify_all,
    verify_checkpoint,
    verify_checkpoints,
)
from ledger.memory import MemoryLedger
from schemas.events import (
    ClientRegistered,
    LedgerEntryUnion,
    MemeFailed,
    MemeGenerated,
    MemeRequested,
    TokensCharged,
    TokensPurchased,
)

KEY = "test-signing-key"
TOPIC = "t.ledger"


def _log() -> list[LedgerEntryUnion]:
    """Two clients, interleaved: open, credit 3, three memes (one failed -> refund)."""
    ledger = MemoryLedger()
    common = {"region": "t", "occurred_at_ms": 1_000, "reply_to": 0}
    for client in ("alice", "bob"):
        ledger.handle(
            ClientRegistered(
                event_id=f"reg-{client}", client_id=client, api_key_sha256="a" * 64, **common
            )
        )
        ledger.handle(
            TokensPurchased(
                event_id=f"buy-{client}", client_id=client, purchase_id="p1", tokens=3, **common
            )
        )
    for n in range(3):
        for client in ("alice", "bob"):
            request_id = f"{client}-r{n}"
            ledger.handle(
                MemeRequested(
                    event_id=f"req-{request_id}",
                    client_id=client,
                    request_id=request_id,
                    fingerprint="0" * 16,
                    lat=0,
                    lon=0,
                    query="food",
                    deadline_ms=10_000,
                    **common,
                )
            )
            done = {"region": "t", "occurred_at_ms": 1_500, "client_id": client}
            if n == 1:
                ledger.handle(
                    MemeFailed(
                        event_id=f"fail-{request_id}",
                        request_id=request_id,
                        kind="standard",
                        error="boom",
                        **done,
                    )
                )
            else:
                ledger.handle(
                    MemeGenerated(
                        event_id=f"gen-{request_id}",
                        request_id=request_id,
                        meme_id="m",
                        kind="standard",
                        template="t",
                        caption="c",
                        image_key="k",
                        **done,
                    )
                )
    return ledger.entries


@pytest.fixture
def log() -> list[LedgerEntryUnion]:
    return _log()


def _index(log: list[LedgerEntryUnion], client: str, seq: int) -> int:
    return next(i for i, e in enumerate(log) if e.client_id == client and e.seq == seq)


def _kinds(findings: list[Finding]) -> set[tuple[str, str | None, int | None]]:
    return {(f.kind, f.client_id, f.seq) for f in findings}


def test_clean_log_verifies(log: list[LedgerEntryUnion]) -> None:
    report = verify(log)
    assert report.ok, [f.line() for f in report.findings]
    assert report.entries == len(log)
    assert report.clients == 2


def test_deleted_entry_is_one_gap_at_its_seq(log: list[LedgerEntryUnion]) -> None:
    del log[_index(log, "alice", 4)]
    assert _kinds(verify(log).findings) == {("gap", "alice", 4)}


def test_swapped_entries_of_one_client_are_reordered(log: list[LedgerEntryUnion]) -> None:
    i, j = _index(log, "bob", 3), _index(log, "bob", 4)
    log[i], log[j] = log[j], log[i]
    assert _kinds(verify(log).findings) == {("reordered", "bob", 4)}


def test_edited_amount_is_a_balance_mismatch_and_breaks_the_next_link(
    log: list[LedgerEntryUnion],
) -> None:
    i = _index(log, "alice", 3)
    assert isinstance(log[i], TokensCharged)
    log[i] = log[i].model_copy(update={"tokens": 2})
    assert _kinds(verify(log).findings) == {("balance", "alice", 3), ("altered", "alice", 3)}


def test_edit_with_consistent_balance_is_still_caught_by_the_chain(
    log: list[LedgerEntryUnion],
) -> None:
    i = _index(log, "alice", 3)
    log[i] = log[i].model_copy(update={"request_id": "someone-else"})
    findings = verify(log).findings
    assert ("altered", "alice", 3) in _kinds(findings)


def test_duplicate_entry_is_reported(log: list[LedgerEntryUnion]) -> None:
    i = _index(log, "bob", 2)
    log.insert(i + 3, log[i])
    (finding,) = verify(log).findings
    assert (finding.kind, finding.client_id, finding.seq) == ("duplicate", "bob", 2)
    assert "identical" in finding.detail


def test_partition_offsets_going_backwards_are_reordered(log: list[LedgerEntryUnion]) -> None:
    logged = [Logged(0, offset, e) for offset, e in enumerate(log)]
    # Swap two entries of different clients: each chain is intact, the partition is not.
    assert (log[1].client_id, log[2].client_id) == ("alice", "bob")
    logged[1], logged[2] = logged[2], logged[1]
    findings = verify(logged).findings
    assert [(f.kind, f.partition, f.offset) for f in findings] == [("reordered", 0, 1)]


def _checkpoint(logged: list[Logged], upto: int, key: str = KEY):
    covered = [item for item in logged if item.offset <= upto]
    return sign_checkpoint(TOPIC, 0, upto, chain_head(covered), key)


def test_checkpoint_of_an_intact_log_verifies(log: list[LedgerEntryUnion]) -> None:
    logged = [Logged(0, offset * 2, e) for offset, e in enumerate(log)]  # markers between
    checkpoints = [_checkpoint(logged, 10), _checkpoint(logged, logged[-1].offset)]
    assert verify_checkpoints(checkpoints, logged, KEY) == []


def test_checkpoints_signed_twice_at_one_offset_verify(log: list[LedgerEntryUnion]) -> None:
    # Two signing rounds over a partition that did not grow: the same offset twice.
    logged = [Logged(0, offset, e) for offset, e in enumerate(log)]
    checkpoints = [_checkpoint(logged, 10), _checkpoint(logged, 10), _checkpoint(logged, 12)]
    assert verify_checkpoints(checkpoints, logged, KEY) == []
    tampered = [*logged[:5], *logged[6:]]
    findings = verify_checkpoints(checkpoints, tampered, KEY)
    assert [f.kind for f in findings] == ["checkpoint_head"] * 3


def test_truncation_after_a_checkpoint_is_reported(log: list[LedgerEntryUnion]) -> None:
    logged = [Logged(0, offset, e) for offset, e in enumerate(log)]
    checkpoint = _checkpoint(logged, logged[-1].offset)
    # Cut the last three entries: every chain is still valid on its own...
    assert verify(logged[:-3]).ok
    # ...but the checkpoint shows the cut.
    (finding,) = verify_checkpoint(checkpoint, logged[:-3], KEY)
    assert (finding.kind, finding.partition, finding.offset) == ("truncated", 0, len(log) - 1)


def test_entry_removed_below_a_checkpoint_changes_the_head(log: list[LedgerEntryUnion]) -> None:
    logged = [Logged(0, offset, e) for offset, e in enumerate(log)]
    checkpoint = _checkpoint(logged, 12)
    del logged[5]
    (finding,) = verify_checkpoint(checkpoint, logged, KEY)
    assert finding.kind == "checkpoint_head"


def test_forged_checkpoint_signature_is_reported(log: list[LedgerEntryUnion]) -> None:
    logged = [Logged(0, offset, e) for offset, e in enumerate(log)]
    forged = _checkpoint(logged[:-3], logged[-4].offset, key="not-the-key")
    (finding,) = verify_checkpoint(forged, logged[:-3], KEY)
    assert (finding.kind, finding.partition) == ("checkpoint_signature", 0)


def test_one_pass_reports_the_chains_and_the_checkpoints(log: list[LedgerEntryUnion]) -> None:
    """``verify_all`` reads the log once (here a generator: it cannot be read twice) and
    finds what ``verify`` and ``verify_checkpoints`` find apart."""
    logged = [Logged(0, offset, e) for offset, e in enumerate(log)]
    checkpoint = _checkpoint(logged, 12)
    del logged[5]
    report, findings = verify_all((item for item in logged), [checkpoint], KEY)
    assert report.entries == len(logged)
    assert report.findings == verify(logged).findings != []
    assert findings == verify_checkpoints([checkpoint], logged, KEY) != []


def test_empty_partition_checkpoint() -> None:
    empty = sign_checkpoint(TOPIC, 3, -1, chain_head([]), KEY)
    assert verify_checkpoint(empty, [], KEY) == []


def test_a_second_different_entry_for_a_seq_is_a_fork(log: list[LedgerEntryUnion]) -> None:
    i = _index(log, "bob", 5)
    log.append(log[i].model_copy(update={"event_id": "forged"}))
    (finding,) = verify(log).findings
    assert (finding.kind, finding.client_id, finding.seq) == ("duplicate", "bob", 5)
    assert "different" in finding.detail


def test_a_chain_without_its_first_entry_is_a_gap_at_seq_1(log: list[LedgerEntryUnion]) -> None:
    del log[_index(log, "alice", 1)]
    assert _kinds(verify(log).findings) == {("gap", "alice", 1)}


def test_any_one_deleted_entry_but_a_chains_last_is_exactly_one_gap() -> None:
    clean = _log()
    last = {e.client_id: e.seq for e in clean}
    for i, entry in enumerate(clean):
        if entry.seq == last[entry.client_id]:
            continue  # a cut at the end of a chain: only a checkpoint shows it
        log = clean[:i] + clean[i + 1 :]
        kinds = _kinds(verify(log).findings)
        assert ("gap", entry.client_id, entry.seq) in kinds, i
        # A deleted charge also leaves its delivery or refund without one: said as such.
        others = kinds - {("gap", entry.client_id, entry.seq)}
        assert all(k[:2] == ("outcome", entry.client_id) for k in others), (i, kinds)
        assert len(others) <= (1 if isinstance(entry, TokensCharged) else 0), (i, kinds)


def test_any_one_entry_moved_to_the_end_makes_the_later_ones_early() -> None:
    clean = _log()
    last = {e.client_id: e.seq for e in clean}
    for i, entry in enumerate(clean):
        log = clean[:i] + clean[i + 1 :] + [entry]
        kinds = _kinds(verify(log).findings)
        if entry.seq == last[entry.client_id]:
            assert kinds == set(), i  # still in its chain's order
        else:
            # Every later entry of the client came early; none is reported missing.
            later = {
                s for e in clean if e.client_id == entry.client_id and (s := e.seq) > entry.seq
            }
            assert kinds == {("reordered", entry.client_id, s) for s in later}, i

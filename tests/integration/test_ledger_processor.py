"""The ledger processor, driven directly over Kafka: exactly-once under crashes and zombies.

No API and no generator processes: ``tests.integration.ledger_driver`` produces the
inputs, plays the generator pools (answering approvals on the outcomes topic), reads the
replies and folds the ledger topic with ``ledger.replay.Replay``. Each test runs its own
region (fresh topics) and its own processor processes on the session's broker.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import shutil
import threading
import time
from collections import Counter

import pytest

from core.topic_reader import position_of, read_topic
from ledger.replay import Replay
from schemas.events import (
    LedgerEntryUnion,
    MemeDelivered,
    MemeRejected,
    MemeRequested,
    RefundReason,
    Reply,
    TokensCharged,
    TokensCredited,
    TokensRefunded,
)
from tests.integration.ledger_driver import (
    Approval,
    Clock,
    LedgerDriver,
    header,
    now_ms,
    setup_clients,
)

pytestmark = pytest.mark.kafka

SETTLE_TIMEOUT_S = 120.0


def assert_ledger_sound(driver: LedgerDriver, clients: list[str]) -> None:
    """Replay has no violation, conservation holds, and the live accounts equal the replay."""
    replay = driver.read_ledger()
    assert replay.violations == [], replay.violations[:10]
    assert replay.conservation() == [], replay.conservation()[:10]
    live = driver.accounts(clients)
    for client in clients:
        assert live[client] == replay.accounts[client].view(now_ms()), client


def verify_exactly_once(
    driver: LedgerDriver,
    requests: list[MemeRequested],
    clients: list[str],
    final: dict[str, Reply] | None = None,
) -> tuple[list[LedgerEntryUnion], Replay]:
    """Every request id produced ends in the ledger exactly once, and nothing else is off.

    - the replay has no violation (seq gaps, wrong balance_after, double charge or end);
    - each request id is charged at most once, or rejected (never both), and none is
      missing; each charged one ended exactly once (delivered or refunded);
    - no request id was approved twice in committed output;
    - conservation holds, and AccountQueried answers equal the replay's accounts;
    - the final reply of each request (if given) agrees with the ledger.
    """
    entries = driver.read_entries()
    replay = Replay().apply_all(entries)
    assert replay.violations == [], replay.violations[:10]
    assert replay.conservation() == [], replay.conservation()[:10]
    charges = Counter(e.request_id for e in entries if isinstance(e, TokensCharged))
    rejections = Counter(e.request_id for e in entries if isinstance(e, MemeRejected))
    ends = Counter(e.request_id for e in entries if isinstance(e, MemeDelivered | TokensRefunded))
    twice = {r: n for r, n in (charges + rejections).items() if n > 1}
    assert twice == {}, f"decided more than once: {list(twice.items())[:10]}"
    assert set(charges).isdisjoint(rejections)
    produced = {e.request_id for e in requests}
    lost = produced - set(charges) - set(rejections)
    assert lost == set(), f"{len(lost)} requests lost, e.g. {sorted(lost)[:5]}"
    assert set(charges) <= produced
    assert set(ends) == set(charges), sorted(set(charges) ^ set(ends))[:10]
    assert max(ends.values(), default=1) == 1
    assert driver.approvals.duplicates() == {}
    if final is not None:
        for event in requests:
            outcome = final[event.event_id].outcome
            ended = replay.requests[event.client_id, event.request_id]
            assert outcome == ended, (event.request_id, outcome)
    live = driver.accounts(clients)
    for client in clients:
        assert live[client] == replay.accounts[client].view(now_ms()), client
    print(
        f"[verify] {len(entries)} ledger entries: {len(charges)} charged "
        f"({sum(isinstance(e, TokensRefunded) for e in entries)} refunded), "
        f"{len(rejections)} rejected, {len(clients)} accounts match",
        flush=True,
    )
    return entries, replay


class Load:
    """Meme requests from ``clients`` at a steady pace, in a background thread."""

    def __init__(
        self, driver: LedgerDriver, clients: list[str], per_tick: int = 10, tick_s: float = 0.05
    ) -> None:
        self.driver = driver
        self.clients = clients
        self.per_tick = per_tick
        self.tick_s = tick_s
        self.sent: list[MemeRequested] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        rng = random.Random()
        while not self._stop.is_set():
            for _ in range(self.per_tick):
                self.sent.append(self.driver.request_meme(rng.choice(self.clients)))
            self.driver.producer.poll(0)
            time.sleep(self.tick_s)

    def stop(self) -> list[MemeRequested]:
        self._stop.set()
        self._thread.join(timeout=30)
        self.driver.flush()
        return self.sent


# --- 1 --------------------------------------------------------------------------------


def test_exactly_once_under_repeated_sigkill(make_driver) -> None:
    """Scenario: 30 clients buy tokens and send ~1,500 meme requests quickly; the test
    (playing the generator) answers every approval, some with MemeFailed and some with
    the same MemeGenerated twice; the same MemeRequested event and the same
    TokensPurchased event are also produced twice. While the processor works it is
    SIGKILLed three times at random points and restarted each time.

    We expect: after settling, every request has one outcome in the ledger and every
    event sent once gets exactly one reply; the replay of the ledger has no
    violation (no seq gap, no wrong balance_after, no request charged twice or ended
    twice); no request was approved twice in committed output; each client was
    credited exactly the sum of its distinct purchases; conservation holds; and every
    balance the processor reports (AccountQueried) equals the replay's.
    """
    clock = Clock("sigkill")
    seed = random.randrange(2**32)
    print(f"[sigkill] random seed {seed}")
    rng = random.Random(seed)
    d = make_driver()
    d.start()
    d.wait_serving()
    clock.lap("processor serving")

    clients = [f"c{i:02d}" for i in range(30)]
    setup_clients(d, dict.fromkeys(clients, 0))
    clock.lap("clients registered")

    def policy(approval: Approval) -> list[str]:
        roll = rng.random()
        if roll < 0.10:
            return ["failed"]
        if roll < 0.25:
            return ["generated", "generated"]  # the same MemeGenerated event twice
        return ["generated"]

    d.serve_outcomes(policy)

    # Inputs: per client 2-3 purchases (one sent twice) and 50 requests (some twice);
    # a few clients get fewer tokens than requests, so rejections happen too.
    purchases: dict[str, dict[str, int]] = {c: {} for c in clients}
    requests: dict[str, list] = {c: [] for c in clients}
    plan: list = []
    for c in clients:
        for _ in range(rng.randint(2, 3)):
            event = d.purchase(c, rng.randint(10, 30), send=False)
            purchases[c][event.purchase_id] = event.tokens
            plan.append(event)
        plan.append(plan[-1])  # the same TokensPurchased event twice
        for _ in range(50):
            event = d.request_meme(c, send=False)
            requests[c].append(event)
            plan.append(event)
            if rng.random() < 0.05:
                plan.append(event)  # the same MemeRequested event twice
    rng.shuffle(plan)
    all_requests = [e for es in requests.values() for e in es]
    print(f"[sigkill] producing {len(plan)} inputs ({len(all_requests)} distinct requests)")

    # Produced at a steady pace (~130 inputs/s, ~12 s); the tail slows to a trickle
    # until the kills are done, so that there is always work when the killer strikes.
    kills_done = threading.Event()
    sent: list[MemeRequested] = []  # in order of first send
    first_sent: set[str] = set()
    lock = threading.Lock()

    def produce() -> None:
        for i, event in enumerate(plan):
            with lock:
                if isinstance(event, MemeRequested) and event.event_id not in first_sent:
                    first_sent.add(event.event_id)
                    sent.append(event)
            d.send(event)
            if len(plan) - i < 150 and not kills_done.is_set():
                d.flush()
                time.sleep(0.05)
            elif i % 20 == 19:
                d.flush()
                time.sleep(0.15)
        d.flush()

    producer = threading.Thread(target=produce, name="produce", daemon=True)
    producer.start()
    kills: list[int] = []  # requests sent and not answered yet, at each kill
    for _ in range(3):
        # Wait until the (re)started process answers a request first sent after its start,
        # then strike at a random moment while some request is still unanswered.
        with lock:
            since = len(sent)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with lock:
                fresh = [e.event_id for e in sent[since:]]
            if any(d.replies.get(e) is not None for e in fresh):
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.1, 1.0))
        while time.monotonic() < deadline:
            with lock:
                pending = sum(1 for e in sent if d.replies.get(e.event_id) is None)
            if pending:
                break
            time.sleep(0.005)
        kills.append(pending)
        d.kill("0")
        time.sleep(rng.uniform(0.0, 0.5))
        d.start("0")
    kills_done.set()
    clock.lap(f"3 SIGKILLs done; requests in flight at each kill: {kills}")
    producer.join(timeout=120)
    assert not producer.is_alive()
    assert min(kills) > 0, kills  # every kill landed while there was work in flight

    final = d.replies.wait([e.event_id for e in all_requests], SETTLE_TIMEOUT_S)
    clock.lap("every request has its final reply")
    aborted = d.count_records(d.topics.ledger, committed=False) - d.count_records(d.topics.ledger)
    print(f"[sigkill] ledger records of aborted transactions: {aborted}")

    entries, replay = verify_exactly_once(d, all_requests, clients, final)

    # Replies are exactly-once too: every event sent once gets exactly one reply, even
    # across the kills (a reply of an aborted transaction is never seen). An event sent
    # twice gets one or two: a redelivery while its request is still open only joins
    # the waiters it is already in; after the end it is answered again.
    times_sent = Counter(e.event_id for e in plan)
    time.sleep(1.0)  # let replies of the last commits arrive
    wrong = {
        e: (d.replies.count(e), n)
        for e, n in times_sent.items()
        if not 1 <= d.replies.count(e) <= n
    }
    assert wrong == {}, f"{len(wrong)} events: (replies, sends) {list(wrong.items())[:10]}"
    twice = [e for e, n in times_sent.items() if n == 2]
    print(
        f"[sigkill] {len(twice)} events sent twice: "
        f"{sum(d.replies.count(e) == 2 for e in twice)} answered twice"
    )

    credited: Counter[tuple[str, str]] = Counter()
    for e in entries:
        if isinstance(e, TokensCredited):
            credited[(e.client_id, e.purchase_id)] += 1
    assert max(credited.values()) == 1
    for c in clients:
        assert replay.accounts[c].tokens_credited == sum(purchases[c].values()), c

    clock.lap("ledger checked")


# --- 2 --------------------------------------------------------------------------------


def restored_lines(log: str) -> list[dict[str, str]]:
    """The ``partition restored`` log lines, as key=value dicts."""
    found = []
    for line in log.splitlines():
        if "partition restored" in line:
            found.append(dict(p.split("=", 1) for p in line.split() if "=" in p))
    return found


def test_restore_from_changelog(make_driver) -> None:
    """Scenario: clients buy, request memes and get them; the processor is stopped, its
    local RocksDB directory deleted, and it is started again. Then, the other way round:
    the state directory is kept, and the processor is SIGKILLed right after a commit
    (as soon as a reply of a burst is visible), three times.

    We expect: after the deletion the state is rebuilt from the changelog alone (restore
    from the beginning, records > 0): every AccountQueried answer is the same as before
    the stop, a retried old request is answered from the restored request record (not
    charged again), and new requests continue each client's seq without a gap. After
    the kills right after commits the restore starts from the local offset and the
    ledger stays continuous and equal to the live state.
    """
    clock = Clock("restore")
    d = make_driver()
    d.start()
    d.wait_serving()
    clients = [f"r{i}" for i in range(6)]
    setup_clients(d, dict.fromkeys(clients, 20))
    d.serve_outcomes()
    first = [d.request_meme(c) for c in clients for _ in range(5)]
    d.flush()
    d.replies.wait([e.event_id for e in first], 60)
    before = d.accounts(clients)
    assert all(v.balance == 15 and v.seq == 12 for v in before.values()), before
    clock.lap("first requests served")

    state = d.state_dir("0")
    assert state.is_dir() and any(state.iterdir()), state
    assert d.terminate("0") == 0
    shutil.rmtree(state)
    mark = d.mark("0", "restart with the local state deleted")
    d.start("0")
    d.wait_serving()
    restored = restored_lines(d.log_since("0", mark))
    clock.lap("restarted without local state")
    assert len(restored) == d.settings.partitions, restored
    assert all(r["from_offset"] == "-2" for r in restored), restored  # OFFSET_BEGINNING
    assert sum(int(r["records"]) for r in restored) > 0
    used = {r["partition"] for r in restored if int(r["records"]) > 0}
    assert d.accounts(clients) == before

    retried = first[: len(clients)]
    for event in retried:
        d.send(event)  # the same event again: answered from the restored record
    new = [d.request_meme(c) for c in clients for _ in range(3)]
    d.flush()
    for event in retried:
        again = d.replies.wait_count(event.event_id, 2, 60)
        assert again[1].outcome == "delivered" and again[1].entry == again[0].entry
    d.replies.wait([e.event_id for e in new], 60)
    _, replay = verify_exactly_once(d, first + new, clients)
    for c in clients:
        account = replay.accounts[c]
        assert (account.balance, account.seq, account.memes_requested) == (12, 18, 8), account
    clock.lap("state rebuilt from the changelog, seq continues")

    # The reverse: local state kept, killed right after commits.
    bursts: list[MemeRequested] = []
    for round_ in range(3):
        burst = [d.request_meme(c) for c in clients for _ in range(4)]
        bursts += burst
        d.flush()
        d.replies.wait_any([e.event_id for e in burst], 60)
        d.kill("0")  # right after a commit: its reply is visible
        mark = d.mark("0", f"restart {round_} after a kill right after a commit")
        d.start("0")
        d.wait_serving()
        restored = restored_lines(d.log_since("0", mark))
        assert len(restored) == d.settings.partitions
        # Partitions with a changelog restore past the local offset, not from the start.
        local = [r for r in restored if r["partition"] in used]
        assert all(int(r["from_offset"]) >= 0 for r in local), local
    d.replies.wait([e.event_id for e in bursts], 60)
    assert "local state ahead of changelog" not in d.log_text("0")
    _, replay = verify_exactly_once(d, first + new + bursts, clients)
    for c in clients:
        assert replay.accounts[c].balance == 20 - 8 - 12
    clock.lap("kills right after commits: ledger continuous")


# --- 3 --------------------------------------------------------------------------------


def test_zombie_is_fenced(make_driver) -> None:
    """Scenario: instance 0 serves all partitions under load and is frozen (SIGSTOP)
    mid-load; instance 1 (another transactional.id) starts and takes every partition once
    0's session (10 s) has timed out and 0's open transaction has been aborted; the load
    goes on; then instance 0 is thawed (SIGCONT) with its stale state and whatever it had
    fetched.

    We expect: instance 1 serves every partition while 0 is frozen; the thawed zombie
    cannot commit (its transaction is aborted or it is fenced: it exits, or it rejoins
    and restores); and in the ledger no request is charged twice, none is lost, the
    replay has no violation and the live balances equal the replay's.
    """
    clock = Clock("zombie")
    # A short transaction timeout bounds how long the zombie's open transaction can stall
    # the read_committed readers (and instance 1's wait for stable offsets).
    d = make_driver(MAAS_TRANSACTION_TIMEOUT_MS="10000")
    d.start("0")
    d.wait_serving()
    clients = [f"z{i}" for i in range(10)]
    setup_clients(d, dict.fromkeys(clients, 1_000))
    d.serve_outcomes()
    clock.lap("instance 0 serving")

    with Load(d, clients, per_tick=5, tick_s=0.05) as load:
        time.sleep(1.5)
        d.pause("0")
        paused_at = len(load.sent)
        clock.lap(f"instance 0 frozen after {paused_at} requests")
        d.start("1")
        d.wait_serving(timeout_s=60)
        clock.lap("instance 1 serves every partition")
        mark = d.mark("0", "SIGCONT")
        d.resume("0")
        time.sleep(3.0)
    requests = load.sent
    clock.lap(f"zombie thawed; load stopped after {len(requests)} requests")
    final = d.replies.wait([e.event_id for e in requests], SETTLE_TIMEOUT_S)
    clock.lap("every request has its final reply")

    # The zombie must not carry on as if nothing happened: either it exits (a fatal
    # error: fenced, or its transactional call failed) or it aborts and rejoins.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = d.log_since("0", mark)
        if not d.running("0") or "partitions assigned" in after:
            break
        time.sleep(0.2)
    code = d.procs["0"].returncode
    print(f"[zombie] after SIGCONT: exit code={code}\n{after[-2000:]}", flush=True)
    if code is not None:
        assert code != 0, after[-3000:]  # nobody asked it to stop
        failed = ("Traceback", "level=ERROR", "level=CRITICAL")
        assert any(word in after for word in failed), after[-3000:]
    else:
        assert "partitions revoked" in after and "partitions assigned" in after, after[-3000:]
    verify_exactly_once(d, requests, clients, final)
    clock.lap("ledger checked")


# --- 4 --------------------------------------------------------------------------------


def current_share(log: str) -> list[int]:
    """The partitions an instance owns now by its log: its last assignment, or none if a
    revocation came after it (a rebalance in progress)."""
    share: list[int] = []
    for line in log.splitlines():
        if "partitions assigned partitions=" in line:
            share = json.loads(line.split("partitions assigned partitions=", 1)[1].strip())
        elif "partitions revoked partitions=" in line:
            share = []
    return share


def is_partition_of(shares: dict[str, list[int]], n: int) -> bool:
    """Every share non-empty, and together disjoint and complete over ``range(n)``."""
    owned = sorted(p for share in shares.values() for p in share)
    return all(shares.values()) and owned == list(range(n))


def test_scale_out_and_in_under_load(make_driver) -> None:
    """Scenario: instances 0 and 1 share the partitions under a steady load of meme
    requests from 20 clients (three of them with too few tokens); a third instance (2)
    joins; then instance 0 is stopped with SIGTERM and its partitions move to the others
    (after its static-membership session times out).

    We expect: instance 2 gets partitions while the others keep some; after the SIGTERM
    instance 0 exits cleanly and every partition is served again; every produced request
    id ends in the ledger exactly once, as charged (then delivered) or rejected: no
    double charge, no lost request; the replay has no violation and equals the live
    balances.
    """
    clock = Clock("scale")
    d = make_driver()
    d.start("0")
    d.start("1")
    d.wait_serving()
    clients = [f"s{i:02d}" for i in range(20)]
    tokens = {c: (15 if i < 3 else 1_000) for i, c in enumerate(clients)}
    setup_clients(d, tokens)
    d.serve_outcomes()
    n = d.settings.partitions
    clock.lap("instances 0 and 1 serving")

    with Load(d, clients, per_tick=5, tick_s=0.05) as load:
        time.sleep(2.0)
        marks = {i: d.mark(i, "instance 2 joins") for i in ("0", "1")}
        d.start("2")
        marks["2"] = 0
        # Once the rebalance settles each of the three owns a share: non-empty, disjoint
        # (the same partition number of every input topic goes to one instance),
        # complete. It may take more than one round (the logs are read mid-round too).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shares = {i: current_share(d.log_since(i, m)) for i, m in marks.items()}
            if is_partition_of(shares, n):
                break
            time.sleep(0.2)
        clock.lap(f"instance 2 joined; assignment {shares}")
        assert is_partition_of(shares, n), shares
        time.sleep(2.0)
        marks = {i: d.mark(i, "instance 0 leaves") for i in ("1", "2")}
        code = d.terminate("0")
        clock.lap(f"instance 0 terminated (exit code {code})")
        d.wait_serving(timeout_s=60)
        clock.lap("every partition served by 1 and 2")
        time.sleep(1.0)
    requests = load.sent
    final = d.replies.wait([e.event_id for e in requests], SETTLE_TIMEOUT_S)
    clock.lap(f"all {len(requests)} requests answered")

    assert code == 0
    last = {i: current_share(d.log_since(i, m)) for i, m in marks.items()}
    assert is_partition_of(last, n), last
    _, replay = verify_exactly_once(d, requests, clients, final)
    assert any(s == "rejected" for s in replay.requests.values())
    clock.lap("ledger checked")


# --- 5 --------------------------------------------------------------------------------


def test_deadline_refund_and_late_outcome_ignored(make_driver) -> None:
    """Scenario: a client's request is charged but its outcome never comes; the refund
    grace is 200 ms and the request's deadline 500 ms away. Later the generator's
    MemeGenerated for it arrives after all.

    We expect: the waiting client gets a ``refunded`` reply with DEADLINE_EXPIRED, not
    before deadline + grace; the late MemeGenerated is ignored (no MemeDelivered, no
    second end); a retry of the request gets the refund again; balances add up.
    """
    clock = Clock("deadline")
    d = make_driver(MAAS_REFUND_GRACE_MS="200")
    d.start()
    d.wait_serving()
    clock.lap("processor serving")
    client = "late-client"
    setup_clients(d, {client: 5})

    # A first request of the same client (same partition, long deadline): its MemeFailed,
    # sent after the late MemeGenerated on the same outcomes partition, is our barrier.
    barrier = d.request_meme(client)
    late = d.request_meme(client, deadline_ms=now_ms() + 500)
    d.flush()
    approvals = d.approvals.wait_for([late.request_id, barrier.request_id], 30)
    refund = d.replies.wait([late.event_id], 30)[late.event_id]
    clock.lap("deadline refund replied")
    assert refund.outcome == "refunded", refund
    assert refund.reason == RefundReason.DEADLINE_EXPIRED
    assert isinstance(refund.entry, TokensRefunded)
    assert refund.entry.occurred_at_ms >= late.deadline_ms + 200, "refunded before grace"
    assert refund.balance == 5 - 2 + 1

    d.answer(approvals[late.request_id], "generated")  # the late outcome
    d.answer(approvals[barrier.request_id], "failed")
    d.flush()
    barrier_reply = d.replies.wait([barrier.event_id], 30)[barrier.event_id]
    assert barrier_reply.outcome == "refunded"
    assert barrier_reply.reason == RefundReason.GENERATOR_FAILED

    d.send(late)  # the client retries the same request: the first outcome again
    d.flush()
    retry = d.replies.wait_count(late.event_id, 2, 30)[1]
    assert retry.outcome == "refunded" and retry.reason == RefundReason.DEADLINE_EXPIRED

    clock.lap("late outcome ignored")

    # A pending deadline survives a crash: charged, SIGKILL, restart, still refunded.
    crashed = d.request_meme(client, deadline_ms=now_ms() + 2_000)
    d.flush()
    d.approvals.wait_for([crashed.request_id], 30)  # the charge is committed
    d.kill("0")
    d.start("0")
    reply = d.replies.wait([crashed.event_id], 60)[crashed.event_id]
    assert reply.outcome == "refunded" and reply.reason == RefundReason.DEADLINE_EXPIRED
    assert reply.entry.occurred_at_ms >= crashed.deadline_ms + 200
    clock.lap("deadline refunded after a crash and restart")

    entries = d.read_entries()
    for request in (late, crashed):
        mine = [e for e in entries if getattr(e, "request_id", None) == request.request_id]
        # Tuples: mypy infers a list of these two classes wrongly, then rejects it
        # (python/mypy#9756).
        assert tuple(type(e) for e in mine) == (TokensCharged, TokensRefunded), mine
        refunded = mine[1]
        assert isinstance(refunded, TokensRefunded)
        assert refunded.reason == RefundReason.DEADLINE_EXPIRED
    assert not any(isinstance(e, MemeDelivered) for e in entries)
    assert_ledger_sound(d, [client])
    account = d.accounts([client])[client]
    assert (account.balance, account.memes_delivered, account.tokens_refunded) == (5, 0, 3)
    clock.lap("ledger checked")


def changelog_state(d: LedgerDriver) -> dict[bytes, bytes | None]:
    """The changelog's last value of every key (None: a tombstone)."""
    records = read_topic(d.settings, d.topics.ledger_changelog)
    return {msg.key() or b"": msg.value() for msg in records}


def test_an_ended_request_is_forgotten_after_the_retention(make_driver) -> None:
    """Scenario: a request made nine days ago (its deadline long past; the retention is
    the default seven days) is charged and refunded by its timer, beside a recent one;
    then no input comes.

    We expect: the old request's record and its index entry are dropped from the state
    (tombstones in the changelog) although its partition is idle, the recent one's
    record is kept, and a retry under the old id is a new request, charged again, which
    the audit's replay accepts.
    """
    d = make_driver(MAAS_REFUND_GRACE_MS="200")
    d.start()
    d.wait_serving()
    client = "forgetful-client"
    setup_clients(d, {client: 5})
    recent = d.request_meme(client)
    made = d.request_meme(client, send=False)
    nine_days_ago = made.occurred_at_ms - 9 * 86_400_000
    old = made.model_copy(update={"occurred_at_ms": nine_days_ago, "deadline_ms": nine_days_ago})
    d.send(old)
    d.flush()
    refund = d.replies.wait([old.event_id], 30)[old.event_id]
    assert refund.outcome == "refunded" and refund.reason == RefundReason.DEADLINE_EXPIRED

    old_key = f"r/{client}/{old.request_id}".encode()
    give_up = time.monotonic() + 15
    while (state := changelog_state(d)).get(old_key) is not None:
        assert time.monotonic() < give_up, "the old record is still there"
        time.sleep(0.5)
    assert old_key in state, "the old record was never written"
    index = [k for k in state if k.startswith(b"d/") and k.endswith(old.request_id.encode())]
    assert len(index) == 1 and state[index[0]] is None, index
    assert state[f"r/{client}/{recent.request_id}".encode()] is not None

    d.serve_outcomes()
    again = d.request_meme(client, old.request_id)
    d.flush()
    assert d.replies.wait([again.event_id], 30)[again.event_id].outcome == "delivered"
    charges = [
        e
        for e in d.read_entries()
        if isinstance(e, TokensCharged) and e.request_id == old.request_id
    ]
    assert [c.occurred_at_ms for c in charges] == [nine_days_ago, again.occurred_at_ms]
    assert_ledger_sound(d, [client])
    assert d.terminate() == 0
    assert "requests_forgotten=1" in d.log_text(), d.tail()


def test_a_meme_made_in_time_but_unread_after_a_restart_is_delivered(make_driver) -> None:
    """Scenario: a request is charged; the processor is killed; the generator makes the
    meme in time (its MemeGenerated is in the outcomes topic, and the client may have
    it already); the processor restarts only after the deadline plus the grace.

    We expect: the meme is delivered, not refunded by the deadline's timer, which fires
    first thing after the restart while the outcomes partition is not read yet."""
    d = make_driver(MAAS_REFUND_GRACE_MS="200")
    d.start()
    d.wait_serving()
    client = "unread-client"
    setup_clients(d, {client: 2})
    request = d.request_meme(client, deadline_ms=now_ms() + 1_000)
    d.flush()
    approval = d.approvals.wait_for([request.request_id], 30)[request.request_id]
    d.kill("0")
    d.answer(approval, "generated")
    d.flush()
    time.sleep(max(0.0, (request.deadline_ms + 200 - now_ms()) / 1000) + 0.5)

    d.start("0")

    reply = d.replies.wait([request.event_id], 60)[request.event_id]
    assert reply.outcome == "delivered", reply
    assert_ledger_sound(d, [client])


def test_one_clients_approvals_spread_over_the_pool_and_each_outcome_reaches_it(
    make_driver,
) -> None:
    """Scenario: one client asks for 24 memes of 24 queries at once.

    We expect: its approvals on several partitions of its pool's topic (spread by query
    and place, so that every generator of the pool works for it), each naming the
    client's own partition; the outcomes sent there are folded by the client's state (an
    outcome on another partition would find no request and the meme would be refunded at
    its deadline): every meme delivered, each charged once."""
    d = make_driver()
    d.start()
    d.wait_serving()
    client = "busy-client"
    setup_clients(d, {client: 24})
    requests = [d.request_meme(client, query=f"topic {i}") for i in range(24)]
    d.flush()
    approvals = d.approvals.wait_for([r.request_id for r in requests], 60).values()
    assert len({a.partition for a in approvals}) > 1
    assert len({a.client_partition for a in approvals}) == 1

    d.serve_outcomes()

    replies = d.replies.wait([r.event_id for r in requests], 60)
    assert {r.outcome for r in replies.values()} == {"delivered"}, replies
    assert_ledger_sound(d, [client])


# --- 6 --------------------------------------------------------------------------------


def test_bad_input_is_dead_lettered_and_processing_goes_on(make_driver) -> None:
    """Scenario: on the requests topic a non-JSON value, invalid UTF-8 and an empty
    (tombstone) value; on the purchases topic a TokensPurchased with negative tokens and
    one with a missing field, and an event of a type this version does not know; each
    keyed by a real client. Valid events follow, the first from a newer writer that adds
    a field this version does not know (a rolling deploy).

    We expect: each bad message is dead-lettered, as it was, on the same partition of
    ``<region>.ledger-dead-letters`` with headers naming its topic, partition, offset and
    error, and with an ``invalid input`` error log; nothing vanishes; the processor keeps
    running; the valid events after them are processed; no balance changed because of
    the bad ones.
    """
    clock = Clock("bad-input")
    d = make_driver()
    d.start()
    d.wait_serving()
    client = "bad-input-client"
    setup_clients(d, {client: 10})
    before = d.accounts([client])[client]
    clock.lap("processor serving, client set up")

    key = client.encode()
    d.send_raw(d.topics.requests, key, b"this is not json {")
    d.send_raw(d.topics.requests, key, b"\xff\xfe\x00garbage")
    d.send_raw(d.topics.requests, key, None)
    negative = d.purchase(client, 1, send=False).model_dump(mode="json")
    negative["tokens"] = -5
    d.send_raw(d.topics.purchases, key, json.dumps(negative).encode())
    missing = d.purchase(client, 1, send=False).model_dump(mode="json")
    del missing["purchase_id"]
    d.send_raw(d.topics.purchases, key, json.dumps(missing).encode())
    unknown_type = d.purchase(client, 1, send=False).model_dump(mode="json")
    unknown_type["type"] = "TokensGifted"
    d.send_raw(d.topics.purchases, key, json.dumps(unknown_type).encode())
    d.flush()

    # Same topic and partition, produced after the bad ones: their replies prove the bad
    # ones were consumed (and skipped) first.
    after = d.accounts([client])[client]
    assert after == before
    newer = d.purchase(client, 3, send=False).model_dump(mode="json")
    newer["promotion"] = "winter-sale"  # an optional field of a newer writer: ignored
    d.send_raw(d.topics.purchases, key, json.dumps(newer).encode())
    d.flush()
    reply = d.replies.wait([newer["event_id"]], 30)[newer["event_id"]]
    assert reply.outcome == "credited" and reply.balance == 13, reply
    d.serve_outcomes()
    meme = d.request_meme(client)
    d.flush()
    reply = d.replies.wait([meme.event_id], 30)[meme.event_id]
    assert reply.outcome == "delivered" and reply.balance == 12, reply
    clock.lap("valid events after the bad ones processed")

    assert d.running("0"), d.tail("0")
    log = d.log_text("0")
    assert log.count(f"invalid input dead-lettered topic={d.topics.requests} ") == 3, log
    assert log.count(f"invalid input dead-lettered topic={d.topics.purchases} ") == 3, log
    assert "level=ERROR" in log
    dead = list(read_topic(d.settings, d.topics.dead_letters))
    sources = sorted(header(m, "source_topic").decode() for m in dead)
    assert sources == [d.topics.purchases] * 3 + [d.topics.requests] * 3, sources
    assert {m.key() for m in dead} == {key}
    assert b"this is not json {" in [m.value() for m in dead]
    for message in dead:
        headers = dict(message.headers() or [])
        assert {"source_partition", "source_offset", "error"} <= headers.keys(), headers
    entries = [e for e in d.read_entries() if e.client_id == client]
    assert [e.type for e in entries] == [
        "AccountOpened",
        "TokensCredited",
        "TokensCredited",
        "TokensCharged",
        "MemeDelivered",
    ]
    assert [e.tokens for e in entries if isinstance(e, TokensCredited)] == [10, 3]
    assert_ledger_sound(d, [client])
    clock.lap("ledger checked")


# --- 7 --------------------------------------------------------------------------------


def test_transactions_are_spaced_at_load_and_a_lone_request_is_not_held(make_driver) -> None:
    """Scenario: ``min_transaction_interval_ms`` is 2 s. After a quiet spell one client
    sends a lone request; then it sends 40 requests over 3 s, and every approval is
    answered with a meme at once.

    We expect: the lone request is charged at once, not a spacing later; the 80 inputs of
    the burst (40 requests, 40 outcomes) are decided in a handful of transactions (one
    every 2 s), where unspaced they would take dozens; every request is charged and
    delivered exactly once."""
    spacing_s = 2.0
    d = make_driver(MAAS_MIN_TRANSACTION_INTERVAL_MS=str(int(spacing_s * 1000)))
    d.start()
    d.wait_serving()
    client = "spaced-client"
    setup_clients(d, {client: 100})
    d.serve_outcomes()

    time.sleep(spacing_s + 0.5)  # quiet: the last transaction began more than 2 s ago
    started = time.monotonic()
    lone = d.request_meme(client)
    d.flush()
    d.approvals.wait_for([lone.request_id], 30)
    charged_after_s = time.monotonic() - started
    assert charged_after_s < spacing_s * 0.6, f"a lone request waited {charged_after_s:.2f} s"
    d.replies.wait([lone.event_id], 30)

    burst = []
    for _ in range(40):
        burst.append(d.request_meme(client))
        d.flush()
        time.sleep(0.075)
    replies = d.replies.wait([e.event_id for e in burst], 60)
    assert {r.outcome for r in replies.values()} == {"delivered"}

    # Only the processor writes the ledger, one client's entries to one partition, and a
    # transaction's records are contiguous there, followed by its commit marker: so the
    # number of runs of consecutive offsets is the number of transactions that wrote them.
    ids = {e.request_id for e in burst}
    offsets = [
        position_of(m)[2]
        for m in read_topic(d.settings, d.topics.ledger)
        if json.loads(m.value() or b"").get("request_id") in ids
    ]
    assert len(offsets) == 80  # 40 charges, 40 deliveries
    runs = 1 + sum(b != a + 1 for a, b in itertools.pairwise(offsets))
    assert runs <= 6, f"the burst took {runs} transactions"
    verify_exactly_once(d, [lone, *burst], [client])


# --- 8 --------------------------------------------------------------------------------


def test_answered_outcomes_are_settled_together_and_ended_requests_cost_no_timer(
    make_driver,
) -> None:
    """Scenario: answered outcomes may wait 3 s (``settle_within_ms``), the refund grace is
    200 ms. After a restart, one client sends 10 requests 0.1 s apart, each due in 1 s, and
    every approval is answered at once with a meme made in time whose client its
    generator answered (``ANSWERED_HEADER``). Then nothing comes in until every deadline
    and its grace have passed.

    We expect: the requests are decided as they come; their outcomes are held and settled
    together when the first deadline comes due (~1.2 s), not 3 s later, and none is
    refunded; the deadline of a request that has ended opens no transaction. So 10
    requests take about 11 transactions, where deciding each outcome and each timer on its
    own took 30; every request is charged and delivered exactly once."""
    d = make_driver(MAAS_SETTLE_WITHIN_MS="3000", MAAS_REFUND_GRACE_MS="200")
    d.start()
    d.wait_serving()
    client = "settling-client"
    setup_clients(d, {client: 20})
    assert d.terminate() == 0
    mark = d.mark("0", "the counted run")
    d.start()  # a fresh count of transactions
    d.wait_serving()  # a transaction or two
    d.serve_outcomes(lambda _approval: ["answered"])

    requests = []
    for _ in range(10):
        requests.append(d.request_meme(client, deadline_ms=now_ms() + 1_000))
        d.flush()
        time.sleep(0.1)
    time.sleep(1.5)  # every deadline and its grace are past: their timers have fired
    assert d.terminate() == 0

    stopped = re.findall(
        r"processor stopped decisions=(\d+) transactions=(\d+)", d.log_since("0", mark)
    )
    assert len(stopped) == 1, d.tail()
    decisions, transactions = map(int, stopped[0])
    assert decisions >= 20  # 10 requests, 10 outcomes, wait_serving's registrations
    # Each outcome or timer on its own would take ~20 more.
    assert transactions <= 14, f"{transactions} transactions for 10 requests"

    mine = {  # the client's entries, all in one partition, by offset
        position_of(m)[2]: entry
        for m in read_topic(d.settings, d.topics.ledger)
        if (entry := json.loads(m.value() or b""))["client_id"] == client
    }
    # A transaction's records are contiguous, its commit marker takes the next offset.
    runs: list[list[dict[str, str]]] = []
    for offset in sorted(mine):
        if offset - 1 not in mine:
            runs.append([])
        runs[-1].append(mine[offset])
    types = [e["type"] for e in mine.values()]
    assert types.count("MemeDelivered") == 10 and "TokensRefunded" not in types, types
    settling = [run for run in runs if any(e["type"] == "MemeDelivered" for e in run)]
    # Together: one transaction, or two if the last outcome came after the first deadline.
    assert len(settling) <= 2, [[e["type"] for e in run] for run in settling]
    d.start()  # to answer the account query of the check
    verify_exactly_once(d, requests, [client])

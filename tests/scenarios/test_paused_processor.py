"""Scenario: a ledger processor instance is paused while its requests wait for memes.

Issue 11's recipe, driven over Kafka: two processor instances share the partitions; 12
clients are credited 100 tokens each; the generator pools are paused (the driver sends
no outcomes), so 2 requests per client are charged and wait. Instance 0 is then paused
(SIGSTOP), either

- *between transactions*, from outside, 1.5 s after the requests; or
- *inside a transaction*, by itself, at a commit boundary of the first transaction that
  refunds expired deadlines (``MAAS_FAULT_POINT``, ``processors/ledger/faults.py``); or
- *wedged* there: its main thread blocked for good while librdkafka's threads keep its
  session alive, so only its watchdog, once it has stalled for
  ``processor_stall_limit_ms`` (5 s), ends it; its session then lapses.

A pause past the session timeout (6 s) lets instance 1 take the partitions and refund
the requests; a shorter one does not; a wedged instance 0 loses them ~11 s after it
wedged (not after the 30 s poll limit). After
the pause, the generators answer every request late (``MemeGenerated``), and 2 s later
instance 0 resumes (SIGCONT) with the RocksDB state and deadline timers it had (a wedged
one has ended itself by then).

We expect: every request has exactly one outcome (delivered or refunded, never both); no
transaction of the resumed instance commits decisions for partitions it no longer owns;
``maas audit verify`` finds nothing; the replay has no violation and conserves tokens;
the live accounts equal the replayed ones.

The six pauses run at once, each in a region of its own (``scenarios``): a scenario
mostly waits (for the pause, the rebalance, the late outcomes), so one after another they
took over two minutes of the suite, and at once they take as long as the longest. Each
test reports its own pause.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from processors.fatal import FATAL_EXIT_CODE
from processors.watchdog import WATCHDOG_EXIT_CODE
from schemas.events import MemeDelivered, MemeRejected, TokensCharged, TokensRefunded
from tests.conftest import KafkaCluster
from tests.integration.ledger_driver import (
    REPO_ROOT,
    Clock,
    LedgerDriver,
    always_generate,
    now_ms,
    setup_clients,
)
from tests.stack import wait_for_state

pytestmark = [pytest.mark.kafka, pytest.mark.scenario]

CLIENTS = 12
REQUESTS_PER_CLIENT = 2
DEADLINE_MS = 3_000
SETTLE_TIMEOUT_S = 90.0
SESSION_TIMEOUT_S = 6  # the processor's session.timeout.ms


@dataclass(frozen=True)
class Pause:
    """How instance 0 is paused, and for how long."""

    name: str
    seconds: float
    fault_point: str = ""  # empty: paused from outside, between transactions
    transaction_timeout_ms: int = 10_000
    # What instance 0's frozen transaction comes to, where the fault point makes it sure:
    # "aborted" (the offsets are refused), "fenced" (the commit is: a fatal exit),
    # "committed" (it still owned the partitions when it decided); "wedged" (its
    # watchdog ends it: instance 1 must take every partition).
    zombie: str = ""
    # Above the transaction timeout (Settings): 30 s allows the 10 s ones.
    max_poll_interval_ms: int = 30_000


PAUSES = [
    Pause("between-14s", 14),
    Pause("between-4s", 4),
    # Inside the refund transaction, before its offsets and group metadata are sent; the
    # transaction outlives the pause, so the offsets are what fences it.
    Pause("before-offsets-14s", 14, "after_produce+refund:STOP", 30_000, "aborted", 60_000),
    # After the offsets, before the commit: the broker aborts the frozen transaction
    # (timeout 10 s) before instance 0 resumes...
    Pause("before-commit-14s-aborted", 14, "after_offsets+refund:STOP", 10_000, "fenced"),
    # ... or the transaction outlives the pause: instance 1 waits for it, then reads it.
    Pause(
        "before-commit-14s-committed", 14, "after_offsets+refund:STOP", 30_000, "committed", 60_000
    ),
    # Wedged inside the refund transaction, which the broker aborts after 10 s: its
    # watchdog ends instance 0 once it has stalled for 5 s, far inside the 30 s poll
    # limit, and instance 1 gets the partitions when its session (6 s) lapses.
    Pause("wedged-in-transaction", 14, "after_produce+refund:WEDGE", 10_000, "wedged"),
]


@pytest.fixture(scope="module")
def scenarios(
    kafka: KafkaCluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Future[None]]]:
    """The scenario of every pause selected in this session (``-k`` may pick one), all
    started at once, by name."""
    selected = {
        item.callspec.id  # the pause's name (the ids below)
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.module is request.module
    }
    pauses = [p for p in PAUSES if p.name in selected]
    with ThreadPoolExecutor(len(pauses), thread_name_prefix="paused") as pool:
        yield {
            p.name: pool.submit(_run, kafka.bootstrap, tmp_path_factory.mktemp(p.name), p)
            for p in pauses
        }


@pytest.mark.parametrize("pause", PAUSES, ids=[p.name for p in PAUSES])
def test_paused_instance_writes_no_second_outcome(
    scenarios: dict[str, Future[None]], pause: Pause
) -> None:
    scenarios[pause.name].result()


def _run(bootstrap: str, root: Path, pause: Pause) -> None:
    d = LedgerDriver(
        bootstrap,
        root,
        env={
            "MAAS_TRANSACTION_TIMEOUT_MS": str(pause.transaction_timeout_ms),
            "MAAS_MAX_POLL_INTERVAL_MS": str(pause.max_poll_interval_ms),
            "MAAS_REFUND_GRACE_MS": "500",
        },
    )
    try:
        _scenario(d, pause)
    except Exception as exc:
        tails = "\n".join(
            f"----- processor {i} of {pause.name} (log tail) -----\n{d.tail(i, 60)}"
            for i in d.procs
        )
        raise AssertionError(f"{pause.name} failed:\n{tails}") from exc
    finally:
        d.close()


def _scenario(d: LedgerDriver, pause: Pause) -> None:
    clock = Clock(pause.name)
    d.start("0", **({"MAAS_FAULT_POINT": pause.fault_point} if pause.fault_point else {}))
    d.start("1")
    d.wait_serving()
    _wait_both_assigned(d)
    clients = [f"p{i:02d}" for i in range(CLIENTS)]
    setup_clients(d, dict.fromkeys(clients, 100))
    clock.lap("two instances serving, clients credited")

    requests = [
        d.request_meme(c, deadline_ms=now_ms() + DEADLINE_MS)
        for c in clients
        for _ in range(REQUESTS_PER_CLIENT)
    ]
    d.flush()
    d.approvals.wait_for([r.request_id for r in requests], 30)
    clock.lap(f"{len(requests)} requests charged, no outcomes sent")

    mark = d.mark("0", f"scenario: {pause.name}")
    if pause.zombie == "wedged":
        _wait_wedged(d, mark, timeout_s=DEADLINE_MS / 1000 + 30)
    elif pause.fault_point:
        _wait_stopped(d, "0", timeout_s=DEADLINE_MS / 1000 + 30)
    else:
        time.sleep(1.5)
        d.pause("0")
    clock.lap("instance 0 paused")
    time.sleep(pause.seconds)
    d.serve_outcomes(always_generate)  # the generators resume: every outcome is late
    time.sleep(2.0)
    d.resume("0")
    clock.lap(f"instance 0 resumed after {pause.seconds + 2:.0f} s")

    final = d.replies.wait([r.event_id for r in requests], SETTLE_TIMEOUT_S)
    if pause.zombie == "wedged":
        log = d.log_since("0", mark)
        assert not d.running("0"), log[-3000:]
        after = f"ended with code {d.procs['0'].returncode}"
        assert d.procs["0"].returncode == WATCHDOG_EXIT_CODE, log[-3000:]
        assert "main loop stalled" in log and "in reached" in log, log[-3000:]
        assert _last_assignment(d.log_text("1")) == list(range(d.settings.partitions))
    elif pause.seconds > SESSION_TIMEOUT_S:
        after = _wait_settled(d, mark)
    else:  # no rebalance: instance 0 just goes on, and refunds what is due
        time.sleep(3.0)
        after = "went on"
    clock.lap(f"every request answered; instance 0 after the resume: {after}")
    log = d.log_since("0", mark)
    if pause.zombie == "aborted":
        assert "transaction aborted error=" in log and d.running("0"), log[-3000:]
    elif pause.zombie == "fenced":
        assert d.procs["0"].returncode == FATAL_EXIT_CODE, log[-3000:]
    elif pause.zombie == "committed":
        assert "transaction aborted" not in log and d.running("0"), log[-3000:]

    entries = d.read_entries()
    outcomes = Counter(
        e.request_id for e in entries if isinstance(e, MemeDelivered | TokensRefunded)
    )
    several = {r: n for r, n in outcomes.items() if n > 1}
    assert several == {}, f"requests with several outcomes: {several}"
    charged = Counter(e.request_id for e in entries if isinstance(e, TokensCharged))
    assert all(n == 1 for n in charged.values()), charged
    assert not any(isinstance(e, MemeRejected) for e in entries)
    assert set(outcomes) == set(charged) == {r.request_id for r in requests}
    for r in requests:
        ended = [e for e in entries if getattr(e, "request_id", None) == r.request_id][-1]
        told = final[r.event_id].outcome
        assert told == ("delivered" if isinstance(ended, MemeDelivered) else "refunded"), r

    verify = subprocess.run(
        [sys.executable, "-m", "maas.cli", "audit", "verify", "--no-checkpoints"],
        env=d.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    assert "result=ok" in verify.stdout + verify.stderr

    replay = d.read_ledger()
    assert replay.violations == [], replay.violations[:10]
    assert replay.conservation() == [], replay.conservation()[:10]
    live = d.accounts(clients)
    for client in clients:
        assert live[client] == replay.accounts[client].view(now_ms()), client
    clock.lap("ledger checked")


def _wait_both_assigned(d: LedgerDriver, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        shares = [_last_assignment(d.log_text(i)) for i in ("0", "1")]
        if all(shares) and sorted(shares[0] + shares[1]) == list(range(d.settings.partitions)):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the two instances did not share the partitions: {shares}")


def _last_assignment(log: str) -> list[int]:
    found: list[int] = []
    for line in log.splitlines():
        if "partitions assigned partitions=" in line:
            text = line.split("partitions assigned partitions=", 1)[1].strip()
            found = [int(p) for p in text.strip("[]").split(",") if p.strip()]
    return found


def _wait_stopped(d: LedgerDriver, instance: str, timeout_s: float) -> None:
    """Wait until the process stopped itself at its fault point (state T in /proc)."""
    if not wait_for_state(d.procs[instance].pid, "T", timeout_s):
        raise TimeoutError(
            f"instance {instance} never reached its fault point:\n{d.tail(instance)}"
        )


def _wait_wedged(d: LedgerDriver, mark: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "the main thread wedges here" in d.log_since("0", mark):
            return
        time.sleep(0.05)
    raise TimeoutError(f"instance 0 never reached its fault point:\n{d.tail('0')}")


def _wait_settled(d: LedgerDriver, mark: int, timeout_s: float = 60.0) -> str:
    """After the resume, instance 0 either exits (fenced: a fatal error) or rejoins the
    group (revoked, then assigned again); either way it must get there."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = d.log_since("0", mark)
        if not d.running("0"):
            return f"exited with code {d.procs['0'].returncode}"
        if "partitions assigned" in log.rsplit("partitions revoked", 1)[-1] and (
            "partitions revoked" in log
        ):
            return "rejoined"
        time.sleep(0.2)
    return "still running, not rejoined"

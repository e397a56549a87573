"""The watchdog ends a process stuck where it must not be, with its stacks in its log.

Each case runs in a child process, since the watchdog ends its process with ``os._exit``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from processors.watchdog import WATCHDOG_EXIT_CODE

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_child(body: str) -> subprocess.CompletedProcess[str]:
    code = "import time\nfrom processors.watchdog import Watchdog\n" + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_loop_silent_past_its_limit_since_its_last_poll_is_ended_with_its_stacks() -> None:
    """Scenario: a loop polls once, then wedges (sleeps) past its 0.5 s limit.
    We expect: exit code 70, the reason logged, and the wedged function in the stacks."""
    child = run_child(
        """
        def wedged_here():
            time.sleep(10)

        watchdog = Watchdog(poll_limit_s=0.5)
        with watchdog.polling():
            pass
        wedged_here()
        """
    )
    assert child.returncode == WATCHDOG_EXIT_CODE, child.stderr
    assert "main loop has not polled" in child.stderr
    assert "in wedged_here" in child.stderr


def test_a_guarded_call_that_outlives_its_limit_ends_the_process() -> None:
    child = run_child(
        """
        watchdog = Watchdog()
        with watchdog.guard(0.5, "send_offsets_to_transaction"):
            time.sleep(10)
        """
    )
    assert child.returncode == WATCHDOG_EXIT_CODE, child.stderr
    assert "guarded call hung call=send_offsets_to_transaction" in child.stderr


def test_a_call_known_to_hang_ends_the_process_at_once() -> None:
    """Scenario: the loop learns that its next call would hang (``end``).
    We expect: exit code 70 at once, the reason logged, nothing after it run."""
    child = run_child(
        """
        watchdog = Watchdog()
        watchdog.end("send_offsets_to_transaction lost its coordinator")
        print("went on")
        """
    )
    assert child.returncode == WATCHDOG_EXIT_CODE, child.stderr
    assert "send_offsets_to_transaction lost its coordinator; exiting" in child.stderr
    assert "went on" not in child.stdout


def test_time_in_a_poll_before_the_first_poll_and_after_close_is_not_silence() -> None:
    """Scenario: with a 0.5 s limit, a loop starts slowly (1.5 s before its first poll),
    stays 1.5 s inside one poll, and, once closed, is silent for 1.5 s.
    We expect: none of it ends the process."""
    child = run_child(
        """
        watchdog = Watchdog(poll_limit_s=0.5)
        time.sleep(1.5)
        with watchdog.polling():
            time.sleep(1.5)
        watchdog.close()
        time.sleep(1.5)
        print("alive")
        """
    )
    assert (child.returncode, child.stdout.strip()) == (0, "alive"), child.stderr


def test_a_guarded_call_during_a_broker_outage_ends_without_waiting_for_its_limit() -> None:
    """Scenario: a call guarded for 20 s runs on while no broker listens.
    We expect: exit code 70 within a few seconds (the first look after ``LOOK_AFTER_S``),
    the outage named."""
    child = run_child(
        """
        started = time.monotonic()
        watchdog = Watchdog()
        with watchdog.guard(20, "commit_transaction", lambda: False):
            time.sleep(10)
        print("went on")
        """
    )
    assert child.returncode == WATCHDOG_EXIT_CODE, child.stderr
    assert "met a broker outage call=commit_transaction" in child.stderr
    assert "went on" not in child.stdout


def test_a_broker_that_listens_or_a_call_that_ended_meanwhile_ends_nothing() -> None:
    """Scenario: a guarded call of 2.5 s while a broker listens; then one of 2.2 s whose
    look (1 s long, from ~1.5 s in) says no broker listens only once the call has ended
    and the next one (1 s, a broker listening) has begun; then the loop goes on a while.
    We expect: none of it ends the process (a look's verdict is for the call it looked at)."""
    child = run_child(
        """
        def late_no():
            time.sleep(1.0)
            return False

        watchdog = Watchdog()
        with watchdog.guard(20, "commit_transaction", lambda: True):
            time.sleep(2.5)
        with watchdog.guard(20, "send_offsets_to_transaction", late_no):
            time.sleep(2.2)
        with watchdog.guard(20, "commit_transaction", lambda: True):
            time.sleep(1.0)
        time.sleep(0.5)
        print("alive")
        """
    )
    assert (child.returncode, child.stdout.strip()) == (0, "alive"), child.stderr


def test_a_loop_stalled_outside_polls_and_guarded_calls_is_ended_before_its_poll_limit() -> None:
    """Scenario: stall limit 1 s, poll limit 20 s; the loop polls once, spends 1.5 s in
    guarded calls in a row (each shorter than the limit), then wedges.
    We expect: exit code 70 on the stall (not the poll limit), the wedged function in the
    stacks, and the guarded calls not taken for a stall."""
    child = run_child(
        """
        def wedged_here():
            time.sleep(10)

        watchdog = Watchdog(poll_limit_s=20, stall_limit_s=1.0)
        with watchdog.polling():
            pass
        for _ in range(3):
            with watchdog.guard(5, "commit_transaction"):
                time.sleep(0.5)
        print("guarded calls done", flush=True)
        wedged_here()
        """
    )
    assert child.returncode == WATCHDOG_EXIT_CODE, child.stderr
    assert "guarded calls done" in child.stdout
    assert "main loop stalled for" in child.stderr
    assert "in wedged_here" in child.stderr


def test_guarded_calls_a_loop_alive_and_polls_are_not_stalls() -> None:
    """Scenario: stall limit 1.5 s; the loop polls, spends 2 s in guarded calls, then
    1.1 s unguarded (a watcher's look falls in it, 2 s past the poll); then for 3 s it
    waits on a full queue, saying ``alive`` every 0.1 s; then it polls for 2 s; then it
    closes and is silent for 2 s.
    We expect: none of it ends the process."""
    child = run_child(
        """
        watchdog = Watchdog(stall_limit_s=1.5)
        with watchdog.polling():
            pass
        for _ in range(4):
            with watchdog.guard(5, "commit_transaction"):
                time.sleep(0.5)
        time.sleep(1.1)
        for _ in range(30):
            time.sleep(0.1)
            watchdog.alive()
        with watchdog.polling():
            time.sleep(2)
        watchdog.close()
        time.sleep(2)
        print("alive")
        """
    )
    assert (child.returncode, child.stdout.strip()) == (0, "alive"), child.stderr


def test_a_process_frozen_past_the_stall_limit_is_not_ended_when_it_resumes() -> None:
    """Scenario: stall limit 1 s; the loop polls, then freezes itself (SIGSTOP) and a
    helper resumes it (SIGCONT) 4 s later; the loop then goes on for 0.5 s.
    We expect: the frozen time is not a stall (a resumed zombie is left to its fencing),
    so the process ends normally."""
    child = run_child(
        """
        import os, signal, subprocess, sys
        watchdog = Watchdog(stall_limit_s=1.0)
        with watchdog.polling():
            pass
        subprocess.Popen([sys.executable, "-c",
            f"import os, time; time.sleep(4); os.kill({os.getpid()}, {int(signal.SIGCONT)})"])
        os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(0.5)
        print("alive")
        """
    )
    assert (child.returncode, child.stdout.strip()) == (0, "alive"), child.stderr

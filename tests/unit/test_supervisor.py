"""The supervisor restarts a dead child at once, and backs off only for a crash loop; it
runs as many processes of each kind as ``maas up`` is told, each with its own instance id."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.heartbeat import HeartbeatWatch
from core.settings import Settings
from maas.broker import BrokerError, LocalBroker
from maas.cli import main
from maas.processes import process_command, process_env
from maas.supervisor import (
    CRASH_LOOP_S,
    Child,
    LocalKafka,
    check_api_count,
    children,
    restart_delay_s,
    supervise,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("lived_s", "quick_exits", "delay_s", "after"),
    [
        (60.0, 0, 0.0, 0),  # killed after running a while: at once
        (60.0, 4, 0.0, 0),  # a healthy run ends a crash loop
        (0.2, 0, 0.0, 1),  # a first quick exit: at once too
        (0.2, 1, 0.5, 2),  # then 0.5 s, 1 s, 2 s...
        (0.2, 2, 1.0, 3),
        (0.2, 3, 2.0, 4),
        (0.2, 20, 30.0, 21),  # ...never more than 30 s
    ],
)
def test_restart_delay(lived_s: float, quick_exits: int, delay_s: float, after: int) -> None:
    assert restart_delay_s(lived_s, quick_exits) == (delay_s, after)


# A process stuck in a function of its own, which writes its stacks when asked, as an
# API process does (``maas.api_cli``).
WEDGED = """
from core.heartbeat import dump_stacks_on_signal
import time
dump_stacks_on_signal()
print("ready", flush=True)
def wedged_in_here():
    time.sleep(60)
wedged_in_here()
"""


class SleepChild(Child):
    """A child whose process sleeps, so that no service process is started; it never
    beats, so a watch on its heartbeat file sees silence."""

    def start(self, env: dict[str, str]) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WEDGED], stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )
        self.started_at = time.monotonic()
        if self.heartbeat is not None:
            self.watch = HeartbeatWatch.start(self.heartbeat, self.watchdog_s, self.started_at)


def test_a_killed_child_is_restarted_at_once(tmp_path: Path) -> None:
    child = SleepChild("processor", tmp_path / "processor.log", "127.0.0.1", 8000)
    child.start({})
    child.started_at -= CRASH_LOOP_S + 1  # it has been running for a while
    first = child.process
    assert first is not None
    first.kill()
    first.wait()
    supervise(child, {}, time.monotonic())
    restarted = child.process
    assert restarted is not None
    try:
        assert restarted is not first and restarted.poll() is None
        assert child.restart_at is None
    finally:
        restarted.kill()
        restarted.wait()


def test_a_child_whose_heartbeat_falls_silent_is_killed_then_restarted(tmp_path: Path) -> None:
    heartbeat = tmp_path / "api-0"
    child = SleepChild(
        "api", tmp_path / "api-0.log", "127.0.0.1", 8000, "0", heartbeat=heartbeat, watchdog_s=10
    )
    child.start({})
    first = child.process
    assert first is not None and child.watch is not None
    try:
        now = time.monotonic()
        heartbeat.touch()
        supervise(child, {}, now)  # its first beat
        supervise(child, {}, now + 10)
        assert first.poll() is None  # silent for the limit: not yet
        give_up = time.monotonic() + 30  # until it has registered for its stacks
        while "ready" not in child.log_path.read_text() and time.monotonic() < give_up:
            time.sleep(0.05)
        supervise(child, {}, now + 10.5)
        assert first.wait(5) == -signal.SIGKILL
        assert "in wedged_in_here" in child.log_path.read_text()  # its stacks, first
        supervise(child, {}, now + 10.6)  # the exit, seen like any other
        restarted = child.process
        assert restarted is not None and restarted is not first and restarted.poll() is None
    finally:
        for process in (first, child.process):
            if process is not None:
                process.kill()
                process.wait()


class DeadBroker(LocalBroker):
    """A local broker that is not running, whose starts fail ``failures`` times, then
    succeed (no JVM: this is about the supervisor's bookkeeping)."""

    def __init__(self, home: Path, failures: int) -> None:
        super().__init__(home)
        self.failures = failures
        self.starts = 0
        self.running = False

    def is_running(self) -> bool:
        return self.running

    def start(self, timeout_s: float = 120) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            raise BrokerError("port 9092 is in use; is another Kafka running?")
        self.running = True


def started(kafka: LocalKafka, children: list[Child], now: float) -> None:
    """Looks until the start in its thread has ended and been taken in."""
    while kafka.starting is not None:
        kafka.starting.thread.join()
        kafka.supervise(children, now)


def test_a_dead_local_broker_is_started_again_and_waiting_children_start_at_once(
    tmp_path: Path,
) -> None:
    broker = DeadBroker(tmp_path, failures=0)
    kafka = LocalKafka(broker, started_at=0.0)
    # A processor that exited again and again while the broker was gone, backing off.
    waiting = Child("processor", tmp_path / "p.log", "127.0.0.1", 8000, quick_exits=6)
    waiting.restart_at = 130.0
    kafka.supervise([waiting], now=100.0)  # notices: it ran a while, so at once
    assert (broker.starts, kafka.restart_at) == (0, 100.0)
    kafka.supervise([waiting], now=100.1)  # starts it, in a thread
    started(kafka, [waiting], now=100.3)
    assert broker.starts == 1 and kafka.restart_at is None
    assert (waiting.restart_at, waiting.quick_exits) == (100.3, 0)
    kafka.supervise([waiting], now=100.4)  # running: nothing more
    assert broker.starts == 1


def test_a_local_broker_that_fails_to_start_is_tried_again_with_backoff(tmp_path: Path) -> None:
    broker = DeadBroker(tmp_path, failures=3)
    kafka = LocalKafka(broker, started_at=0.0)
    now = 100.0
    delays = []
    while not broker.running:
        kafka.supervise([], now)  # notices it is down (no exception escapes a failed start)
        assert kafka.restart_at is not None
        delays.append(kafka.restart_at - now)
        now = kafka.restart_at
        kafka.supervise([], now)  # tries
        started(kafka, [], now)
    assert broker.starts == 4
    assert delays == [0.0, 0.0, 0.5, 1.0]  # as a crash-looping child's (restart_delay_s)


class SlowBroker(DeadBroker):
    """A start that takes until ``release`` is set."""

    def __init__(self, home: Path) -> None:
        super().__init__(home, failures=0)
        self.release = threading.Event()

    def start(self, timeout_s: float = 120) -> None:
        self.release.wait(10)
        super().start(timeout_s)


def test_children_are_watched_while_the_broker_starts(tmp_path: Path) -> None:
    """Scenario: the broker is gone and its start takes a while; meanwhile a processor
    is killed. We expect: the processor is started again at once, not once the broker is."""
    broker = SlowBroker(tmp_path)
    kafka = LocalKafka(broker, started_at=0.0)
    child = SleepChild("processor", tmp_path / "processor.log", "127.0.0.1", 8000)
    child.start({})
    child.started_at -= CRASH_LOOP_S + 1  # it has been running for a while
    first = child.process
    assert first is not None
    try:
        now = time.monotonic()
        kafka.supervise([child], now)
        kafka.supervise([child], now)  # its start begins, and lasts
        first.kill()
        first.wait()
        supervise(child, {}, now)  # at once: the supervisor's loop is not held
        restarted = child.process
        assert restarted is not None and restarted is not first and restarted.poll() is None
        assert kafka.starting is not None and kafka.starting.thread.is_alive()
    finally:
        broker.release.set()
        started(kafka, [child], now)
        assert child.process is not None
        child.process.kill()
        child.process.wait()
    assert broker.running


def test_children_number_each_kind_and_give_each_api_its_reply_partition(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    counts = {"processor": 2, "generator-standard": 2, "generator-ai": 1, "api": 3}
    procs = children(settings, "127.0.0.1", 8123, counts)

    assert [c.label for c in procs] == [
        "processor-0",
        "processor-1",
        "generator-standard-0",
        "generator-standard-1",
        "generator-ai-0",
        "api-0",
        "api-1",
        "api-2",
        "usage",
        "checkpointer",
        "sweeper",
    ]
    assert all(c.log_path == tmp_path / "logs" / f"{c.label}.log" for c in procs)
    assert all(c.ready_file == tmp_path / "ready" / c.label for c in procs)
    for child in procs:
        command = process_command(child.name, child.host, child.port, child.instance_id)
        env = process_env(child.name, {"MAAS_REGION": "x"}, child.instance_id, child.heartbeat)
        if child.name in ("processor", "generator-standard", "generator-ai"):
            assert command[-2:] == ["--instance-id", child.instance_id]
        if child.name == "api":  # all on one port, each reading its own reply partition
            assert command[-2:] == ["--port", "8123"]
            heartbeat = tmp_path / "heartbeats" / child.label  # and each watched
            assert (child.heartbeat, child.watchdog_s) == (heartbeat, settings.api_watchdog_s)
            assert env == {
                "MAAS_REGION": "x",
                "MAAS_API_INSTANCE": child.instance_id,
                "MAAS_HEARTBEAT_FILE": str(heartbeat),
            }
        else:
            assert child.heartbeat is None
            assert env == {"MAAS_REGION": "x"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--api", "0"], "argument --api: must be at least 1, not 0"),
        (["--generators-standard", "0"], "argument --generators-standard: must be at least 1"),
        (["--generators-ai", "-1"], "argument --generators-ai: must be at least 1"),
        (["--processors", "0"], "argument --processors: must be at least 1"),
    ],
)
def test_up_refuses_a_count_below_one(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["up", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_up_refuses_more_apis_than_reply_partitions(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAAS_DEV_MODE", "1")  # its development secrets pass
    monkeypatch.setenv("MAAS_REPLY_PARTITIONS", "4")
    assert main(["up", "--api", "5"]) == 2  # before it starts anything
    err = capsys.readouterr().err
    assert "--api 5: at most 4 API processes" in err
    assert "MAAS_REPLY_PARTITIONS" in err
    check_api_count(4, Settings(reply_partitions=4))  # one each: accepted


def test_up_refuses_a_port_another_process_listens_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAAS_DEV_MODE", "1")
    with socket.create_server(("127.0.0.1", 0)) as foreign:
        port = foreign.getsockname()[1]
        assert main(["up", "--port", str(port)]) == 2  # before it starts anything
    assert f"--port {port}: 127.0.0.1:{port} is taken" in capsys.readouterr().err

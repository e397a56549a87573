"""The fault runner's plan (``tests.jepsen.nemesis.plan_faults``): every kind of fault in
every faults-mode run, each aimed at a process or node that exists; what a killed
processor owned, by its log, when the group coordinator cannot say; and how the report
names the last answer of an operation that gave up; a fault waits for its target to run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.heartbeat import HeartbeatWatch
from tests.jepsen.nemesis import (
    BROKER_KINDS,
    EXTRA_ONLY,
    PROCESS_KINDS,
    Fault,
    Nemesis,
    Plan,
    plan_faults,
)
from tests.jepsen.region import Region
from tests.jepsen.workload import Answer

GENERATORS = ("generator-standard-0", "generator-standard-1", "generator-ai-0", "generator-ai-1")


@pytest.mark.parametrize("seed", range(20))
def test_a_faults_plan_has_every_kind_once_required(seed: int) -> None:
    plan = plan_faults(
        seed, 60.0, "faults", processors=2, nodes=3, generators_standard=2, generators_ai=2, apis=2
    )
    required = [f.kind for lane in plan.lanes for f in lane if f.required]
    every = [k for k in (*PROCESS_KINDS, *BROKER_KINDS) if k not in EXTRA_ONLY]
    # Two fault points every run, and a graceful restart in each lane.
    assert sorted(required) == sorted([*every, "fault_point", "graceful_restart"])
    targets = {
        "processor_kill": {"processor-0", "processor-1"},
        "processor_pause": {"processor-0", "processor-1"},
        "processor_wedge": {"processor-0", "processor-1"},
        "fault_point": {"processor-0", "processor-1"},
        "generator_kill": {*GENERATORS},
        "generator_pause": {*GENERATORS},
        "api_kill": {"api-0", "api-1"},
        "api_pause": {"api-0", "api-1"},
        "api_stall": {"api-0", "api-1"},
    }
    for lane in plan.lanes:
        for fault in lane:
            if fault.kind in targets:
                assert fault.target in targets[fault.kind], fault


@pytest.mark.parametrize("seed", range(20))
def test_no_process_is_the_target_of_both_lanes(seed: int) -> None:
    """A fault of one lane must not meet a fault of the other on the same process (a
    pause while it is being replaced, say); the lanes take about as long."""
    plan = plan_faults(seed, 300.0, "faults", processors=2, nodes=3, generators_standard=2, apis=2)
    ledger, edge = ({f.target for f in lane if f.kind not in BROKER_KINDS} for lane in plan.lanes)
    assert ledger and edge and not ledger & edge
    ends = [max(f.at_s + f.estimate_s for f in lane if f.required) for lane in plan.lanes]
    assert max(ends) < 80.0, ends


def test_a_long_run_plans_the_extra_only_kinds_too() -> None:
    """A wedge takes the 30 s poll limit: never required, but a 300 s run has some."""
    kinds = {
        f.kind
        for seed in range(5)
        for lane in plan_faults(seed, 300.0, "faults", processors=2).lanes
        for f in lane
        if not f.required
    }
    assert set(EXTRA_ONLY) <= kinds


def test_one_api_is_named_as_the_region_names_it() -> None:
    plan = plan_faults(7, 60.0, "faults", processors=2, apis=1)
    (kill,) = [f for lane in plan.lanes for f in lane if f.kind == "api_kill" and f.required]
    assert kill.target == "api"


def test_a_processor_owns_what_its_log_last_assigned(tmp_path: Path) -> None:
    region = Region("127.0.0.1:9", tmp_path, processors=1)
    log = region.children["processor-0"].log_path
    log.parent.mkdir(parents=True)
    lines = [
        "ledger processor started instance=0",
        "partitions assigned partitions=[0, 1, 2]",
        "partitions revoked partitions=[0, 1, 2]",
        "partitions assigned partitions=[3, 4]",
    ]
    log.write_text("\n".join(f"t level=INFO process=ledger-0 {line}" for line in lines))
    assert region.logged_partitions("processor-0") == {3, 4}
    log.write_text(log.read_text() + "\nt level=INFO ledger processor started instance=0\n")
    assert region.logged_partitions("processor-0") == set()


def test_an_answer_is_described_by_its_status_and_error_code() -> None:
    assert Answer(503, {"error": "overloaded"}, None, 1.0).describe() == "503 overloaded"
    assert Answer(200, {"meme_id": "m"}, None, None).describe() == "200"
    lost = Answer(None, None, "RemoteProtocolError: Server disconnected", None)
    assert lost.describe() == "no answer: RemoteProtocolError"


def test_a_fault_waits_for_its_target_to_run_and_a_watched_one_to_beat(tmp_path: Path) -> None:
    region = Region("127.0.0.1:9", tmp_path, processors=1)
    with pytest.raises(TimeoutError, match="api not running"):
        region.wait_running("api", timeout_s=0.2)  # not started
    child = region.children["api"]
    child.popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        child.watch = HeartbeatWatch(tmp_path / "api", 5.0, started_at=time.monotonic())
        with pytest.raises(TimeoutError):
            region.wait_running("api", timeout_s=0.2)  # running, no beat seen yet
        child.watch.beat_at = time.monotonic()
        assert region.wait_running("api", timeout_s=0.2) == child.popen.pid
    finally:
        child.popen.kill()
        child.popen.wait()


@pytest.mark.parametrize(("into_load_s", "begun"), [(0.0, 1), (55.0, 0)])
def test_a_lane_behind_its_schedule_begins_no_extra_past_the_loads_end(
    tmp_path: Path, into_load_s: float, begun: int
) -> None:
    """An extra (not required) fault that would end past the load's planned end is left
    out: nothing would judge it, and the run would wait for it to end."""
    extra = Fault(0.0, "broker_pause")  # 7 s planned; no cluster here, so it does nothing
    plan = Plan(1, "faults", 60.0, [[extra]])
    region = Region("127.0.0.1:9", tmp_path, processors=1)
    nemesis = Nemesis(plan, region, None, say=lambda _: None)
    nemesis.start(time.monotonic() - into_load_s)
    deadline = time.monotonic() + 2.0
    while len(nemesis.done) < begun and time.monotonic() < deadline:
        time.sleep(0.01)
    nemesis.stop()
    assert len(nemesis.done) == begun
    assert nemesis.skipped() == ([] if begun else [extra])

"""The fault runner's plan (``tests.jepsen.nemesis.plan_faults``): every kind of fault in
every faults-mode run, each aimed at a process or node that exists."""

from __future__ import annotations

import pytest

from tests.jepsen.nemesis import BROKER_KINDS, PROCESS_KINDS, plan_faults


@pytest.mark.parametrize("seed", range(20))
def test_a_faults_plan_has_every_kind_once_required(seed: int) -> None:
    plan = plan_faults(seed, 60.0, "faults", processors=2, nodes=3, generators_standard=2, apis=2)
    required = [f.kind for lane in plan.lanes for f in lane if f.required]
    assert sorted(required) == sorted(
        [*PROCESS_KINDS, "fault_point", *BROKER_KINDS]  # two fault points every run
    )
    targets = {
        "processor_kill": {"processor-0", "processor-1"},
        "processor_pause": {"processor-0", "processor-1"},
        "fault_point": {"processor-0", "processor-1"},
        "generator_kill": {"generator-standard-0", "generator-standard-1", "generator-ai"},
        "generator_pause": {"generator-standard-0", "generator-standard-1", "generator-ai"},
        "api_kill": {"api-0", "api-1"},
    }
    for lane in plan.lanes:
        for fault in lane:
            if fault.kind in targets:
                assert fault.target in targets[fault.kind], fault


def test_one_api_is_named_as_the_region_names_it() -> None:
    plan = plan_faults(7, 60.0, "faults", processors=2, apis=1)
    (kill,) = [f for lane in plan.lanes for f in lane if f.kind == "api_kill" and f.required]
    assert kill.target == "api"

"""Fault points: the format ``Settings`` accepts and what ``FaultPoint.parse`` makes of it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Settings
from processors.ledger.faults import FaultPoint


def test_unset_means_no_fault_point() -> None:
    assert FaultPoint.parse(Settings().fault_point) is None


@pytest.mark.parametrize(
    ("spec", "point", "refunds_only", "action"),
    [
        ("after_produce:KILL", "after_produce", False, "KILL"),
        ("after_offsets+refund:STOP", "after_offsets", True, "STOP"),
        ("after_commit:STOP", "after_commit", False, "STOP"),
        ("after_produce+refund:WEDGE", "after_produce", True, "WEDGE"),
    ],
)
def test_spec_parses(spec: str, point: str, refunds_only: bool, action: str) -> None:
    fault = FaultPoint.parse(Settings(fault_point=spec).fault_point)
    assert fault == FaultPoint(point, refunds_only, action)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec", ["after_commit", "before_commit:KILL", "after_commit:TERM", "after_commit+x:KILL"]
)
def test_bad_spec_is_refused_at_start_up(spec: str) -> None:
    with pytest.raises(ValidationError, match="fault_point"):
        Settings(fault_point=spec)


def test_a_point_not_reached_does_not_fire() -> None:
    fault = FaultPoint("after_commit", True, "KILL")
    fault.reached("after_produce", refunds=True)  # another point
    fault.reached("after_commit", refunds=False)  # not a refund transaction
    assert not fault.fired

"""vegeta's formats as both loads write them (``benchmarks/vegeta_tool.py``)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import vegeta_tool


def test_a_target_is_one_json_line_ending_in_a_newline() -> None:
    header = {"Authorization": ["Bearer mk_x"], "Idempotency-Key": ["k1"]}
    line = vegeta_tool.target_line("http://h/memes?lat=1&query=a%20b#op-1", header)

    assert line.endswith("\n") and line.count("\n") == 1  # vegeta's lazy reader needs it
    assert json.loads(line) == {
        "method": "GET",
        "url": "http://h/memes?lat=1&query=a%20b#op-1",
        "header": header,
    }


def test_the_attack_takes_a_fractional_rate_as_an_exact_ratio() -> None:
    command = vegeta_tool.attack_command(
        Path("/bin/vegeta"), Path("t.jsonl"), Path("r.bin"), 33.5, 60, 10
    )

    assert command[:4] == ["/bin/vegeta", "attack", "-format=json", "-lazy"]
    assert "-rate=67/2s" in command
    assert "-duration=60s" in command
    assert "-timeout=10s" in command
    # every request of a timeout window may be in flight at once: open loop
    assert f"-max-workers={335 + 100}" in command
    assert "-targets=t.jsonl" in command and "-output=r.bin" in command

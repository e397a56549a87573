"""The availability load driven by vegeta, a compiled open-loop load generator.

The Python load (``workload.py``) needs a good part of a core at 60 requests/s on a
2-core machine: it competes with the service it measures, lags, and its measure of
availability is wrong. vegeta sends the same requests for a fraction of that. The
clients are registered and credited by the ``Workload`` beforehand, and the workload
settles and records the final ``me``s afterwards, as in the Python load.

1. ``write_targets``: one target per request of the run (rate x seconds) in vegeta's
   JSON target format, clients round-robin, each with ``Idempotency-Key: <logical>``
   (logical ids are unique; the checker maps each request back to its op by the key).
   What is asked (``memes``): ``new``, coordinates drawn as the workload draws them and
   the query ``"jepsen " + logical``, so every meme is new (the generators' worst case);
   or ``repeated``, each client at home in a city drawn by population and queries from
   the benchmarks' Zipf vocabulary (``benchmarks/workload.py``), so popular memes repeat
   as in the realistic workload. The URL's fragment (never sent) is the logical id, so
   that ``record`` knows each result's request.
2. ``start``: ``vegeta attack -lazy`` as a child process, at a constant rate, while the
   nemesis runs; ``wait`` until it has sent every target and heard every answer.
3. ``record``: ``vegeta encode --to json`` the results, and write one history line per
   result (attempt 1, ``worker``: the lowest id free at the invoke, as a Jepsen
   process does one op at a time). Named requests left open go to the workload, which
   settles them.

No retries (vegeta makes none): availability counts first attempts anyway, and the
faults mode keeps the Python load with its retries. Neither purchases nor lookups are
made during the load.

vegeta stamps a result when one of its workers takes the tick (``timestamp``) and
measures ``latency`` from there. Its pacer schedules request ``seq`` at ``seq / rate``
after the attack began, so its own lag is ``timestamp - (began + seq / rate)``; the
availability counts a request as answered in time if its status is 2xx and
``lag + latency`` is within the deadline, the Python load's measure (from the scheduled
instant).
"""

from __future__ import annotations

import base64
import heapq
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from benchmarks import vegeta_tool
from benchmarks.workload import draw_query, place_clients
from tests.jepsen.workload import Account, Answer, Workload

# Past the API's longest wait (deadline + refund grace + slack): an answer, not a
# client timeout, is what the run wants to see.
ATTACK_TIMEOUT_S = 30
Memes = Literal["new", "repeated"]
MEMES: tuple[Memes, ...] = ("new", "repeated")


@dataclass(frozen=True)
class Planned:
    """One target: the request as the history will record it."""

    logical: str
    account: Account
    params: dict[str, Any]


@dataclass
class VegetaOutcome:
    planned: int
    sent: int  # results with a target; the rest were ticks after the last one
    availability: float  # 2xx and lag + latency within the deadline, over ``sent``
    availability_from_send: float  # the same with vegeta's latency alone
    lags_ms: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)  # vegeta's, of every result


@dataclass
class VegetaLoad:
    workload: Workload
    root: Path  # targets, results and vegeta's output go here
    rate: float
    seconds: float
    binary: Path = vegeta_tool.BINARY
    say: Callable[[str], None] = print
    memes: Memes = "new"
    planned: dict[str, Planned] = field(default_factory=dict)  # by logical

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.targets_path = self.root / "targets.jsonl"
        self.results_path = self.root / "results.bin"
        self.encoded_path = self.root / "results.jsonl"
        self.log_path = self.root / "vegeta.log"
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    # --- 1. targets ----------------------------------------------------------------

    def write_targets(self) -> int:
        accounts = self.workload.accounts
        if not accounts:
            raise RuntimeError("no client registered: run the workload's setup first")
        count = round(self.rate * self.seconds)
        rng = self.workload.rng
        homes = (
            place_clients([a.api_key for a in accounts], set(), rng.getrandbits(32))
            if self.memes == "repeated"
            else []
        )
        with self.targets_path.open("w", encoding="utf-8") as out:
            for i in range(count):
                logical = self.workload.logical("m")
                account = accounts[i % len(accounts)]
                if self.memes == "repeated":
                    home = homes[i % len(accounts)]
                    lat, lon = round(home.lat, 5), round(home.lon, 5)
                    params = {"lat": lat, "lon": lon, "query": draw_query(rng)}
                else:
                    params = self.workload.meme_params(logical)
                self.planned[logical] = Planned(logical, account, params)
                query = urlencode(params, quote_via=quote)
                header = {
                    "Authorization": [f"Bearer {account.api_key}"],
                    "Idempotency-Key": [logical],
                }
                url = f"{self.workload.base_url}/memes?{query}#{logical}"
                out.write(vegeta_tool.target_line(url, header))
        return count

    # --- 2. attack -----------------------------------------------------------------

    def command(self) -> list[str]:
        return vegeta_tool.attack_command(
            self.binary,
            self.targets_path,
            self.results_path,
            self.rate,
            self.seconds,
            ATTACK_TIMEOUT_S,
        )

    def start(self) -> int:
        self._popen = vegeta_tool.start(self.command(), self.log_path)
        return self._popen.pid

    def wait(self, before_reaping: Callable[[], object] = lambda: None) -> None:
        """Until vegeta exits; ``before_reaping`` runs while it is a zombie, whose CPU
        times ``/proc`` still has."""
        assert self._popen is not None
        vegeta_tool.wait(self._popen, self.log_path, before_reaping)

    def stop(self) -> None:
        """Kill an attack still under way (the run is being abandoned)."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.kill()
            self._popen.wait()

    # --- 3. results ----------------------------------------------------------------

    def record(self, deadline_ms: int) -> VegetaOutcome:
        results = vegeta_tool.sent(
            vegeta_tool.read_results(self.binary, self.results_path, self.encoded_path)
        )
        lines = [self._line(r) for r in results]
        _assign_workers(lines)
        began_ms = min((line["began_ms"] for line in lines), default=0.0)
        ok = ok_from_send = 0
        outcome = VegetaOutcome(len(self.planned), len(lines), 0.0, 0.0)
        for line in sorted(lines, key=lambda line: line["complete_ms"]):
            lag_ms = line.pop("began_ms") - began_ms
            latency_ms = line.pop("latency_ms")
            outcome.lags_ms.append(lag_ms)
            outcome.latencies_ms.append(latency_ms)
            if line["status"] is not None and 200 <= line["status"] < 300:
                ok += lag_ms + latency_ms <= deadline_ms
                ok_from_send += latency_ms <= deadline_ms
            self.workload.history.record(line)
            self.workload.tally("meme", line["status"])
            planned = self.planned[line["logical"]]
            answer = Answer(line["status"], line["response"], line["error"], None)
            self.workload.note(planned.account, planned.logical, answer)
        if lines:
            outcome.availability = ok / len(lines)
            outcome.availability_from_send = ok_from_send / len(lines)
        if len(lines) != len(self.planned):
            self.say(f"vegeta sent {len(lines)} of {len(self.planned)} targets")
        return outcome

    def _line(self, result: dict[str, Any]) -> dict[str, Any]:
        """A history line, with two extra fields that ``record`` takes out again:
        ``began_ms``, when the attack began if this request was sent on time (the
        earliest over all results is when it began), and vegeta's ``latency_ms``."""
        planned = self.planned[urlsplit(result["url"]).fragment]
        invoke_s = datetime.fromisoformat(result["timestamp"]).timestamp()
        latency_ms = result["latency"] / 1e6
        code = int(result["code"])
        return {
            "worker": 0,
            "op": "meme",
            "logical": planned.logical,
            "attempt": 1,
            "client_id": planned.account.client_id,
            "invoke_ms": int(invoke_s * 1000),
            "complete_ms": int(invoke_s * 1000 + latency_ms),
            "method": "GET",
            "path": "/memes",
            "params": planned.params,
            "idempotency_key": planned.logical,
            "body": None,
            "status": code or None,
            "error": (result["error"] or "no answer") if code == 0 else None,
            "response": _json_body(result.get("body")),
            "began_ms": invoke_s * 1000 - int(result["seq"]) * 1000 / self.rate,
            "latency_ms": latency_ms,
        }


def _json_body(body: str | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(base64.b64decode(body))
    except ValueError:
        return None


def _assign_workers(lines: list[dict[str, Any]]) -> None:
    """Each op takes the lowest worker id free at its invoke (one op at a time per worker,
    as a Jepsen process), as the Python load does."""
    busy: list[tuple[int, int]] = []  # (complete_ms, worker)
    free: list[int] = []
    most = 0
    for line in sorted(lines, key=lambda line: line["invoke_ms"]):
        while busy and busy[0][0] <= line["invoke_ms"]:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            worker = heapq.heappop(free)
        else:
            worker, most = most, most + 1
        line["worker"] = worker
        heapq.heappush(busy, (line["complete_ms"], worker))

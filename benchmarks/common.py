"""What every benchmark needs: a broker, a fresh region, its processes, CPU accounting.

- ``kafka()``: the cluster named by ``KAFKA_BOOTSTRAP_SERVERS``, else a private local
  broker (``maas.broker.LocalBroker``) on a free port under ``benchmarks/results/``,
  stopped and removed at the end.
- ``Region``: a fresh region (topic prefix ``bench<hex>``) with its own data dir and
  billing token; starts ``maas processor``, ``maas generator --kind standard|ai`` and
  ``maas api --port <free port>`` as subprocesses through ``maas.processes``, exactly as
  ``maas up`` does (one of each, or as many as ``start_service`` is told, the API
  processes all on the one port), with logs in ``benchmarks/results/logs/<region>/``;
  registers clients through the billing API; stops everything and deletes its topics and
  data at the end.
- ``CpuMeter``: CPU time of named processes between two instants, from
  ``/proc/<pid>/stat`` (utime + stime of every thread), in % of one core, and the whole
  machine's busy % from ``/proc/stat`` (the machine may be shared: ``others`` is the
  part no process of ours used, and of it ``steal`` the part a virtual machine's host
  gave to someone else). The Jepsen-style runs use it too, sampling processes that are
  killed and restarted.

Environment variables reach the children unchanged, so ``MAAS_MAX_BATCH_SIZE=50
python benchmarks/http_bench.py`` runs the service with that setting.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core.admin import delete_region_topics, ensure_topics
from core.settings import Settings
from maas.broker import LocalBroker, free_port
from maas.processes import (
    DEFAULT_COUNTS,
    OBSERVERS,
    SERVICE,
    process_label,
    reap,
    start_process,
    stop_together,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
LOGS = RESULTS / "logs"
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0  # a graceful stop; then SIGKILL
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    """Progress output, timestamped, unbuffered."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def stop_on_sigterm() -> None:
    """SIGTERM ends the benchmark like Ctrl-C, so ``finally`` blocks stop the children."""

    def handler(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


# --------------------------------------------------------------------------- kafka


@dataclass
class Kafka:
    bootstrap: str
    broker: LocalBroker | None  # None: an external cluster, not ours to stop

    def pid(self) -> int | None:
        return self.broker.pid() if self.broker is not None else None


@contextlib.contextmanager
def kafka() -> Iterator[Kafka]:
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        say(f"kafka: using KAFKA_BOOTSTRAP_SERVERS={bootstrap} (broker CPU not measured)")
        yield Kafka(bootstrap, None)
        return
    home = RESULTS / f"kafka-{uuid.uuid4().hex[:8]}"
    broker = LocalBroker(home, port=free_port())
    say(f"kafka: starting a local broker on {broker.bootstrap} (home {home})")
    started = time.monotonic()
    try:
        broker.start()
        say(f"kafka: ready in {time.monotonic() - started:.1f} s, pid {broker.pid()}")
        yield Kafka(broker.bootstrap, broker)
    finally:
        say("kafka: stopping the local broker")
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


# --------------------------------------------------------------------------- region


@dataclass
class Client:
    client_id: str
    api_key: str


@dataclass
class Region:
    """A fresh region on ``kafka``: topics, processes, clients. Use as a context manager."""

    kafka: Kafka
    name: str = field(default_factory=lambda: "bench" + uuid.uuid4().hex[:8])
    billing_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # by label
    api_instances: set[int] = field(default_factory=set)  # of the API processes started

    def __post_init__(self) -> None:
        self.data_dir = RESULTS / "data" / self.name
        self.log_dir = LOGS / self.name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "MAAS_REGION": self.name,
            "MAAS_DATA_DIR": str(self.data_dir),
            "MAAS_BILLING_TOKEN": self.billing_token,
            "MAAS_DEV_MODE": "1",  # a throwaway region: the other secrets may be defaults
            "PYTHONUNBUFFERED": "1",
        }
        self.settings = Settings.from_env(self.env)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.base_url, timeout=30.0)

    def __enter__(self) -> Region:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- set-up ---------------------------------------------------------------------

    def create_topics(self) -> None:
        ensure_topics(self.settings)
        say(f"region {self.name}: topics created ({self.settings.partitions} partitions)")

    def log_path(self, label: str) -> Path:
        return self.log_dir / f"{label}.log"

    def start(self, name: str, instance_id: str | None = None) -> subprocess.Popen[bytes]:
        label = process_label(name, instance_id)
        proc = start_process(
            name, self.env, self.log_path(label), port=self.port, instance_id=instance_id, cwd=REPO
        )
        self.procs[label] = proc
        if name == "api":
            self.api_instances.add(int(instance_id or self.settings.api_instance))
        say(f"started {label} pid={proc.pid} log={self.log_path(label)}")
        return proc

    def start_service(
        self,
        *,
        processors: int = DEFAULT_COUNTS["processor"],
        generators_standard: int = DEFAULT_COUNTS["generator-standard"],
        generators_ai: int = DEFAULT_COUNTS["generator-ai"],
        api: int = DEFAULT_COUNTS["api"],
    ) -> None:
        """That many processes of each kind (by default what ``maas up`` runs), then wait
        until every API answers and the ledger folds. A kind run once keeps its plain name
        (``api``), so that its figures line up with earlier results; several are numbered
        (``api-0``, ``api-1``)."""
        counts = {
            "processor": processors,
            "generator-standard": generators_standard,
            "generator-ai": generators_ai,
            "api": api,
        }
        for name in SERVICE:
            for instance_id in [None] if counts[name] == 1 else map(str, range(counts[name])):
                self.start(name, instance_id)
        self.wait_ready()
        self.wait_serving()

    def start_usage(self) -> int:
        """The usage worker, on a port of its own (a ``maas up`` on this machine holds the
        default); returns the port of its ``/usage/`` view."""
        port = free_port()
        self.env["MAAS_USAGE_PORT"] = str(port)
        self.start("usage")
        return port

    def start_observers(self, timeout_s: float = 60.0) -> None:
        """The rest of what ``maas up`` runs (``OBSERVERS``), until the usage view answers."""
        port = self.start_usage()
        for name in OBSERVERS:
            if name != "usage":
                self.start(name)
        give_up = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/usage/", timeout=2).is_success:
                    return
            if time.monotonic() > give_up:
                raise TimeoutError(f"the usage view did not answer within {timeout_s} s")
            time.sleep(0.2)  # the usage worker starts up: poll its view again

    def stop(self, name: str, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
        return reap(proc, timeout_s)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode}; log {self.log_path(name)}:\n"
                    + self.tail(name)
                )

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_path(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Until every API process started has answered ``/readyz`` with 200. Each probe
        is a new connection, so the API processes sharing the port all get some."""
        started = time.monotonic()
        ready: set[int] = set()
        last = ""
        while time.monotonic() - started < timeout_s:
            self.check_alive()
            try:
                response = httpx.get(f"{self.base_url}/readyz", timeout=5)
                if response.status_code == 200:
                    ready.add(response.json()["api_instance"])
                    if ready >= self.api_instances:
                        say(f"api ready in {time.monotonic() - started:.1f} s on {self.base_url}")
                        return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)  # start-up poll, not part of any measurement
        raise TimeoutError(
            f"/readyz not ready after {timeout_s} s (API instances ready: {sorted(ready)} of "
            f"{sorted(self.api_instances)}): {last}"
        )

    def wait_serving(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Ready is not enough: the processor must be folding. Registers a probe client."""
        started = time.monotonic()
        last = ""
        while time.monotonic() - started < timeout_s:
            self.check_alive()
            response = self.http.post("/v1/clients", json={"name": "probe"}, headers=self.billing)
            if response.status_code == 201 and not response.json().get("pending"):
                say(f"ledger folding after {time.monotonic() - started:.1f} s")
                return
            last = f"{response.status_code} {response.text}"
            time.sleep(0.5)  # start-up poll
        raise TimeoutError(f"ledger not answering after {timeout_s} s: {last}")

    def backlog(self) -> dict[str, int]:
        """Records the ledger and generator groups have not committed yet, per group.

        Counted by reading past each group's committed offsets, not as the distance to the
        end of the log: a transaction's commit marker takes an offset too, and the two
        processors' transactions can each leave one at the end of the same approved
        partition (seen: committed 34, end 36, nothing left to read), which a fixed
        allowance of one offset counted as a backlog for good.
        """
        from confluent_kafka import TopicPartition

        from core.topics import Topics

        topics = Topics(self.name)
        groups = {
            f"{self.name}.ledger": topics.ledger_inputs,
            f"{self.name}.generators.standard": [topics.approved("standard")],
            f"{self.name}.generators.ai": [topics.approved("ai")],
        }
        committed = CommittedOffsets(self.kafka.bootstrap)
        probe = end_probe(self.kafka.bootstrap, f"bench-backlog-{os.getpid()}")
        out: dict[str, int] = {}
        try:
            for group, names in groups.items():
                tps = [
                    TopicPartition(name, p)
                    for name in names
                    for p in range(self.settings.partitions)
                ]
                behind: list[TopicPartition] = []
                for tp in committed.of(group, tps):
                    low, high = probe.get_watermark_offsets(
                        TopicPartition(tp.topic, tp.partition), timeout=10
                    )
                    position = tp.offset if tp.offset >= 0 else low
                    if high > position:
                        behind.append(TopicPartition(tp.topic, tp.partition, position))
                out[group.removeprefix(self.name + ".")] = unread(probe, behind)
        finally:
            probe.close()
            committed.close()
        return out

    def wait_drained(self, timeout_s: float = 120.0) -> None:
        """Wait until the ledger and the generators have caught up, so the next
        measurement does not start with the previous one's queue."""
        started = time.monotonic()
        while True:
            backlog = self.backlog()
            if not any(backlog.values()):
                waited = time.monotonic() - started
                if waited > 1:
                    say(f"drained in {waited:.1f} s")
                return
            if time.monotonic() - started > timeout_s:
                say(f"WARNING: still a backlog after {timeout_s:g} s: {backlog}")
                return
            self.check_alive()
            time.sleep(0.5)  # drain poll, between measurements

    # --- billing ----------------------------------------------------------------------

    @property
    def billing(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.billing_token}"}

    def register_clients(self, count: int, tokens: int) -> list[Client]:
        """Register ``count`` clients and credit each ``tokens`` through the billing API."""
        clients: list[Client] = []
        for i in range(count):
            response = self.http.post(
                "/v1/clients", json={"name": f"bench-{i}"}, headers=self.billing
            )
            if response.status_code != 201:
                raise RuntimeError(f"register: {response.status_code} {response.text}")
            body = response.json()
            client = Client(body["client_id"], body["api_key"])
            response = self.http.post(
                f"/v1/clients/{client.client_id}/purchases",
                json={"purchase_id": f"bench-{uuid.uuid4().hex}", "tokens": tokens},
                headers=self.billing,
            )
            if response.status_code not in (200, 201):
                raise RuntimeError(f"purchase: {response.status_code} {response.text}")
            clients.append(client)
        say(f"registered {count} clients with {tokens:,} tokens each")
        return clients

    # --- tear-down --------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items() if proc.poll() is None}

    def close(self) -> None:
        self.http.close()  # first: a stopping API waits for its clients to leave
        names = list(reversed(self.procs))
        codes = stop_together([self.procs.pop(name) for name in names], STOP_TIMEOUT_S)
        for name, code in zip(names, codes, strict=True):
            say(f"stopped {name} exit={code}")
        delete_region_topics(self.kafka.bootstrap, self.name)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def end_probe(bootstrap: str, group: str) -> Any:
    """A consumer of committed records that says where each partition ends (``unread``);
    it commits nothing."""
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )


def unread(probe: Any, positions: list[Any], timeout_s: float = 30.0) -> int:
    """How many records ``probe`` (an ``end_probe``) reads from ``positions`` to the end
    of their partitions; commit markers are not records."""
    from confluent_kafka import KafkaError, KafkaException

    if not positions:
        return 0
    probe.assign(positions)
    pending = {(tp.topic, tp.partition) for tp in positions}
    count = 0
    give_up = time.monotonic() + timeout_s
    try:
        while pending:
            if time.monotonic() > give_up:
                raise TimeoutError(f"no end of partition within {timeout_s} s: {pending}")
            message = probe.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is None:
                count += 1
            elif error.code() == KafkaError._PARTITION_EOF:
                pending.discard((message.topic(), message.partition()))
            else:
                raise KafkaException(error)
    finally:
        probe.unassign()
    return count


class CommittedOffsets:
    """A consumer group's committed offsets, read through a consumer of that group.

    Not ``AdminClient.list_consumer_group_offsets``: librdkafka (2.16) crashes the
    process with a segmentation fault when that request meets NOT_COORDINATOR, as it does
    while a fresh broker still loads its group coordinator (librdkafka #5040; seen in 3
    of 4 runs of ``processor_bench.py --smoke`` here). A consumer's ``committed`` asks
    the same question through its group machinery, which waits for the coordinator. The
    consumer never subscribes, so it never joins the group it reads.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumers: dict[str, Any] = {}

    def of(self, group: str, tps: list[Any], timeout_s: float = 60.0) -> list[Any]:
        """``tps`` with the group's committed offsets (negative where none is committed)."""
        from confluent_kafka import Consumer, KafkaException

        if group not in self._consumers:
            self._consumers[group] = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": group,
                    "enable.auto.commit": False,
                }
            )
        give_up = time.monotonic() + timeout_s
        while True:
            try:
                committed: list[Any] = self._consumers[group].committed(tps, timeout=10)
                return committed
            except KafkaException:
                # NOT_COORDINATOR and the like while a fresh broker loads its coordinator.
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()


# --------------------------------------------------------------------------- cpu


def process_ticks(pid: int) -> int | None:
    """utime + stime of every thread of ``pid``, in clock ticks; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def process_rss_mb(pid: int) -> int | None:
    """Resident memory of ``pid`` (VmRSS), in MiB; None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return None if kib is None else int(kib) // 1024


def machine_ticks() -> tuple[int, int, int]:
    """(busy, total, steal) clock ticks of all CPUs since boot. Steal is time a virtual
    machine's host gave to someone else: counted busy, and never ours."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total, values[7]


# Each process's pid by name (None: not running), or a function that says so now.
Pids = Mapping[str, int | None] | Callable[[], Mapping[str, int | None]]


@dataclass
class CpuReport:
    seconds: float
    percent: dict[str, float]  # per named process, % of one core
    machine_busy_percent: float  # of all cores: 100 = every core busy
    ours_percent_of_machine: float
    cores: int
    machine_ticks: int  # all cores, over the interval
    steal_percent_of_machine: float = 0.0  # the host's share, part of "not ours"
    # per named process, resident memory (MiB) at its first and its last sample: a
    # long run shows what grows (a process started again: its first life's first
    # sample, its last life's last)
    rss_mb: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, name: str, cpu_seconds: float) -> None:
        """Count a process measured another way (e.g. a child's rusage after it exited)."""
        self.percent[name] = 100.0 * cpu_seconds / self.seconds
        self.ours_percent_of_machine += 100.0 * cpu_seconds * CLK_TCK / self.machine_ticks

    @property
    def others_percent_of_machine(self) -> float:
        return max(0.0, self.machine_busy_percent - self.ours_percent_of_machine)

    def busiest(self) -> tuple[str, float]:
        return max(self.percent.items(), key=lambda kv: kv[1]) if self.percent else ("-", 0.0)

    def line(self) -> str:
        parts = " ".join(f"{name}={pct:.0f}%" for name, pct in self.percent.items())
        return (
            f"cpu (% of one core): {parts} | machine busy {self.machine_busy_percent:.0f}% of "
            f"{self.cores} cores, of which not ours {self.others_percent_of_machine:.0f}% "
            f"(host steal {self.steal_percent_of_machine:.0f}%)"
        )

    def memory_line(self) -> str:
        parts = " ".join(f"{name}={a}->{b}" for name, (a, b) in self.rss_mb.items())
        return f"memory (RSS MiB, first -> last sample): {parts}"

    def as_dict(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 3),
            "percent_of_one_core": {k: round(v, 1) for k, v in self.percent.items()},
            "rss_mb_first_last": {k: list(v) for k, v in self.rss_mb.items()},
            "machine_busy_percent": round(self.machine_busy_percent, 1),
            "others_percent_of_machine": round(self.others_percent_of_machine, 1),
            "steal_percent_of_machine": round(self.steal_percent_of_machine, 1),
            "cores": self.cores,
        }


class CpuMeter:
    """CPU of named processes from ``start()`` to ``stop()`` (or a ``with`` block), which
    sets ``report``; ``so_far()`` reports up to the latest sample while it runs.

    ``pids`` is a mapping, or a function asked again at every sample: a process started
    again under its name (a new pid, as after a kill) counts as the sum over its pids,
    and one first seen after ``start()`` counts from 0 (it was born meanwhile). With
    ``every_s`` a thread samples meanwhile, so a process that dies loses at most that
    much; ``sample()`` may also be called at any moment (on a child that has exited but
    is not reaped yet, whose ticks ``/proc`` still holds)."""

    def __init__(self, pids: Pids, every_s: float | None = None) -> None:
        self._pids = pids if callable(pids) else (lambda: pids)
        self._every_s = every_s
        self._lock = threading.Lock()
        self._first: dict[tuple[str, int], int] = {}
        self._last: dict[tuple[str, int], int] = {}
        self._names: list[str] = []
        self._rss: dict[str, tuple[int, int]] = {}
        self._started = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.report: CpuReport | None = None

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine = machine_ticks()
        self.sample()
        self._started = True
        if self._every_s is not None:
            self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
            self._thread.start()

    def sample(self) -> None:
        pids = self._pids()
        with self._lock:
            for name, pid in pids.items():
                if pid is None:
                    continue
                ticks = process_ticks(pid)
                if ticks is None:
                    continue
                if name not in self._names:
                    self._names.append(name)
                key = (name, pid)
                if key not in self._first:
                    self._first[key] = ticks if not self._started else 0
                self._last[key] = ticks
                rss = process_rss_mb(pid)
                if rss is not None:
                    self._rss[name] = (self._rss.get(name, (rss, rss))[0], rss)

    def stop(self) -> CpuReport:
        self.sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.report = self.so_far()
        return self.report

    def so_far(self) -> CpuReport:
        seconds = max(1e-9, time.monotonic() - self._t0)
        busy1, total1, steal1 = machine_ticks()
        busy0, total0, steal0 = self._machine
        with self._lock:
            used = dict.fromkeys(self._names, 0)
            for (name, pid), last in self._last.items():
                used[name] += last - self._first[(name, pid)]
            rss = dict(self._rss)
        total = max(1, total1 - total0)
        return CpuReport(
            seconds=seconds,
            percent={name: 100.0 * t / CLK_TCK / seconds for name, t in used.items()},
            machine_busy_percent=100.0 * (busy1 - busy0) / total,
            ours_percent_of_machine=100.0 * sum(used.values()) / total,
            cores=os.cpu_count() or 1,
            machine_ticks=total,
            steal_percent_of_machine=100.0 * (steal1 - steal0) / total,
            rss_mb=rss,
        )

    def __enter__(self) -> CpuMeter:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        assert self._every_s is not None
        while not self._stop.wait(self._every_s):
            self.sample()


def machine_description() -> dict[str, str]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
        "?",
    )
    load = Path("/proc/loadavg").read_text().split()[:3]
    return {"nproc": str(os.cpu_count()), "model": model, "loadavg_at_start": " ".join(load)}

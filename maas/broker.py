"""A local single-node Apache Kafka (KRaft, combined broker+controller) run from Python.

Used by ``maas kafka start``, ``maas up`` and the test suite when no other cluster is
given. The broker jars come from Maven (see ``pom.xml``); the classpath is resolved
once and cached, so later starts need neither the network nor Maven.

The broker runs as a detached process (its own session) so it outlives the Python
process that started it; a pid file in ``home`` lets another process stop it. Data
lives in ``home/data`` and survives stop/kill + start: storage is formatted only once.
Each start maps the classes from an archive an earlier broker left (``jvm_archive``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from maas import jvm_archive

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

# The broker is meant for a laptop or a 2-core CI box; a 512 MiB heap is plenty here.
# Start-up measured the same (~2-3 s) with G1 and SerialGC; SerialGC is chosen because
# it runs no concurrent GC threads competing for 2 cores. The parallel collector paused
# shorter (one thread 10-16 ms, two 4-9 ms, against 20-30 ms) without a steady gain in
# the p99, and two threads stalled 0.1-1 s while the machine was busy (docs/performance.md,
# sixteenth session). C1-only JIT
# (-XX:TieredStopAtLevel=1) would save ~0.5 s of start-up but slows the running broker.
JVM_FLAGS = [
    "-Xmx512m",
    "-Xms256m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]
# The storage format tool: a one-shot run, quicker without the C2 JIT.
FORMAT_JVM_FLAGS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


class BrokerError(RuntimeError):
    """The local broker could not be resolved, formatted, started or stopped."""


class BrokerExited(BrokerError):
    """The broker's JVM exited before it answered."""


# --------------------------------------------------------------------------- classpath


def pom_path(repo_root: Path | None = None) -> Path:
    """``$MAAS_POM`` if set, else ``pom.xml`` at the repository root."""
    if os.environ.get("MAAS_POM"):
        return Path(os.environ["MAAS_POM"]).resolve()
    return (repo_root or REPO_ROOT) / "pom.xml"


def resolve_classpath(repo_root: Path | None = None, *, quiet: bool = True) -> str:
    """The broker's Java classpath, resolved by Maven once per version of ``pom.xml``.

    Cached in ``<repo_root>/.maas/kafka/classpath-<sha of pom>.txt``; re-resolved when
    the pom changes or a cached jar has disappeared (e.g. a cleaned ``~/.m2``).
    ``quiet=False`` lets Maven print its downloads (used at set-up so they are visible).
    """
    pom = pom_path(repo_root)
    if not pom.is_file():
        raise BrokerError(f"pom.xml not found at {pom} (set MAAS_POM)")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    cache = (repo_root or pom.parent) / ".maas" / "kafka" / f"classpath-{digest}.txt"
    if cache.is_file():
        classpath = cache.read_text().strip()
        if classpath and all(Path(p).exists() for p in classpath.split(os.pathsep)):
            return classpath

    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed once to fetch the Kafka broker jars")
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Written to a temporary file then renamed, so a concurrent reader never sees half.
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    cmd = [mvn, "-q" if quiet else "-B", "-f", str(pom), "dependency:build-classpath"]
    cmd.append(f"-Dmdep.outputFile={tmp}")
    result = subprocess.run(
        cmd,
        stdout=subprocess.PIPE if quiet else sys.stderr,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not tmp.is_file():
        output = result.stdout or ""
        raise BrokerError(
            f"mvn dependency:build-classpath failed ({result.returncode}):\n{output[-4000:]}"
        )
    os.replace(tmp, cache)
    return cache.read_text().strip()


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    # SO_REUSEADDR like the JVM's server sockets, so TIME_WAIT left over by a previous
    # broker does not count as "in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def random_cluster_id() -> str:
    """Kafka's cluster id format: 16 random bytes, base64url without padding."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # a leading '-' reads as an option on a command line
            return text


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) still accepts signal 0.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open(errors="replace") as f:
            return list(deque(f, maxlen=lines))
    except OSError:
        return []


# --------------------------------------------------------------------------- broker


class LocalBroker:
    """One KRaft node (broker+controller) with its config, data and logs under ``home``.

    Alone (the defaults) it is node 1 of a one-voter quorum. As a node of a
    ``maas.cluster.LocalCluster`` it gets its ``node_id``, the shared ``voters`` string
    (``controller.quorum.voters``), the shared ``cluster_id`` and cluster-wide
    ``properties`` that override the single-node ones.
    """

    def __init__(
        self,
        home: Path,
        port: int = 9092,
        controller_port: int | None = None,
        *,
        node_id: int = 1,
        voters: str | None = None,
        cluster_id: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self.home = Path(home).resolve()
        self.port = port
        self.controller_port = controller_port
        self.node_id = node_id
        self.voters = voters
        self.cluster_id = cluster_id
        self.properties = dict(properties or {})
        self._proc: subprocess.Popen[bytes] | None = None

    # ---- paths

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        """The broker's own log (log4j2, INFO)."""
        return self.home / "logs" / "server.log"

    @property
    def out_path(self) -> Path:
        """stdout/stderr of the JVM: crashes and anything printed before logging is up."""
        return self.home / "logs" / "broker.out"

    @property
    def pid_path(self) -> Path:
        return self.home / "broker.pid"

    @property
    def config_path(self) -> Path:
        return self.home / "config" / "server.properties"

    # ---- state

    def pid(self) -> int | None:
        """The pid of this home's broker process if it is alive."""
        if self._proc is not None:
            if self._proc.poll() is None:
                return self._proc.pid
            self._proc = None
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        # Guard against pid reuse: the process must be a Kafka broker using this home.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return pid
        return pid if "kafka.Kafka" in cmdline and str(self.config_path) in cmdline else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def is_formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    # ---- lifecycle

    def start(self, timeout_s: float = 120) -> None:
        """Start (formatting storage on first use) and wait until the broker answers.

        A no-op apart from the wait if this home's broker already runs.
        """
        if self.is_running():
            self._wait_ready(time.monotonic() + timeout_s)
            return
        if not port_is_free(self.port):
            # Otherwise we could "succeed" by talking to whatever already listens there.
            raise BrokerError(f"port {self.port} is in use; is another Kafka running?")
        if self.voters is not None:
            # Other nodes know this one by its controller port (their voters list): it
            # must come back on the same one.
            if self.controller_port is None or not port_is_free(self.controller_port):
                raise BrokerError(f"controller port {self.controller_port} is not free")
        elif self.controller_port is None or not port_is_free(self.controller_port):
            # Static voters (controller.quorum.voters) read the port from config on every
            # start, so a fresh controller port per start is safe.
            self.controller_port = free_port()

        classpath = resolve_classpath()
        java = self._java()
        self._write_config()
        if not self.is_formatted():
            self._format(java, classpath)

        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        try:
            self._launch(java, classpath, deadline)
        except BrokerExited:
            if not jvm_archive.discard(java, classpath, JVM_FLAGS):
                raise
            log.warning("broker in %s died mapping the cached class archive: removed", self.home)
            self._launch(java, classpath, deadline)

    def _launch(self, java: str, classpath: str, deadline: float) -> None:
        cmd = [
            java,
            *JVM_FLAGS,
            *jvm_archive.start_flags(java, classpath, JVM_FLAGS, self.home),
            f"-Dlog4j2.configurationFile={self.home / 'config' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_path.parent}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.config_path),
        ]
        with self.out_path.open("ab") as out:
            # A marker so output of this run is told apart from earlier runs'.
            out.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,  # outlive us; not hit by our terminal's Ctrl-C
            )
        self.pid_path.write_text(f"{self._proc.pid}\n")
        self._wait_ready(deadline)

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it has not exited in time."""
        pid = self.pid()
        stopped = False
        if pid is not None:
            self._signal(pid, signal.SIGTERM)
            stopped = self._wait_exit(pid, timeout_s)
            if not stopped:
                self._signal(pid, signal.SIGKILL)
                self._wait_exit(pid, 10)
        self._proc = None
        self.pid_path.unlink(missing_ok=True)
        if stopped:  # a killed JVM may leave half an archive; the next start writes one
            jvm_archive.adopt(self._java(), resolve_classpath(), JVM_FLAGS, self.home)

    def kill(self) -> None:
        """SIGKILL, as a crash would: for fault tests. Data stays; the next start recovers."""
        pid = self.pid()
        if pid is not None:
            self._signal(pid, signal.SIGKILL)
            self._wait_exit(pid, 10)
        self._proc = None
        self.pid_path.unlink(missing_ok=True)

    def tail(self, lines: int = 40) -> str:
        """The last lines of the broker log and, if it has any, the JVM's own output."""
        text = "".join(_tail(self.log_path, lines))
        out = "".join(_tail(self.out_path, lines))
        if out.strip():
            text += f"\n--- {self.out_path} ---\n{out}"
        return text

    # ---- internals

    @staticmethod
    def _java() -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java or not Path(java).exists():
            raise BrokerError("java not found (install a JDK 17+ or set JAVA_HOME)")
        return java

    def _write_config(self) -> None:
        # Rewritten on every start: ports may differ; data is in data_dir, not here.
        config_dir = self.home / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            # Static voters. Alone, a one-voter quorum: simplest, and tolerant of a
            # changed controller port (a dynamic quorum stores endpoints in its log).
            "controller.quorum.voters": self.voters or f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            # One node: internal topics cannot have more than one replica, and few
            # partitions make their creation (on first group / transaction) fast.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # A zombie's timed-out transaction is aborted at the broker's next check (every
            # 10 s by default), and until then read_committed readers of its partitions
            # wait; checking every 2 s bounds that wait near transaction.timeout.ms.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "2000",
            # After a SIGKILL the restarted controller refuses the broker's new
            # registration until the old session expires (default 9 s); a shorter session
            # makes crash-restart tests quicker while staying far above in-process
            # heartbeat delays.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "4000",
            # The default 128 MiB compaction buffer is a quarter of our heap.
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
            **self.properties,
        }
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

        log = self.log_path
        log4j = f"""\
# Written by maas/broker.py. Everything goes to {log.name}, nothing to stdout.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
# One line per request otherwise.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.requestchannel.name = kafka.network.RequestChannel$
logger.requestchannel.level = WARN
"""
        (config_dir / "log4j2.properties").write_text(log4j)

    def _format(self, java: str, classpath: str) -> None:
        cluster_id = self.cluster_id or random_cluster_id()
        result = self._run_format(java, classpath, cluster_id)
        if result.returncode != 0 and jvm_archive.discard(java, classpath, FORMAT_JVM_FLAGS):
            log.warning("storage format died mapping the cached class archive: removed")
            result = self._run_format(java, classpath, cluster_id)
        if result.returncode != 0 or not self.is_formatted():
            raise BrokerError(
                f"formatting {self.data_dir} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    def _run_format(
        self, java: str, classpath: str, cluster_id: str
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            java,
            *FORMAT_JVM_FLAGS,
            # Its own archive: 0.5 s instead of 1.0 s for each new broker's format.
            *jvm_archive.start_flags(java, classpath, FORMAT_JVM_FLAGS, self.home),
            f"-Dlog4j2.configurationFile={self.home / 'config' / 'log4j2.properties'}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.config_path),
        ]
        # In its home: a JVM that crashes writes its report (hs_err_pid*.log) there.
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.home)
        jvm_archive.adopt(java, classpath, FORMAT_JVM_FLAGS, self.home)
        return result

    def _wait_ready(self, deadline: float) -> None:
        # Imported here so `maas kafka status|stop` work without loading librdkafka.
        from confluent_kafka.admin import AdminClient

        admin: AdminClient | None = None
        while True:
            pid = self.pid()
            if pid is None:
                raise BrokerExited(
                    f"Kafka broker in {self.home} exited during start-up; "
                    f"last lines of {self.log_path}:\n{self.tail(40)}"
                )
            # A plain TCP check first: librdkafka logs every refused connection.
            if self._port_open():
                if admin is None:
                    admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
                try:
                    metadata = admin.list_topics(timeout=2)
                    # Listed only once registered and unfenced: alone, that is at once;
                    # in a cluster, once a quorum of controllers has accepted this node.
                    if self.node_id in metadata.brokers:
                        return
                except Exception:  # KafkaException while it finishes starting
                    pass
            if time.monotonic() > deadline:
                self.kill()  # no half-started JVM left behind holding the port and data
                raise BrokerError(
                    f"Kafka broker in {self.home} did not answer on {self.bootstrap} in time; "
                    f"last lines of {self.log_path}:\n{self.tail(40)}"
                )
            time.sleep(0.2)

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def _signal(self, pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                try:
                    self._proc.wait(timeout=0.1)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            # Reap it if it happens to be our child (started by another LocalBroker here).
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return not _pid_alive(pid)

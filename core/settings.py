"""One frozen settings object for every process, built at start-up from ``MAAS_*``
environment variables (never at import time).

Units are in the names. Relationships between values are validated here so that a
misconfigured process refuses to start instead of misbehaving under load.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

log = logging.getLogger(__name__)

# Development defaults, printed by `maas up`; override every one of them in production.
DEFAULT_BILLING_TOKEN = "dev-billing-token"
DEFAULT_AUDITOR_TOKEN = "dev-auditor-token"
DEFAULT_AUDIT_SIGNING_KEY = "dev-audit-signing-key"
_DEVELOPMENT_SECRETS = {
    "billing_token": DEFAULT_BILLING_TOKEN,
    "auditor_token": DEFAULT_AUDITOR_TOKEN,
    "audit_signing_key": DEFAULT_AUDIT_SIGNING_KEY,
}


class SettingsError(ValueError):
    """A setting that keeps a process from starting; the message names its variable."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str = Field(default="local", pattern=r"^[a-z][a-z0-9-]{0,30}$")
    bootstrap_servers: str = "127.0.0.1:9092"
    data_dir: Path = Path(".maas")
    partitions: int = Field(default=6, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    reply_partitions: int = Field(default=16, ge=1, le=1024)

    # Retention of topics with personal request details. It must outlast any processor
    # outage: an input deleted before the ledger folded it would be lost. Also how long
    # the ledger remembers an ended request after its deadline (ledger.fold): at least a
    # day, the floor the audit relies on (ledger.decision.MIN_REMEMBER_MS).
    personal_data_retention_ms: int = Field(default=7 * 86_400_000, ge=86_400_000)

    # ledger processor (the instance id also names the static membership of the usage
    # worker and of the generator pools)
    instance_id: str = Field(default="0", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    commit_interval_ms: int = Field(default=20, ge=1)
    # A ledger transaction begins no sooner than this after the previous one began;
    # what arrives meanwhile joins it. Each costs the broker a dozen requests whatever
    # it holds (docs/capacity.md), so at load fewer, larger ones; idle, no wait.
    min_transaction_interval_ms: int = Field(default=10, ge=0)
    # An outcome whose client its generator answered waits up to this long, to be
    # settled with others (processors/ledger/settlements.py); 0: none waits. A query of
    # the client's state takes the waiting ones along, so it never reads them unsettled.
    settle_within_ms: int = Field(default=500, ge=0)
    # At most this many inputs per ledger transaction. Batches grow this large only with
    # a backlog (a catch-up after a restart); the broker's cost is per request and per
    # record batch, so larger ones cost it less per decision (500: ~13k decisions/s on
    # this machine, 2000: ~17k, docs/performance.md). It also bounds the work an abort
    # redoes and what a commit must flush within its call timeout.
    max_batch_size: int = Field(default=2000, ge=1)
    # The broker aborts a transaction open this long. A transaction here takes
    # milliseconds; what the timeout bounds is how long a successor waits for a paused
    # or dead instance's open transaction before it may restore the partitions (Kafka
    # Streams' default for exactly once is the same 10 s). At most the brokers'
    # transaction.max.timeout.ms (15 minutes by default): above it every
    # init_transactions fails, and the processors would only restart in a loop.
    transaction_timeout_ms: int = Field(default=10_000, ge=1000, le=900_000)
    refund_grace_ms: int = Field(default=2_000, ge=0)
    # A ledger processor or generator pool whose main loop has not polled Kafka for this
    # long leaves its group, so its partitions move to the others of its kind, and ends
    # (processors/watchdog.py): a loop wedged while librdkafka's own threads keep the
    # session alive would otherwise hold them for librdkafka's default of 5 minutes. A
    # processor's longest legitimate gap is one commit, retried for up to
    # ``transaction_timeout_ms``; a wedged processor ends sooner, on the stall limit below.
    max_poll_interval_ms: int = Field(default=30_000, ge=10_000, le=86_400_000)  # librdkafka's
    # A ledger processor whose main loop has been neither in a Kafka poll nor in a
    # transactional call (each bounded by its own limit) for this long is wedged, and ends
    # long before the poll limit above (processors/watchdog.py); its restart, the same
    # static member, takes its partitions straight back. A batch's fold and store writes
    # take milliseconds.
    processor_stall_limit_ms: int = Field(default=5_000, ge=1_000, le=86_400_000)
    # Tests and drills only: crash, freeze or wedge at a commit boundary
    # (processors/ledger/faults.py).
    fault_point: str = Field(
        default="",
        pattern=r"^$|^(after_produce|after_offsets|after_commit)(\+refund)?:(KILL|STOP|WEDGE)$",
    )

    # api
    api_instance: int = Field(default=0, ge=0)
    request_deadline_ms: int = Field(default=5_000, ge=100)
    # Ledger calls one API process keeps waiting at once; more are refused with 503 and
    # Retry-After before anything is appended (docs/capacity.md, "Overload"). 128 rides
    # out a 1-3 s stall of some partitions at 100/s (a processor or generator restart)
    # and still bounds a standing queue to ~1 s at this machine's capacity.
    api_max_in_flight: int = Field(default=128, ge=1)
    # Of those, at most this many for clients of one partition (of the ledger's inputs):
    # a stalled partition (its processor restarting, or wedged until the poll limit)
    # fills its share, not the whole limit, so clients of the other partitions are still
    # served. A quarter: one processor's three partitions of six hold at most 96, and at
    # 100/s a partition's share rides out a stall of ~4 s, as the whole limit did.
    api_max_in_flight_per_partition: int = Field(default=32, ge=1)
    # And at most this many for one client: past it that client is told 429, so that one
    # client's burst holds half its partition's share, not all of it, and the clients it
    # shares a partition with are still served. At p50 ~15 ms, 16 waiting calls carry
    # ~1,000 requests/s of one client per API process.
    api_max_in_flight_per_client: int = Field(default=16, ge=1)
    # AI memes one API process keeps waiting at once, for clients it knows as AI; more
    # are refused the same way (api/ai_admission.py). The AI pools saturate first; with
    # 16 per process their queue stays well inside their own wait bound
    # (ai_max_wait_ms), so their excess is refused here at once instead of failed and
    # refunded there after 1.5 s (at 32 some still were: docs/capacity.md, "Overload").
    # At 100/s an API process waits on less than one; an AI pool's restart stalls ~10.
    api_max_ai_in_flight: int = Field(default=16, ge=1)
    # An idle client connection stays open this long. Above a load balancer's idle
    # timeout (60 s is common), so the balancer closes first: a server that closes first
    # races the balancer's next request on that connection, which ends in a 502 with no
    # answer. uvicorn's own default is 5 s.
    api_keep_alive_s: int = Field(default=75, ge=1, le=3600)
    # A stopping API process (a rolling restart, maas up's stop) stops listening, then for
    # up to this long answers the calls on the connections it holds with ``Connection:
    # close``, so that their clients go on, between two calls, on the API processes still
    # listening (api/draining.py). One still idle at the end is closed: a client sending
    # on it just then gets no answer, the race that closing it at once would run on every
    # idle connection. A client whose own idle timeout is shorter (httpx: 5 s) never sends
    # on one this closes.
    api_drain_s: float = Field(default=5.0, ge=0, le=60)
    # A supervisor (``maas up``) kills and restarts an API process whose event loop has
    # not beaten for this long: a stopped one would keep its share of the port's new
    # connections unanswered (core/heartbeat.py). Under a 2x overload the loop lags ~1 s
    # at worst (docs/capacity.md), so 10 s kills only a process that stopped serving.
    api_watchdog_s: float = Field(default=10.0, ge=1)
    # The file this process touches as its heartbeat; set by its supervisor, else none.
    heartbeat_file: Path | None = None
    # The file this process touches once it serves (core/readiness.py); set by its
    # supervisor, else none.
    ready_file: Path | None = None
    # The process this one replaces in a rolling restart: it waits for that one to exit
    # before what the two cannot share (core/readiness.py, take_over).
    predecessor_pid: int | None = Field(default=None, ge=1)
    # Development mode (./run sets it): the three secrets below may keep their development
    # defaults. Anywhere else, a process that uses one refuses to start with its default
    # (``require_secrets``): a forgotten variable must not leave a door open.
    dev_mode: bool = False
    billing_token: SecretStr = SecretStr(DEFAULT_BILLING_TOKEN)
    auditor_token: SecretStr = SecretStr(DEFAULT_AUDITOR_TOKEN)  # read-only auditor scope
    audit_signing_key: SecretStr = SecretStr(DEFAULT_AUDIT_SIGNING_KEY)  # HMAC of checkpoints
    audit_checkpoint_interval_s: int = Field(default=300, ge=1)  # maas audit checkpoint --loop

    # generators
    generator_concurrency: int = Field(default=4, ge=1, le=256)
    ai_generator_deadline_ms: int = Field(default=3_000, ge=100)
    # AI memes one AI pool makes at once. With the offline backend each is ~5 ms of CPU
    # (Pillow, zlib): two per pool keep two cores busy, and four made each wait for the
    # others (p99 at 200/s 176-201 ms against 126-132 ms, docs/performance.md). A remote
    # backend's calls wait on the network instead: raise it for one.
    ai_concurrency: int = Field(default=2, ge=1, le=256)
    # AI work that waited longer than this since the ledger approved it is failed (and
    # refunded) rather than rendered late; 0: no bound. The AI pool saturates first, and
    # without a bound its backlog grows to the request deadline, which every new AI
    # request then waits behind after an overload (processors/generators/worker.py).
    ai_max_wait_ms: int = Field(default=1_500, ge=0)
    # Fault injection for tests and drills: a query containing this text fails to render.
    fault_injection_query: str = ""

    # Memes AI backend: "offline" (deterministic phrase bank) or an OpenAI-compatible API
    ai_backend: Literal["offline", "openai"] = "offline"
    ai_base_url: str = ""
    ai_model: str = ""
    ai_api_key: SecretStr = SecretStr("")
    ai_max_tokens: int = Field(default=120, ge=16, le=4096)

    # content policy: classifier score at or above which text is blocked
    policy_query_threshold: float = Field(default=0.95, gt=0, le=1)
    policy_caption_threshold: float = Field(default=0.80, gt=0, le=1)

    # usage analytics (processors/usage: a faust worker counting requests per client, hour)
    usage_port: int = Field(default=6066, ge=1, le=65535)
    usage_retention_hours: int = Field(default=168, ge=1, le=24 * 366)

    # image blob store: a local folder under data_dir, or an S3-compatible bucket
    blob_store: Literal["local", "s3"] = "local"
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    # An image is deleted this long after it was last made (0: kept until erased): it
    # shows its caption, a personal request detail (docs/data-retention.md). The
    # sweeper (``maas blobs sweep --loop``) looks every ``image_sweep_interval_s``.
    image_retention_hours: int = Field(default=168, ge=0, le=24 * 3660)
    image_sweep_interval_s: int = Field(default=3600, ge=1)

    @model_validator(mode="after")
    def _check_relationships(self) -> Settings:
        if self.transaction_timeout_ms <= self.commit_interval_ms:
            raise ValueError("transaction_timeout_ms must exceed commit_interval_ms")
        if self.max_poll_interval_ms <= self.transaction_timeout_ms:
            raise ValueError("max_poll_interval_ms must exceed transaction_timeout_ms")
        if self.min_transaction_interval_ms >= self.request_deadline_ms:
            # Every reply of the ledger can wait this long: it must leave time to answer.
            raise ValueError("min_transaction_interval_ms must be below request_deadline_ms")
        if self.api_instance >= self.reply_partitions:
            raise ValueError("api_instance must be below reply_partitions")
        if self.settle_within_ms >= self.request_deadline_ms:
            # A failed meme's client hears of it when the ledger settles it.
            raise ValueError("settle_within_ms must be below request_deadline_ms")
        if self.ai_generator_deadline_ms >= self.request_deadline_ms:
            raise ValueError("ai_generator_deadline_ms must be below request_deadline_ms")
        if self.ai_backend == "openai" and not (self.ai_base_url and self.ai_model):
            raise ValueError("ai_backend=openai needs ai_base_url and ai_model")
        if self.blob_store == "s3" and not self.s3_bucket:
            raise ValueError("blob_store=s3 needs s3_bucket")
        return self

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Read ``MAAS_<FIELD>`` variables; ``KAFKA_BOOTSTRAP_SERVERS`` also names the cluster."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get("KAFKA_BOOTSTRAP_SERVERS"):
            values["bootstrap_servers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
        for name in cls.model_fields:
            key = "MAAS_" + name.upper()
            if key in env:
                values[name] = env[key]
        values.update(overrides)
        ours = frozenset(
            k for k in env if k.startswith("MAAS_") and not k.startswith(TEST_VARIABLE_PREFIX)
        )
        _warn_unknown(ours - _KNOWN_VARIABLES)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(_describe(exc, overrides)) from None

    def require_secrets(self, *names: str) -> None:
        """Refuse to start, outside development mode, with a secret left at its default."""
        if self.dev_mode:
            return
        unset = [
            f"MAAS_{name.upper()}"
            for name in names
            if getattr(self, name).get_secret_value() in ("", _DEVELOPMENT_SECRETS[name])
        ]
        if unset:
            raise SettingsError(
                f"{', '.join(unset)} must be set to a secret of your own; the development "
                "defaults are accepted only with MAAS_DEV_MODE=1 (as ./run sets it)"
            )

    def kafka_common(self) -> dict[str, str | int | float | bool]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            # librdkafka finds a dead broker's successor (a partition's new leader, a
            # transaction's new coordinator) only as often as it retries the dead one, up
            # to this back-off, 10 s by default: a commit just after the coordinator's
            # node died took 12 s with the default, about 4-5 s with 1 s
            # (docs/architecture.md, "a local 3-node cluster for fault tests").
            "reconnect.backoff.max.ms": 1000,
        }


# Read elsewhere: core/logs.py, scripts/bootstrap.sh (the Maven project of the jars), and
# maas/processes.py (the pid of the ``maas up`` a child is to end with).
_OTHER_VARIABLES = {"MAAS_LOG_LEVEL", "MAAS_POM", "MAAS_SUPERVISOR_PID"}
# The test suite's own knobs (a long contract run, a screenshot to keep): not settings.
TEST_VARIABLE_PREFIX = "MAAS_TEST_"
_KNOWN_VARIABLES = frozenset(
    {"MAAS_" + name.upper() for name in Settings.model_fields} | _OTHER_VARIABLES
)


@functools.cache
def _warn_unknown(names: frozenset[str]) -> None:
    """A misspelt variable leaves its setting at the default without a word: name each,
    with the setting it may have meant. A warning, not a refusal: other software uses
    the prefix too. Once per process and set of names."""
    for name in sorted(names):
        close = difflib.get_close_matches(name, _KNOWN_VARIABLES, n=1, cutoff=0.8)
        meant = f"; did you mean {close[0]}?" if close else ""
        log.warning("unknown setting %s is ignored%s", name, meant)


def _describe(error: ValidationError, overrides: Mapping[str, object]) -> str:
    """Each problem as ``MAAS_VARIABLE='value': why``, in the terms the operator set."""
    problems = []
    for problem in error.errors():
        why = str(problem["msg"]).removeprefix("Value error, ")
        if not problem["loc"]:  # two settings that contradict each other
            problems.append(why)
            continue
        field = str(problem["loc"][0])
        name = field if field in overrides else "MAAS_" + field.upper()
        problems.append(f"{name}={problem['input']!r}: {why}")
    return "; ".join(problems)

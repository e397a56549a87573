"""Usage analytics: a faust-streaming worker that counts meme requests per client and hour.

It reads ``<region>.requests``, which the API writes with a plain idempotent producer, so
there are no transactions on it to respect: faust's worker consumer reads
``read_uncommitted`` unless the app runs in faust's own exactly-once mode, which is why
faust reads this topic and never the ledger processor's transactional output
(``docs/architecture.md``). The table ``hourly`` (client id -> ``{hour: requests}``,
``processors.usage.counts``) is keyed like the topic, so each count lives in the partition
of the events it counts; faust keeps it in RocksDB with a changelog topic of its own.

What it counts are request *attempts* as the API appended them: a client retry with the
same Idempotency-Key counts again, and the ledger may still reject the request. Counting
is at least once (a worker killed between its changelog writes and its offset commit
counts the events since that commit again). Billing never reads these numbers: the
ledger is the record of what was charged; this is demand, live, for dashboards.

HTTP (faust's web server, ``MAAS_USAGE_PORT``, default 6066), from this worker's table:

- ``GET /usage/``: requests per hour, the number of clients and the ten busiest;
- ``GET /usage/{client_id}/``: one client's requests per hour.

Both name the ``partitions`` this worker owns: every one, with the single worker that
``maas up`` runs. faust's table routing (``app.table_route``) is not used, because it
finds a key's partition with aiokafka's murmur2 partitioner while the API's producer
(librdkafka) partitions by CRC32: with several workers it would ask the wrong one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust
from pydantic import TypeAdapter, ValidationError

from core.readiness import mark_ready, take_over
from core.settings import Settings
from core.topics import Topics
from processors.usage.counts import add_request, hour_of, summarize
from processors.usage.fetching import Transport
from schemas.events import Id, MemeRequested, parse_input

log = logging.getLogger("maas.usage")

CLIENT_ID = TypeAdapter(Id)  # the events' own contract for ids


def build_app(settings: Settings, host: str = "127.0.0.1") -> faust.App:
    topics = Topics(settings.region)
    data_dir = Path(settings.data_dir) / "usage" / settings.region
    data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.region}.usage",
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        store="rocksdb://",
        datadir=str(data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # Every partition is active on exactly one worker: /usage/ totals then add up
        # across workers without counting a standby's copy twice.
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        # Static membership: a restarted worker takes its partitions back at once instead
        # of waiting for the killed one's session to time out.
        consumer_group_instance_id=f"{settings.region}.usage.{settings.instance_id}",
        web_bind=host,
        web_host=host,
        web_port=settings.usage_port,
    )
    # Before anything asks for the transport (``app.topic`` does): see fetching.py.
    app.transport = Transport(app.conf.broker_consumer, app)
    requests_topic = topics.requests
    requests = app.topic(requests_topic, key_serializer="raw", value_serializer="raw")
    # Keys and values use the app's defaults: raw (the client id) and JSON (the hours).
    hourly = app.Table("hourly", default=dict, partitions=settings.partitions)
    retention_hours = settings.usage_retention_hours

    @app.task
    async def started() -> None:
        mark_ready(settings.ready_file)  # an observer serves once it runs

    @app.agent(requests)
    async def count_requests(stream: faust.StreamT) -> None:
        async for raw in stream:
            try:
                event = parse_input(raw)
            except ValidationError as exc:
                log.error("invalid input on the requests topic error=%s", exc.errors()[:3])
                continue
            if isinstance(event, MemeRequested):
                hourly[event.client_id] = add_request(
                    hourly[event.client_id], hour_of(event.occurred_at_ms), retention_hours
                )

    def owned() -> list[int]:
        return sorted(
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == requests_topic
        )

    @app.page("/usage/")
    async def region_usage(web: Any, request: Any) -> Any:
        summary = summarize(hourly.items())
        return web.json({"region": settings.region, "partitions": owned(), **summary})

    @app.page("/usage/{client_id}/")
    async def client_usage(web: Any, request: Any, client_id: str) -> Any:
        try:
            CLIENT_ID.validate_python(client_id)
        except ValidationError as exc:
            message = exc.errors()[0]["msg"]
            return web.json(
                {"error": "invalid_request", "field": "client_id", "message": message},
                status=422,
            )
        hours = hourly.get(client_id, {})
        return web.json(
            {
                "client_id": client_id,
                "hours": dict(sorted(hours.items())),
                "requests": sum(hours.values()),
                "partitions": owned(),
            }
        )

    return app


def run(settings: Settings, host: str) -> None:
    app = build_app(settings, host)
    take_over(settings.ready_file, settings.predecessor_pid)  # its tables and membership
    log_format = "%(asctime)s level=%(levelname)s process=usage logger=%(name)s %(message)s"
    faust.Worker(
        app,
        loglevel=logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
        logging_config={
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"kv": {"format": log_format}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "kv"}},
            "root": {"handlers": ["stderr"]},
        },
    ).execute_from_commandline()

"""Prometheus metrics of one API process, on a registry of its own.

A registry per app (not the global one) lets tests build several apps in one process.
HTTP metrics are labelled by the route's path *template* (``/v1/requests/{request_id}``)
so that ids never become label values; unmatched paths share the label ``unmatched``.

Ledger counters are counted from the replies this instance receives: they count
answers given to clients. A replayed answer (same ``Idempotency-Key``) counts again;
the exact number of charges is a fold of the ledger topic, not of replies.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.events import RefundReason, RejectReason, Reply

# Buckets around the reply path: a few ms (in-region ledger round trip) to the 5 s deadline.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "maas_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "maas_http_request_duration_seconds",
            "Time from request received to response finished, by route template.",
            ["route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.charges = Counter(
            "maas_charges",
            "Meme requests answered with a meme (the token charge stands), by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "maas_rejections",
            "Meme requests answered as rejected by the ledger, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.waiting = Gauge(
            "maas_ledger_calls_waiting",
            "Ledger calls this API process is waiting on (its in-flight limit: api_max_in_flight).",
            registry=self.registry,
        )
        self.ai_waiting = Gauge(
            "maas_ai_memes_waiting",
            "AI memes this API process is waiting on (their limit: api_max_ai_in_flight).",
            registry=self.registry,
        )
        self.kafka_unreachable = Gauge(
            "maas_kafka_unreachable",
            "1 while no Kafka broker answers this API process (api/outage.py): its calls "
            "are refused at once, 503 kafka_unavailable.",
            registry=self.registry,
        )
        self.overloaded = Counter(
            "maas_overloaded",
            "Requests refused before anything was appended, by the limit reached: 'all' "
            "(api_max_in_flight ledger calls waiting), 'partition' (as many for clients of "
            "one partition: api_max_in_flight_per_partition) or 'ai' (api_max_ai_in_flight "
            "AI memes), answered 503 overloaded; 'client' (as many for one client: "
            "api_max_in_flight_per_client), answered 429 too_many_requests.",
            ["limit"],
            registry=self.registry,
        )
        # Exported at 0 from the start, not from the first refusal.
        for limit in ("all", "partition", "client", "ai"):
            self.overloaded.labels(limit=limit)
        self.refunds = Counter(
            "maas_refunds",
            "Meme requests answered as refunded, by reason.",
            ["reason"],
            registry=self.registry,
        )

    def observe_reply(self, reply: Reply) -> None:
        match reply.outcome:
            case "delivered" | "made":
                self.charges.labels(kind=reply.meme_kind or "unknown").inc()
            case "rejected":
                self.rejections.labels(reason=_reason_name(RejectReason, reply.reason)).inc()
            case "refunded":
                self.refunds.labels(reason=_reason_name(RefundReason, reply.reason)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _reason_name(enum: type[RejectReason] | type[RefundReason], value: int | None) -> str:
    if value is None:
        return "none"
    try:
        return enum(value).name.lower()
    except ValueError:
        return f"unknown_{value}"


class HttpMetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it adds no task or queue per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server sends if the app raises before responding

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # The router writes the matched route into the (shared) scope.
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            labels = str(status)
            self.metrics.http_requests.labels(template, scope["method"], labels).inc()
            self.metrics.http_duration.labels(template, labels).observe(
                time.perf_counter() - started
            )

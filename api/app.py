"""The HTTP API: authenticate, validate, append one event, answer with the ledger's reply.

The API never reads or writes a balance; it is stateless apart from two caches fed by
Kafka (its reply partition and the API-key table), so instances scale out freely,
each with its own ``MAAS_API_INSTANCE`` (= its reply partition).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute

from api import errors, openapi
from api import policy as api_policy
from api.ai_admission import AiAdmission
from api.bridge import KafkaBridge
from api.deps import known_parameters_only
from api.draining import Draining
from api.keys import KeyTable
from api.metrics import HttpMetricsMiddleware, Metrics
from api.routes import audit, billing, health, images, me, memes
from api.routes import console as audit_console
from api.settled import SettledRequests
from api.shedding import MemeShedding
from core.blobstore import make_blob_store
from core.heartbeat import beat
from core.settings import Settings
from memes.formats import ConvertedCache

log = logging.getLogger(__name__)

START_READY_TIMEOUT_S = 15.0  # longest wait for the key table and the reply consumer

DESCRIPTION = """
Memes as a Service. `GET /memes` costs one token and returns a meme; clients subscribed
to **Memes AI** get AI memes.

* **Clients** authenticate with `Authorization: Bearer mk_...`. Retries carry an
  `Idempotency-Key`: the same key never charges twice and returns the first result.
* **Billing** authenticates with its own bearer token and registers clients, credits
  purchases (idempotent by `purchase_id`) and switches Memes AI on and off.
* Every error is an RFC 9457 problem (`application/problem+json`) with a
  machine-readable `error` code; 422 bodies name each invalid field in `fields`.
"""


def create_app(settings: Settings) -> FastAPI:
    settings.require_secrets("billing_token", "auditor_token")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # From the first moment the loop runs: its supervisor kills a silent API.
        heartbeat = (
            asyncio.create_task(beat(settings.heartbeat_file)) if settings.heartbeat_file else None
        )
        # Kafka clients are built here, not at import: importing the app is free.
        bridge = KafkaBridge(settings, metrics)
        keys = KeyTable(settings)
        app.state.bridge = bridge
        app.state.keys = keys
        bridge.start(asyncio.get_running_loop())
        keys.start(asyncio.get_running_loop())
        # The policy model: pay its load at start-up, not on the first request.
        await asyncio.to_thread(api_policy.warm_up)
        # uvicorn listens when this returns. With SO_REUSEPORT the kernel hands new
        # connections to every listening API process, so one still loading its keys or
        # positioning its replies would answer them 503 not_ready while the others could
        # serve. Bounded: with Kafka down it listens anyway, and /readyz says why.
        deadline = asyncio.get_running_loop().time() + START_READY_TIMEOUT_S
        for wait in (keys.wait_loaded, bridge.wait_positioned):
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            if not await asyncio.to_thread(wait, remaining):
                log.warning("api listening before it is ready timeout_s=%s", START_READY_TIMEOUT_S)
                break
        else:
            app.state.started_ready = True  # maas.api_cli says so once it listens
        # What exists now lives as long as the process (the policy model, the app, the
        # Kafka clients). Frozen, a full collection no longer walks it: each one took
        # ~50 ms of CPU here, and under overload stalled the loop for up to 0.5 s.
        gc.freeze()
        log.info(
            "api started region=%s instance=%d bootstrap=%s",
            settings.region,
            settings.api_instance,
            settings.bootstrap_servers,
        )
        try:
            yield
        finally:
            # Blocking joins and a producer flush: off the loop.
            await asyncio.to_thread(bridge.stop)
            await asyncio.to_thread(keys.stop)
            if heartbeat is not None:
                heartbeat.cancel()
            log.info("api stopped region=%s instance=%d", settings.region, settings.api_instance)

    app = FastAPI(
        title="MaaS — Memes as a Service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(known_parameters_only)],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.started_ready = False
    app.state.draining = False  # set by maas.api_cli when the process stops
    # The store the generators write to (local by default), read by the image route.
    app.state.blobs = make_blob_store(settings)
    app.state.converted = ConvertedCache()  # WebP / JPEG renditions, bounded
    app.state.settled = SettledRequests()  # final answers, for idempotent retries
    app.state.ai_admission = AiAdmission(settings.api_max_ai_in_flight, metrics)
    errors.install(app)
    openapi.install(app)
    # Inside the metrics, so that its refusals are counted.
    app.add_middleware(MemeShedding, route=_route_of(memes.router, memes.get_meme))
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.add_middleware(Draining)  # outermost: every answer of a draining process closes
    for module in (memes, me, billing, audit, images, health):
        app.include_router(module.router)
    app.include_router(audit_console.router)  # the auditors' web page, /audit/console
    return app


def _route_of(router: APIRouter, endpoint: Callable[..., Any]) -> APIRoute:
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is endpoint)

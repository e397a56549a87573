"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.deps import AppSettings, Bridge, Keys

router = APIRouter(tags=["operations"])

READINESS_TIMEOUT_S = 5.0


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Kafka reachable, key table loaded, ledger keeping up",
    description="The body names the API instance that answered: several API processes "
    "may share the port, and a start-up waits until each has said it is ready.",
    responses={503: {"description": "Not ready; the body says which check failed"}},
)
async def readyz(bridge: Bridge, keys: Keys, settings: AppSettings) -> JSONResponse:
    # The admin calls block; run them off the loop and bound the whole probe.
    try:
        readiness = await asyncio.wait_for(
            asyncio.to_thread(bridge.readiness), timeout=READINESS_TIMEOUT_S
        )
        ready, checks = readiness.ready, dict(readiness.checks)
    except TimeoutError:
        ready, checks = False, {"kafka": "probe timed out"}
    checks["key_table_loaded"] = keys.loaded
    checks["key_table_clients"] = len(keys)
    ready = ready and keys.loaded
    body = {
        "status": "ready" if ready else "not_ready",
        "api_instance": settings.api_instance,
        "checks": checks,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


# HEAD as well, on these and on images (RFC 9110 asks it of every GET resource; load
# balancers' probes and caches use it; it was 405). Left out of the OpenAPI document,
# where it would be a second operation with the GET's operation id.
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)

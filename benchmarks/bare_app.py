"""The baseline for the HTTP benchmark: ``GET /memes`` with no ledger behind it.

Same framework, same server and settings as ``maas api`` (FastAPI under ``uvicorn.run``,
one process, no access log), the same query parameters with the same validation, and a
constant JSON body of the same shape as the real answer. No authentication, no Kafka,
no meme. What the service costs beyond this is the price of the ledger path.

Run: ``python benchmarks/bare_app.py --port 8001``
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any

from fastapi import FastAPI, Query

MEME: dict[str, Any] = {
    "request_id": "0" * 32,
    "meme_id": "1" * 32,
    "caption": "when the benchmark has no ledger behind it",
    "template": "drake",
    "kind": "standard",
    "image_url": "/v1/images/" + "2" * 64 + ".png",
    "tokens_charged": 1,
    "balance_after": 999_999,
}

app = FastAPI(title="bare /memes baseline")


@app.get("/memes")
async def memes(
    lat: Annotated[float, Query(ge=-90, le=90)],
    lon: Annotated[float, Query(ge=-180, le=180)],
    query: Annotated[str, Query(min_length=1, max_length=200)],
) -> dict[str, Any]:
    return MEME


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    import uvicorn

    from core.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_keep_alive=Settings().api_keep_alive_s,
    )


if __name__ == "__main__":
    main()

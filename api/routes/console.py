"""The audit console: a static page for auditors, served by the API.

The page itself is public (it holds no data); every data call it makes goes to the
auditor routes (``api.routes.audit``) with the auditor token the user types in, which
the browser keeps in ``sessionStorage``. For scripted use the page also reads
``#token=...&client=...`` from the URL fragment (never sent to the server).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from api.errors import NotFound

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
# The page loads only its own script and stylesheet and talks only to this origin.
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}

router = APIRouter(tags=["audit console"], include_in_schema=False)


@router.get("/audit/console")
async def console_page() -> FileResponse:
    return FileResponse(
        CONSOLE_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS
    )


@router.get("/audit/console/")
async def console_slash() -> RedirectResponse:
    return RedirectResponse("/audit/console", status_code=308)


@router.get("/audit/console/{name}")
async def console_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound("no such console file")
    return FileResponse(CONSOLE_DIR / name, media_type=media_type, headers=HEADERS)

"""``GET /v1/images/{key}``: meme images from the content-addressed blob store.

A key is the sha256 of the image's bytes, so the content behind a key never changes:
it may be cached until the image's retention ends (``core.blobstore.cache_control``),
and the key itself is a perfect ETag. An image goes when it is erased or its retention
ends (``maas blobs sweep``); a conversion this process keeps in memory goes with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response

from api.deps import AppSettings, Blobs
from api.errors import ImageStoreUnavailable, NotFound
from core.blobstore import cache_control
from memes.formats import PNG, ConvertedCache, etag_for, negotiate

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/images", tags=["memes"])

IMAGE_KEY_PATTERN = r"^[0-9a-f]{64}\.png$"


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against a list like ``"a", W/"b"`` or ``*``."""
    if if_none_match is None:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        candidate = candidate.removeprefix("W/")
        if candidate.strip('"') == etag:
            return True
    return False


@router.get(
    "/{key}",
    response_class=Response,
    summary="A meme image (PNG), cacheable until its retention ends",
    responses={
        200: {"content": {"image/png": {}}, "description": "The image"},
        304: {"description": "Not modified (If-None-Match)"},
        404: {"description": "No such image: erased, past its retention, or never made"},
        503: {"description": "`image_store_unavailable`: the store did not answer; retry"},
    },
)
async def get_image(
    request: Request,
    blobs: Blobs,
    settings: AppSettings,
    key: Annotated[str, Path(pattern=IMAGE_KEY_PATTERN, description="`<sha256>.png`")],
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    accept: Annotated[str | None, Header(alias="Accept")] = None,
) -> Response:
    """PNG by default; WebP or JPEG when the Accept header prefers them."""
    media_type = negotiate(accept)
    etag = etag_for(key, media_type)
    headers = {
        "ETag": f'"{etag}"',
        "Cache-Control": cache_control(settings.image_retention_hours),
        "Vary": "Accept",
    }
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    converted: ConvertedCache = request.app.state.converted

    def read() -> bytes:
        if media_type != PNG and key not in blobs:  # erased or swept since it was converted
            converted.forget(key)
            raise KeyError(key)
        return converted.get(key, media_type, blobs.get)

    try:
        # A file read and maybe a conversion: keep them off the event loop.
        data = await asyncio.to_thread(read)
    except KeyError:
        retention = settings.image_retention_hours
        kept = f"{retention} hours after it was last made" if retention else "until erased"
        raise NotFound(f"no such image (an image is kept {kept})", key=key) from None
    except OSError as exc:  # the store's failure (core.blobstore), not the image's absence
        log.warning("image store unavailable key=%s error=%s", key, exc)
        raise ImageStoreUnavailable("the image store did not answer; try again") from exc
    return Response(data, media_type=media_type, headers=headers)


# HEAD as well: see api.routes.health.
router.add_api_route("/{key}", get_image, methods=["HEAD"], include_in_schema=False)

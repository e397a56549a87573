"""Caption text: a template's patterns filled with the query and the place, and the
offline AI backend's phrase bank. Pure: the same inputs always give the same words.
"""

from __future__ import annotations

import math
import unicodedata

from memes.matching import choose_template, stable_hash
from memes.place import Place, locate
from memes.templates import Template

# A query may be up to schemas.events.MAX_QUERY_CHARS long; a caption slot has room for
# fewer characters at a readable size, so a long query is cut here, with an ellipsis.
CAPTION_QUERY_CHARS = 120
ELLIPSIS = "\u2026"


def _clean_query(query: str) -> str:
    # Control characters would leak into event payloads; format chars (ZWJ) stay so
    # emoji sequences survive in the stored caption.
    visible = "".join(c for c in query if c.isspace() or unicodedata.category(c) != "Cc")
    text = " ".join(visible.split())
    if len(text) > CAPTION_QUERY_CHARS:
        text = text[: CAPTION_QUERY_CHARS - 1].rstrip() + ELLIPSIS
    return text or "a meme"


def format_coordinates(lat: float, lon: float) -> str:
    """ "40.73°N 73.94°W"; raises ValueError for impossible coordinates."""
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        raise ValueError(f"invalid coordinates: lat={lat!r} lon={lon!r}")
    # Hemisphere from the *rounded* value so -0.001 prints as 0.00°N, not 0.00°S.
    ns = "S" if round(lat, 2) < 0 else "N"
    ew = "W" if round(lon, 2) < 0 else "E"
    return f"{abs(lat):.2f}\u00b0{ns} {abs(lon):.2f}\u00b0{ew}"


def fill_caption(pattern: str, query: str, place: Place) -> str:
    """Fill one of a template's caption patterns; the result is upper case.

    The query keeps its original Unicode (it is stored as metadata); glyphs the bundled
    font lacks are only substituted when drawing.
    """
    text = pattern.format(query=_clean_query(query), place=place.label, at=place.phrase)
    return " ".join(text.split()).upper()


def caption_for(
    query: str, lat: float, lon: float, template: Template | None = None
) -> tuple[str, str]:
    """The standard meme's (top, bottom) caption: the template's patterns, filled."""
    format_coordinates(lat, lon)  # validates
    template = template or choose_template(query)
    place = locate(lat, lon)
    top, bottom = template.caption
    return fill_caption(top, query, place), fill_caption(bottom, query, place)


_AI_TOP_PHRASES = (
    "nobody: ... me: {query}",
    "pov: you just discovered {query}",
    "{query}? in this economy?",
    "me, pretending i don't need {query}",
    "they said i couldn't have {query}",
    "my brain at 3 am: {query}",
    "tell me you want {query} without telling me",
    "scientists baffled by {query}",
)
_AI_BOTTOM_PHRASES = (
    "spotted {at}",
    "live {at}",
    "the prophecy says: {place}",
    "coordinates locked: {place}",
    "somewhere {at}",
)


def offline_ai_caption(request_id: str, query: str, lat: float, lon: float) -> tuple[str, str]:
    """The offline AI backend's caption: a small phrase bank, picked by request id."""
    format_coordinates(lat, lon)  # validates
    seed = stable_hash(f"caption\0{request_id}\0{query}")
    top = _AI_TOP_PHRASES[seed % len(_AI_TOP_PHRASES)]
    bottom = _AI_BOTTOM_PHRASES[(seed >> 16) % len(_AI_BOTTOM_PHRASES)]
    place = locate(lat, lon)
    return fill_caption(top, query, place), fill_caption(bottom, query, place)


def clean_ai_caption(text: str, limit: int = 2 * CAPTION_QUERY_CHARS) -> str:
    """Make model output safe to draw and store: no control characters, bounded, upper."""
    visible = "".join(c for c in text if c.isspace() or unicodedata.category(c) != "Cc")
    text = " ".join(visible.split()).upper()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + ELLIPSIS
    return text

"""The meme template model: a layout's caption slots, tags and painted background.

The project ships no third-party artwork (licensing, repo size): every template's
background is drawn by a painter function (``memes/painters/``) as a recognisable
caricature of a classic meme layout, and its ``license`` field says so. Backgrounds are
painted once per (template, size) and cached; callers get a copy. The one third-party
asset, the caption font, sits in ``assets/`` with its licence next to it
(``assets/LICENSES.md``). The templates themselves are listed in ``memes/catalog.py``;
``memes/matching.py`` picks one for a query.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

BASE_SIZE = 512
"""Painters, caption boxes and slots are all expressed in this coordinate space."""

ASSETS_DIR = Path(__file__).with_name("assets")
FONT_PATH = ASSETS_DIR / "DejaVuSans-Bold.ttf"

DRAWN_HERE = (
    "drawn in code by this project (memes/painters/); "
    "no third-party artwork; same terms as the project's source"
)

Role = Literal["top", "bottom", "fixed"]
VAlign = Literal["top", "middle", "bottom"]
Case = Literal["upper", "mocking"]
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Box:
    """Axis-aligned rectangle in BASE_SIZE pixel coordinates (x1/y1 exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


@dataclass(frozen=True)
class Slot:
    """Where one caption line goes.

    `role` says which caption feeds the slot: the top or bottom caption, or `text`
    itself for panels whose words are part of the joke (e.g. the middle brains).
    `case` is how its letters are drawn: upper case, or aLtErNaTiNg for the mocking meme.
    """

    box: Box
    role: Role
    valign: VAlign = "middle"
    text: str = ""
    case: Case = "upper"


DEFAULT_CAPTION = ("when you want {query}", "{at}")


@dataclass(frozen=True)
class Template:
    """One meme layout.

    ``caption`` holds the top and bottom caption patterns of a standard meme. They may
    use ``{query}`` (the client's query), ``{place}`` ("Paris, France", or "the middle
    of nowhere" far from any town) and ``{at}`` (the place with its preposition: "in
    Paris, France", "near Hvolsvöllur, Iceland", "in the middle of nowhere").
    ``description`` tells an AI caption writer what the picture shows.
    """

    name: str
    names: frozenset[str]
    tags: frozenset[str]
    slots: tuple[Slot, ...]
    painter: Callable[[], Image.Image] = field(repr=False)
    caption: tuple[str, str] = DEFAULT_CAPTION
    description: str = ""
    license: str = DRAWN_HERE
    # Where the "ai" kind puts its badge: a spot no caption slot of this template covers.
    badge_center: tuple[int, int] = (BASE_SIZE - 50, BASE_SIZE // 2)

    def draw(self, size: int = BASE_SIZE) -> Image.Image:
        """Return a fresh RGB copy of the background, so callers may draw on it."""
        return _painted(self, size).copy()


@functools.lru_cache(maxsize=128)
def _painted(template: Template, size: int) -> Image.Image:
    image = template.painter()
    if size != BASE_SIZE:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


TOP_BOX = Box(12, 8, 500, 124)

BOTTOM_BOX = Box(12, 388, 500, 504)

CLASSIC_SLOTS = (Slot(TOP_BOX, "top", "top"), Slot(BOTTOM_BOX, "bottom", "bottom"))

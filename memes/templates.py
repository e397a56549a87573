"""The meme template catalog: images drawn with Pillow primitives, caption slots, tags,
and the scoring that picks a template for a query.

The project ships no third-party artwork (licensing, repo size): every template is a
small painter function below that draws a recognisable caricature of a classic meme
layout, and its ``license`` field says so. Backgrounds are painted once per (template,
size) and cached; callers get a copy. The one third-party asset, the caption font, sits
in ``assets/`` with its licence next to it (``assets/LICENSES.md``).

Choosing a template (``match`` explains a choice, ``choose_template`` makes it):

1. The query is casefolded, accents are stripped ("Café" -> "cafe") and it is split
   into ASCII letter/digit words; repeated words count once.
2. A word scores against a template if it, or its singular ("memes" -> "meme",
   "parties" -> "party"), is one of the template's words: ``NAME_WEIGHT`` (3) if it
   names the meme itself ("drake", "stonks", "doge"), ``TAG_WEIGHT`` (1) if it is one of
   its tags, the situations the meme is used for ("prefer", "money", "plan").
3. The highest total wins. Ties, including the common "nothing matched" case where
   every template scores 0, are broken by sha256 of the normalised query modulo the
   number of tied templates (in catalog order): the same query always gets the same
   template, different queries spread over the catalog. Python's ``hash()`` is not
   used: it is salted per process.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw, ImageOps

BASE_SIZE = 512
"""Painters, caption boxes and slots are all expressed in this coordinate space."""

ASSETS_DIR = Path(__file__).with_name("assets")
FONT_PATH = ASSETS_DIR / "DejaVuSans-Bold.ttf"

DRAWN_HERE = (
    "drawn in code by this project (memes/templates.py); "
    "no third-party artwork; same terms as the project's source"
)

NAME_WEIGHT = 3
TAG_WEIGHT = 1

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


# --- choosing a template ---------------------------------------------------------------

_WORD_RE = re.compile(r"[a-z0-9]+")


def tokenize(query: str) -> list[str]:
    """Lowercase ASCII-alphanumeric words; accents are folded so "Café" -> "cafe"."""
    folded = unicodedata.normalize("NFKD", query.casefold())
    return _WORD_RE.findall(folded)


def word_forms(word: str) -> tuple[str, ...]:
    """The word and its singular: a cheap plural folding, no stemmer needed."""
    if len(word) > 4 and word.endswith("ies"):
        return word, word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word, word[:-1]
    return (word,)


@dataclass(frozen=True)
class TemplateMatch:
    """How a template scored for a query, and which query words earned the points."""

    template: Template
    score: int
    matched: tuple[str, ...]

    def explain(self) -> str:
        return f"{self.template.name}={self.score} ({' '.join(self.matched) or '-'})"


def _weights_by_word() -> dict[str, dict[int, int]]:
    """word -> {template index: weight}, built once: scoring a query then costs a few
    dictionary lookups per word instead of a pass over every template's word sets."""
    index: dict[str, dict[int, int]] = {}
    for i, template in enumerate(TEMPLATES):
        for words, weight in ((template.tags, TAG_WEIGHT), (template.names, NAME_WEIGHT)):
            for word in words:
                slot = index.setdefault(word, {})
                slot[i] = max(slot.get(i, 0), weight)
    return index


@functools.lru_cache(maxsize=4096)
def match(query: str) -> tuple[TemplateMatch, ...]:
    """Every template's score for the query, in catalog order (see module docstring)."""
    scores = [0] * len(TEMPLATES)
    matched: list[list[str]] = [[] for _ in TEMPLATES]
    for word in dict.fromkeys(tokenize(query)):  # distinct, first-seen order
        best: dict[int, int] = {}
        for form in word_forms(word):
            for i, weight in _WORD_INDEX.get(form, {}).items():
                best[i] = max(best.get(i, 0), weight)
        for i, weight in best.items():
            scores[i] += weight
            matched[i].append(word)
    return tuple(TemplateMatch(t, scores[i], tuple(matched[i])) for i, t in enumerate(TEMPLATES))


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


@functools.lru_cache(maxsize=4096)
def choose_template(query: str) -> Template:
    """The best-scoring template; ties broken by a stable hash of the query."""
    matches = match(query)
    best = max(m.score for m in matches)
    tied = [m.template for m in matches if m.score == best]
    return tied[stable_hash(" ".join(tokenize(query))) % len(tied)]


def explain(query: str, top: int = 3) -> str:
    """ "stonks=4 (stonks money) drake=3 (drake) ..." - the best few, for logs and docs."""
    ranked = sorted(match(query), key=lambda m: -m.score)[:top]
    return " ".join(m.explain() for m in ranked)


# --- drawing helpers -------------------------------------------------------------------

TOP_BOX = Box(12, 8, 500, 124)
BOTTOM_BOX = Box(12, 388, 500, 504)
CLASSIC_SLOTS = (Slot(TOP_BOX, "top", "top"), Slot(BOTTOM_BOX, "bottom", "bottom"))


def vertical_gradient(top: RGB, bottom: RGB, size: int = BASE_SIZE) -> Image.Image:
    # colorize on Pillow's built-in ramp is C code: far faster than per-row drawing.
    ramp = Image.linear_gradient("L").resize((size, size), Image.Resampling.BILINEAR)
    return ImageOps.colorize(ramp, top, bottom).convert("RGB")


def _stick_figure(
    draw: ImageDraw.ImageDraw,
    x: int,
    y: int,
    shirt: RGB,
    skin: RGB = (241, 194, 150),
    head_dx: int = 0,
) -> None:
    """Cartoon person standing with feet at (x, y); head_dx turns the head sideways."""
    draw.line([(x - 18, y), (x - 8, y - 90)], fill=(40, 40, 60), width=12)
    draw.line([(x + 18, y), (x + 8, y - 90)], fill=(40, 40, 60), width=12)
    draw.rounded_rectangle([x - 30, y - 190, x + 30, y - 85], radius=18, fill=shirt)
    draw.line([(x - 28, y - 180), (x - 45, y - 110)], fill=shirt, width=14)
    draw.line([(x + 28, y - 180), (x + 45, y - 110)], fill=shirt, width=14)
    hx = x + head_dx
    draw.ellipse([hx - 26, y - 250, hx + 26, y - 196], fill=skin, outline=(90, 60, 40), width=2)
    eye_x = hx + (10 if head_dx >= 0 else -10)
    draw.ellipse([eye_x - 4, y - 230, eye_x + 4, y - 222], fill=(20, 20, 20))


def _face(draw: ImageDraw.ImageDraw, cx: int, cy: int, r: int, mood: str) -> None:
    draw.ellipse(
        [cx - r, cy - r, cx + r, cy + r], fill=(176, 120, 84), outline=(60, 40, 30), width=3
    )
    draw.arc([cx - r, cy - r - 6, cx + r, cy + r // 2], 180, 360, fill=(30, 25, 20), width=10)
    for ex in (cx - r // 3, cx + r // 3):
        draw.ellipse([ex - 6, cy - 14, ex + 6, cy - 2], fill=(25, 20, 15))
    if mood == "no":
        draw.arc([cx - 22, cy + 18, cx + 22, cy + 44], 200, 340, fill=(60, 20, 20), width=5)
    else:
        draw.arc([cx - 26, cy + 4, cx + 26, cy + 36], 20, 160, fill=(60, 20, 20), width=5)


# --- painters --------------------------------------------------------------------------


def _paint_distracted() -> Image.Image:
    image = vertical_gradient((120, 180, 235), (225, 240, 250))
    draw = ImageDraw.Draw(image)
    for i, shade in enumerate((170, 150, 185, 160, 175)):
        x = i * 104
        draw.rectangle([x, 150 + (i % 2) * 40, x + 96, 330], fill=(shade, shade - 10, shade - 25))
        for wy in range(170 + (i % 2) * 40, 320, 30):
            draw.rectangle([x + 14, wy, x + 34, wy + 16], fill=(250, 235, 170))
            draw.rectangle([x + 60, wy, x + 80, wy + 16], fill=(250, 235, 170))
    draw.rectangle([0, 330, BASE_SIZE, BASE_SIZE], fill=(120, 120, 128))
    draw.line([(0, 430), (BASE_SIZE, 430)], fill=(235, 235, 235), width=4)
    _stick_figure(draw, 110, 400, shirt=(210, 40, 50), head_dx=-6)
    _stick_figure(draw, 270, 410, shirt=(70, 110, 200), head_dx=-14)
    _stick_figure(draw, 410, 405, shirt=(40, 160, 170), head_dx=-4)
    # The angry eyebrow sells "girlfriend is not amused".
    draw.line([(398, 176), (414, 182)], fill=(20, 20, 20), width=3)
    return image


def _paint_drake() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (250, 248, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 255, 255], fill=(245, 170, 60))
    draw.rectangle([0, 256, 255, BASE_SIZE], fill=(250, 200, 80))
    _face(draw, 130, 120, 58, "no")
    draw.rounded_rectangle(
        [40, 60, 100, 160], radius=20, fill=(176, 120, 84), outline=(60, 40, 30), width=3
    )
    draw.polygon([(60, 170), (200, 170), (230, 255), (40, 255)], fill=(230, 110, 30))
    _face(draw, 120, 376, 58, "yes")
    draw.line([(170, 430), (235, 380)], fill=(176, 120, 84), width=16)
    draw.polygon([(50, 426), (190, 426), (220, 512), (30, 512)], fill=(230, 110, 30))
    draw.line([(256, 0), (256, BASE_SIZE)], fill=(40, 40, 40), width=4)
    draw.line([(0, 256), (BASE_SIZE, 256)], fill=(40, 40, 40), width=4)
    return image


def _paint_brain() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for row in range(4):
        y0 = row * 128
        glow = 40 + row * 60
        draw.rectangle([256, y0, BASE_SIZE, y0 + 127], fill=(glow // 3, glow // 3, glow))
        cx, cy = 384, y0 + 64
        # The head stays the same; the brain and its halo grow with each panel.
        for ring in range(row + 1):
            radius = 20 + row * 10 + ring * 10
            shade = min(255, 120 + row * 40 + ring * 20)
            draw.ellipse(
                [cx - radius, cy - radius, cx + radius, cy + radius],
                outline=(shade, shade, 255),
                width=3,
            )
        draw.ellipse([cx - 40, cy - 46, cx + 40, cy + 46], fill=(220, 180, 150))
        brain_r = 10 + row * 9
        draw.ellipse(
            [cx - brain_r, cy - 30 - brain_r // 2, cx + brain_r, cy - 30 + brain_r // 2 + 6],
            fill=(255, 150 + row * 25, 190),
        )
        draw.line([(0, y0 + 127), (BASE_SIZE, y0 + 127)], fill=(30, 30, 30), width=3)
    draw.line([(256, 0), (256, BASE_SIZE)], fill=(30, 30, 30), width=3)
    return image


def _flame(
    draw: ImageDraw.ImageDraw, x: int, base: int, height: int, width: int, rng: random.Random
) -> None:
    for scale, colour in ((1.0, (220, 40, 20)), (0.7, (250, 130, 20)), (0.4, (255, 220, 60))):
        h, w = int(height * scale), int(width * scale)
        tip = x + rng.randint(-w // 3, w // 3)
        draw.polygon([(x - w // 2, base), (tip, base - h), (x + w // 2, base)], fill=colour)


def _paint_this_is_fine() -> Image.Image:
    image = vertical_gradient((250, 180, 90), (200, 90, 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 360, BASE_SIZE, BASE_SIZE], fill=(150, 80, 50))
    draw.ellipse([40, 0, 260, 80], fill=(90, 80, 80))
    draw.ellipse([220, 10, 470, 100], fill=(110, 95, 95))
    draw.rectangle([290, 300, 470, 320], fill=(120, 70, 40))
    draw.line([(310, 320), (310, 380)], fill=(120, 70, 40), width=8)
    draw.line([(450, 320), (450, 380)], fill=(120, 70, 40), width=8)
    draw.rounded_rectangle([380, 270, 406, 300], radius=4, fill=(250, 250, 250))
    draw.arc([398, 276, 416, 294], 270, 90, fill=(250, 250, 250), width=4)
    draw.rounded_rectangle([210, 250, 300, 370], radius=28, fill=(215, 160, 60))
    draw.ellipse([200, 170, 300, 262], fill=(225, 170, 70), outline=(120, 80, 30), width=3)
    draw.rectangle([215, 140, 285, 185], fill=(60, 40, 30))
    draw.rectangle([195, 180, 305, 190], fill=(60, 40, 30))
    for ex in (232, 270):
        draw.ellipse([ex - 8, 200, ex + 8, 216], fill=(255, 255, 255))
        draw.ellipse([ex - 3, 205, ex + 3, 212], fill=(20, 20, 20))
    draw.arc([230, 215, 275, 240], 20, 160, fill=(60, 30, 20), width=3)
    # Fixed seed: jagged flames must look identical on every render.
    rng = random.Random(1337)
    for x in range(0, BASE_SIZE + 40, 46):
        _flame(draw, x, BASE_SIZE, rng.randint(90, 170), 70, rng)
    for y in range(140, 380, 60):
        _flame(draw, 20, y + 60, 90, 50, rng)
    return image


def _paint_success_kid() -> Image.Image:
    image = vertical_gradient((110, 190, 240), (250, 245, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 300, BASE_SIZE, BASE_SIZE], fill=(235, 210, 150))
    draw.polygon([(0, 300), (BASE_SIZE, 280), (BASE_SIZE, 300)], fill=(70, 140, 200))
    draw.rounded_rectangle([170, 330, 350, BASE_SIZE], radius=40, fill=(80, 140, 90))
    draw.ellipse([150, 140, 370, 360], fill=(245, 205, 170), outline=(150, 100, 70), width=3)
    draw.line([(350, 380), (420, 250)], fill=(245, 205, 170), width=34)
    draw.ellipse([395, 200, 455, 262], fill=(245, 205, 170), outline=(150, 100, 70), width=3)
    for sx, sy in ((410, 230), (428, 215), (436, 240), (215, 300), (300, 310)):
        draw.ellipse([sx - 3, sy - 3, sx + 3, sy + 3], fill=(200, 170, 110))
    draw.line([(200, 220), (240, 232)], fill=(60, 40, 30), width=5)
    draw.line([(320, 220), (280, 232)], fill=(60, 40, 30), width=5)
    draw.ellipse([215, 238, 235, 256], fill=(40, 30, 20))
    draw.ellipse([285, 238, 305, 256], fill=(40, 30, 20))
    draw.chord([225, 275, 300, 320], 0, 180, fill=(120, 40, 40))
    return image


def _paint_stonks() -> Image.Image:
    image = vertical_gradient((10, 20, 60), (20, 60, 120))
    draw = ImageDraw.Draw(image)
    for g in range(0, BASE_SIZE, 32):
        draw.line([(g, 0), (g, BASE_SIZE)], fill=(40, 80, 140), width=1)
        draw.line([(0, g), (BASE_SIZE, g)], fill=(40, 80, 140), width=1)
    rng = random.Random(4242)
    price = 360
    for x in range(40, 480, 28):
        move = rng.randint(-30, 18)
        colour = (40, 200, 90) if move < 0 else (220, 60, 60)
        top, bottom = sorted((price, price + move))
        draw.line([(x + 8, top - 12), (x + 8, bottom + 12)], fill=colour, width=2)
        draw.rectangle([x, top, x + 16, max(bottom, top + 3)], fill=colour)
        price += move
    draw.line([(40, 360), (200, 300), (260, 330), (440, 170)], fill=(60, 240, 110), width=12)
    draw.polygon([(470, 140), (420, 160), (455, 200)], fill=(60, 240, 110))
    draw.ellipse([60, 230, 150, 320], fill=(240, 240, 240))
    draw.rectangle([50, 320, 160, 400], fill=(30, 30, 40))
    draw.polygon([(95, 320), (115, 320), (105, 360)], fill=(200, 30, 30))
    return image


def _paint_two_buttons() -> Image.Image:
    image = vertical_gradient((230, 230, 235), (170, 170, 185))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle(
        [60, 140, 452, 330], radius=24, fill=(90, 90, 100), outline=(40, 40, 50), width=4
    )
    for cx in (160, 352):
        draw.ellipse([cx - 70, 185, cx + 70, 295], fill=(120, 10, 10))
        draw.ellipse([cx - 62, 172, cx + 62, 270], fill=(230, 40, 40))
        draw.ellipse([cx - 35, 190, cx + 5, 215], fill=(250, 120, 120))
    draw.ellipse([216, 320, 296, 400], fill=(245, 205, 170), outline=(120, 80, 60), width=3)
    for drop_x, drop_y in ((205, 330), (300, 345), (214, 370)):
        draw.polygon(
            [(drop_x, drop_y - 14), (drop_x - 7, drop_y), (drop_x + 7, drop_y)],
            fill=(120, 190, 250),
        )
        draw.ellipse([drop_x - 7, drop_y - 6, drop_x + 7, drop_y + 8], fill=(120, 190, 250))
    draw.line([(236, 350), (248, 354)], fill=(30, 30, 30), width=3)
    draw.line([(276, 350), (264, 354)], fill=(30, 30, 30), width=3)
    draw.arc([236, 365, 276, 392], 200, 340, fill=(80, 30, 30), width=3)
    return image


def _paint_surprised() -> Image.Image:
    image = vertical_gradient((250, 230, 120), (240, 180, 60))
    draw = ImageDraw.Draw(image)
    draw.polygon([(130, 240), (60, 70), (190, 170)], fill=(250, 215, 40))
    draw.polygon([(60, 70), (85, 130), (105, 100)], fill=(30, 30, 30))
    draw.polygon([(382, 240), (452, 70), (322, 170)], fill=(250, 215, 40))
    draw.polygon([(452, 70), (427, 130), (407, 100)], fill=(30, 30, 30))
    draw.ellipse([106, 130, 406, 430], fill=(252, 222, 50), outline=(150, 110, 20), width=4)
    for ex in (196, 316):
        draw.ellipse([ex - 28, 220, ex + 28, 276], fill=(25, 25, 25))
        draw.ellipse([ex - 14, 228, ex + 2, 244], fill=(255, 255, 255))
    draw.ellipse([130, 300, 190, 350], fill=(230, 60, 50))
    draw.ellipse([322, 300, 382, 350], fill=(230, 60, 50))
    draw.ellipse([236, 300, 276, 352], fill=(120, 30, 30))
    return image


def _paint_change_my_mind() -> Image.Image:
    image = vertical_gradient((150, 200, 240), (100, 170, 90))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 260, BASE_SIZE, BASE_SIZE], fill=(95, 160, 80))
    draw.rectangle([370, 80, 470, 270], fill=(180, 150, 120))
    _stick_figure(draw, 420, 300, shirt=(60, 90, 140))
    draw.ellipse([393, 36, 447, 60], fill=(40, 30, 30))
    draw.polygon([(110, 260), (470, 260), (500, 300), (80, 300)], fill=(140, 90, 50))
    draw.rectangle([100, 300, 112, 420], fill=(110, 70, 40))
    draw.rectangle([468, 300, 480, 420], fill=(110, 70, 40))
    draw.rounded_rectangle(
        [40, 290, 472, 400], radius=6, fill=(245, 245, 240), outline=(90, 90, 90), width=3
    )
    draw.rectangle([300, 240, 330, 262], fill=(200, 120, 60))
    return image


def _paint_crying_cat() -> Image.Image:
    image = vertical_gradient((90, 80, 140), (40, 30, 70))
    draw = ImageDraw.Draw(image)
    draw.polygon([(140, 210), (150, 90), (230, 160)], fill=(200, 200, 205))
    draw.polygon([(372, 210), (362, 90), (282, 160)], fill=(200, 200, 205))
    draw.ellipse([116, 140, 396, 400], fill=(215, 215, 220), outline=(120, 120, 130), width=3)
    for ex in (200, 312):
        draw.ellipse([ex - 38, 210, ex + 38, 286], fill=(40, 40, 60))
        draw.ellipse([ex - 26, 218, ex + 8, 252], fill=(250, 250, 255))
        draw.ellipse([ex + 10, 256, ex + 24, 270], fill=(250, 250, 255))
        draw.line([(ex, 286), (ex - 6, 390)], fill=(140, 200, 250), width=10)
    draw.polygon([(246, 300), (266, 300), (256, 312)], fill=(230, 140, 160))
    draw.arc([226, 312, 286, 342], 200, 340, fill=(60, 60, 70), width=3)
    for side in (-1, 1):
        for dy in (-10, 4, 18):
            draw.line(
                [(256 + side * 40, 312 + dy // 2), (256 + side * 130, 300 + dy)],
                fill=(80, 80, 90),
                width=2,
            )
    return image


def _paint_galaxy_think() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (8, 6, 30))
    draw = ImageDraw.Draw(image)
    rng = random.Random(9001)
    for _ in range(160):
        x, y, r = rng.randrange(BASE_SIZE), rng.randrange(BASE_SIZE), rng.choice((1, 1, 2))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 230))
    for step in range(10):
        angle = step * 0.6
        x = 256 + int(math.cos(angle) * (20 + step * 14))
        y = 256 + int(math.sin(angle) * (12 + step * 8))
        r = 40 - step * 3
        draw.ellipse(
            [x - r, y - r // 2, x + r, y + r // 2], fill=(120 + step * 12, 60, 200 - step * 8)
        )
    draw.ellipse([226, 236, 286, 276], fill=(255, 240, 200))
    return image


# --- painters added for the 30-template catalog ----------------------------------------


def _cartoon_head(
    draw: ImageDraw.ImageDraw,
    cx: int,
    cy: int,
    r: int,
    skin: RGB = (241, 194, 150),
    hair: RGB | None = (70, 50, 35),
    eyes: str = "open",
    mouth: str = "smile",
) -> None:
    """A round cartoon face; `eyes` and `mouth` pick the expression."""
    if hair is not None:
        draw.ellipse([cx - r - 4, cy - r - 8, cx + r + 4, cy + r // 3], fill=hair)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=skin, outline=(90, 60, 40), width=3)
    ex, ey, er = r // 3, cy - r // 6, max(3, r // 9)
    for x in (cx - ex, cx + ex):
        if eyes == "closed":
            draw.arc(
                [x - er * 2, ey - er, x + er * 2, ey + er * 2], 200, 340, fill=(30, 20, 20), width=3
            )
        elif eyes == "side":
            draw.ellipse([x - er * 2, ey - er, x + er * 2, ey + er], fill=(255, 255, 255))
            draw.ellipse([x + er // 2, ey - er, x + er * 2, ey + er], fill=(25, 20, 15))
        else:
            draw.ellipse([x - er, ey - er, x + er, ey + er], fill=(25, 20, 15))
    my, mw = cy + r // 3, r // 2
    if mouth == "smile":
        draw.arc(
            [cx - mw, my - mw // 2, cx + mw, my + mw // 2], 20, 160, fill=(90, 30, 30), width=4
        )
    elif mouth == "frown":
        draw.arc([cx - mw, my, cx + mw, my + mw], 200, 340, fill=(90, 30, 30), width=4)
    elif mouth == "open":
        draw.ellipse([cx - mw // 2, my - mw // 3, cx + mw // 2, my + mw // 2], fill=(110, 30, 30))
    elif mouth == "flat":
        draw.line([(cx - mw // 2, my + 4), (cx + mw // 2, my + 4)], fill=(90, 30, 30), width=4)
    elif mouth == "smirk":
        draw.arc(
            [cx - mw // 3, my - mw // 3, cx + mw, my + mw // 3], 10, 120, fill=(90, 30, 30), width=4
        )


def _dog_face(draw: ImageDraw.ImageDraw, cx: int, cy: int, r: int, fur: RGB, eyes: str) -> None:
    """Shiba-style head: pointed ears, pale muzzle, small nose."""
    pale = (250, 240, 220)
    draw.polygon(
        [(cx - r, cy - r // 3), (cx - r + r // 5, cy - r - r // 2), (cx - r // 4, cy - r + 4)],
        fill=fur,
    )
    draw.polygon(
        [(cx + r, cy - r // 3), (cx + r - r // 5, cy - r - r // 2), (cx + r // 4, cy - r + 4)],
        fill=fur,
    )
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur, outline=(120, 80, 40), width=3)
    draw.ellipse([cx - r * 2 // 3, cy, cx + r * 2 // 3, cy + r - 4], fill=pale)
    for x in (cx - r // 3, cx + r // 3):
        if eyes == "side":
            draw.ellipse([x - 12, cy - r // 4 - 8, x + 12, cy - r // 4 + 8], fill=(255, 255, 255))
            draw.ellipse([x - 10, cy - r // 4 - 6, x, cy - r // 4 + 6], fill=(20, 20, 20))
        else:
            draw.ellipse([x - 7, cy - r // 4 - 7, x + 7, cy - r // 4 + 7], fill=(20, 20, 20))
    draw.ellipse([cx - 12, cy + r // 5, cx + 12, cy + r // 5 + 16], fill=(30, 25, 25))
    draw.arc(
        [cx - 22, cy + r // 5 + 10, cx + 22, cy + r // 2 + 10], 20, 160, fill=(60, 30, 30), width=3
    )


def _paint_doge() -> Image.Image:
    image = vertical_gradient((250, 220, 150), (230, 170, 90))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 380, BASE_SIZE, BASE_SIZE], fill=(170, 110, 60))
    draw.rounded_rectangle([150, 300, 362, 470], radius=60, fill=(220, 150, 70))
    _dog_face(draw, 256, 250, 120, (225, 160, 80), "side")
    return image


def _cat_face(draw: ImageDraw.ImageDraw, cx: int, cy: int, r: int, fur: RGB, mood: str) -> None:
    draw.polygon(
        [(cx - r, cy - r // 4), (cx - r + 10, cy - r - 40), (cx - r // 3, cy - r + 10)], fill=fur
    )
    draw.polygon(
        [(cx + r, cy - r // 4), (cx + r - 10, cy - r - 40), (cx + r // 3, cy - r + 10)], fill=fur
    )
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur, outline=(90, 80, 70), width=3)
    for side in (-1, 1):
        x = cx + side * r // 3
        if mood == "grumpy":
            draw.ellipse([x - 14, cy - 18, x + 14, cy + 8], fill=(110, 160, 220))
            draw.ellipse([x - 5, cy - 12, x + 5, cy + 4], fill=(20, 20, 20))
            draw.line(
                [(x - 20, cy - 30 + side * 6), (x + 20, cy - 30 - side * 6)],
                fill=(60, 50, 40),
                width=6,
            )
        else:
            draw.ellipse([x - 16, cy - 22, x + 16, cy + 10], fill=(200, 210, 90))
            draw.ellipse([x - 5, cy - 20, x + 5, cy + 8], fill=(20, 20, 20))
        for dy in (-6, 6):
            draw.line(
                [(cx + side * 30, cy + 30 + dy), (cx + side * (r + 30), cy + 24 + dy * 2)],
                fill=(70, 60, 60),
                width=2,
            )
    draw.polygon([(cx - 10, cy + 20), (cx + 10, cy + 20), (cx, cy + 32)], fill=(220, 140, 150))
    if mood == "grumpy":
        draw.arc([cx - 30, cy + 40, cx + 30, cy + 70], 200, 340, fill=(50, 40, 40), width=4)
    else:
        draw.arc([cx - 30, cy + 26, cx + 30, cy + 50], 20, 160, fill=(50, 40, 40), width=3)


def _paint_grumpy_cat() -> Image.Image:
    image = vertical_gradient((200, 200, 210), (120, 120, 140))
    draw = ImageDraw.Draw(image)
    draw.ellipse([116, 300, 396, 560], fill=(235, 225, 210))
    _cat_face(draw, 256, 250, 130, (240, 230, 215), "grumpy")
    draw.ellipse([190, 240, 322, 330], fill=(150, 120, 100))
    draw.polygon([(246, 290), (266, 290), (256, 302)], fill=(90, 60, 60))
    draw.arc([216, 305, 296, 345], 200, 340, fill=(40, 30, 30), width=5)
    return image


def _paint_one_does_not_simply() -> Image.Image:
    image = vertical_gradient((90, 80, 70), (40, 35, 30))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 150, BASE_SIZE], fill=(60, 55, 50))
    draw.rectangle([370, 0, BASE_SIZE, BASE_SIZE], fill=(70, 62, 55))
    draw.rounded_rectangle([150, 300, 362, BASE_SIZE], radius=50, fill=(90, 60, 40))
    draw.polygon([(200, 300), (312, 300), (256, 390)], fill=(150, 40, 40))
    _cartoon_head(draw, 256, 220, 85, hair=(60, 40, 25), eyes="open", mouth="flat")
    draw.polygon([(185, 250), (327, 250), (300, 330), (212, 330)], fill=(70, 45, 25))
    draw.line([(218, 195), (240, 200)], fill=(40, 30, 20), width=5)
    draw.line([(294, 195), (272, 200)], fill=(40, 30, 20), width=5)
    # The circle he makes with his hand: the gesture everyone remembers.
    draw.ellipse([330, 300, 400, 370], outline=(241, 194, 150), width=14)
    draw.line([(340, 380), (300, 440)], fill=(241, 194, 150), width=18)
    return image


def _paint_roll_safe() -> Image.Image:
    image = vertical_gradient((70, 70, 90), (30, 30, 45))
    draw = ImageDraw.Draw(image)
    for x in range(0, BASE_SIZE, 64):
        draw.rectangle([x + 8, 40, x + 40, 100], fill=(240, 200, 90))
    draw.rounded_rectangle([140, 330, 372, BASE_SIZE], radius=60, fill=(60, 100, 70))
    _cartoon_head(
        draw, 256, 250, 95, skin=(150, 100, 70), hair=(25, 20, 20), eyes="open", mouth="smirk"
    )
    draw.line([(330, 470), (350, 330), (330, 215)], fill=(150, 100, 70), width=22)
    draw.ellipse([318, 200, 342, 224], fill=(150, 100, 70))
    return image


def _house(draw: ImageDraw.ImageDraw, x0: int, y0: int, w: int, h: int, wall: RGB) -> None:
    draw.rectangle([x0, y0, x0 + w, y0 + h], fill=wall)
    draw.polygon([(x0 - 20, y0), (x0 + w // 2, y0 - h // 2), (x0 + w + 20, y0)], fill=(110, 50, 40))
    draw.rectangle([x0 + w // 2 - 20, y0 + h - 60, x0 + w // 2 + 20, y0 + h], fill=(90, 60, 40))
    for wx in (x0 + 20, x0 + w - 60):
        draw.rectangle([wx, y0 + 30, wx + 40, y0 + 70], fill=(255, 200, 80))


def _paint_disaster_girl() -> Image.Image:
    image = vertical_gradient((60, 40, 50), (200, 100, 60))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 380, BASE_SIZE, BASE_SIZE], fill=(60, 90, 50))
    _house(draw, 60, 200, 240, 180, (200, 190, 170))
    rng = random.Random(777)
    for x in range(40, 340, 40):
        _flame(draw, x, 260, rng.randint(80, 150), 60, rng)
    draw.rounded_rectangle([340, 380, 470, BASE_SIZE], radius=40, fill=(230, 230, 240))
    _cartoon_head(draw, 405, 330, 60, hair=(120, 80, 40), eyes="side", mouth="smirk")
    return image


def _paint_hide_the_pain() -> Image.Image:
    image = vertical_gradient((230, 235, 240), (190, 200, 210))
    draw = ImageDraw.Draw(image)
    draw.rectangle([330, 150, 470, 330], fill=(120, 140, 160), outline=(60, 60, 70), width=4)
    draw.rounded_rectangle([140, 330, 372, BASE_SIZE], radius=60, fill=(200, 200, 205))
    draw.rectangle([236, 330, 276, 420], fill=(80, 90, 140))
    _cartoon_head(draw, 256, 240, 95, hair=(235, 235, 235), eyes="closed", mouth="smile")
    draw.ellipse([170, 210, 200, 240], outline=(200, 200, 200), width=3)
    draw.arc([200, 225, 312, 270], 200, 340, fill=(160, 110, 90), width=2)
    draw.rectangle([330, 390, 420, 410], fill=(250, 250, 250))
    draw.ellipse([385, 380, 430, 420], fill=(250, 250, 250), outline=(120, 120, 120), width=2)
    return image


def _paint_woman_yelling_at_cat() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 255, BASE_SIZE], fill=(170, 200, 220))
    draw.rectangle([257, 0, BASE_SIZE, BASE_SIZE], fill=(235, 230, 220))
    draw.rounded_rectangle([50, 300, 210, BASE_SIZE], radius=50, fill=(250, 250, 250))
    _cartoon_head(draw, 130, 230, 75, hair=(235, 200, 120), eyes="open", mouth="open")
    draw.line([(200, 330), (240, 260)], fill=(241, 194, 150), width=16)
    draw.rectangle([257, 380, BASE_SIZE, BASE_SIZE], fill=(200, 200, 205))
    draw.ellipse([300, 395, 420, 430], fill=(250, 250, 250), outline=(150, 150, 150), width=2)
    draw.ellipse([325, 395, 395, 420], fill=(120, 180, 80))
    draw.rounded_rectangle([320, 300, 450, 390], radius=30, fill=(250, 250, 250))
    _cat_face(draw, 385, 260, 70, (250, 250, 250), "grumpy")
    draw.line([(256, 0), (256, BASE_SIZE)], fill=(40, 40, 40), width=4)
    return image


def _paint_is_this_a_pigeon() -> Image.Image:
    image = vertical_gradient((130, 170, 120), (70, 110, 80))
    draw = ImageDraw.Draw(image)
    # Butterfly upper left, the man looking at it, his hand held out.
    for dx in (-1, 1):
        draw.ellipse(
            [130 + dx * 36 - 30, 130, 130 + dx * 36 + 30, 190],
            fill=(250, 190, 60),
            outline=(80, 50, 20),
            width=3,
        )
        draw.ellipse(
            [130 + dx * 26 - 20, 180, 130 + dx * 26 + 20, 220],
            fill=(240, 150, 50),
            outline=(80, 50, 20),
            width=3,
        )
    draw.line([(130, 130), (130, 215)], fill=(40, 30, 20), width=5)
    draw.rounded_rectangle([290, 310, 470, BASE_SIZE], radius=50, fill=(230, 150, 60))
    _cartoon_head(
        draw, 380, 250, 75, skin=(170, 200, 230), hair=(50, 40, 40), eyes="open", mouth="open"
    )
    draw.rectangle([345, 225, 415, 240], fill=(250, 250, 250), outline=(40, 40, 40), width=3)
    draw.line([(300, 360), (200, 280)], fill=(170, 200, 230), width=18)
    return image


def _paint_uno_draw_25() -> Image.Image:
    image = vertical_gradient((250, 250, 245), (220, 220, 215))
    draw = ImageDraw.Draw(image)
    # The card whose text is the top caption, and the player holding his pile.
    draw.rounded_rectangle(
        [60, 50, 300, 360], radius=24, fill=(210, 30, 40), outline=(40, 40, 40), width=4
    )
    draw.ellipse([80, 90, 280, 320], fill=(250, 250, 250))
    draw.rounded_rectangle([330, 380, 490, BASE_SIZE], radius=40, fill=(40, 60, 120))
    _cartoon_head(draw, 410, 320, 60, hair=(30, 25, 20), eyes="open", mouth="flat")
    for i in range(6):
        draw.rounded_rectangle(
            [330 + i * 6, 420 - i * 6, 400 + i * 6, 500 - i * 6],
            radius=6,
            fill=(230, 40, 40) if i % 2 else (240, 200, 40),
            outline=(30, 30, 30),
            width=2,
        )
    return image


def _paint_gru_plan() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    for i, (x0, y0) in enumerate(((0, 0), (256, 0), (0, 256), (256, 256))):
        draw.rectangle(
            [x0 + 6, y0 + 6, x0 + 250, y0 + 250], fill=(60, 100, 80), outline=(120, 80, 40), width=6
        )
        draw.rectangle([x0 + 24, y0 + 24, x0 + 232, y0 + 150], fill=(250, 250, 245))
        worried = i == 3
        _cartoon_head(
            draw,
            x0 + 128,
            y0 + 210,
            36,
            skin=(220, 200, 170),
            hair=None,
            eyes="open",
            mouth="frown" if worried else "smile",
        )
        draw.ellipse([x0 + 106, y0 + 192, x0 + 124, y0 + 206], outline=(40, 40, 40), width=2)
    return image


def _paint_always_has_been() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (5, 5, 20))
    draw = ImageDraw.Draw(image)
    rng = random.Random(2020)
    for _ in range(120):
        x, y = rng.randrange(BASE_SIZE), rng.randrange(BASE_SIZE)
        draw.point((x, y), fill=(255, 255, 255))
    draw.ellipse([-120, 260, 360, 740], fill=(40, 100, 200))
    draw.polygon([(20, 320), (120, 300), (160, 380), (80, 420)], fill=(70, 150, 80))
    draw.polygon([(200, 340), (280, 330), (300, 420), (230, 430)], fill=(70, 150, 80))
    for cx, cy in ((250, 250), (420, 200)):
        draw.rounded_rectangle(
            [cx - 40, cy - 10, cx + 40, cy + 110], radius=20, fill=(235, 235, 235)
        )
        draw.ellipse(
            [cx - 45, cy - 85, cx + 45, cy + 5],
            fill=(235, 235, 235),
            outline=(150, 150, 150),
            width=3,
        )
        draw.ellipse([cx - 30, cy - 65, cx + 30, cy - 15], fill=(40, 50, 80))
        draw.arc([cx - 25, cy - 60, cx + 5, cy - 35], 180, 270, fill=(200, 220, 255), width=3)
    # The second astronaut's gun, pointed at the first.
    draw.rectangle([340, 235, 380, 250], fill=(60, 60, 60))
    draw.rectangle([370, 245, 382, 265], fill=(60, 60, 60))
    return image


def _paint_bernie_asking() -> Image.Image:
    image = vertical_gradient((200, 210, 220), (150, 160, 175))
    draw = ImageDraw.Draw(image)
    draw.polygon([(120, BASE_SIZE), (150, 330), (362, 330), (392, BASE_SIZE)], fill=(110, 90, 60))
    draw.polygon([(190, 330), (322, 330), (256, 420)], fill=(240, 240, 240))
    _cartoon_head(draw, 256, 240, 85, hair=(240, 240, 240), eyes="open", mouth="flat")
    draw.ellipse([200, 225, 240, 255], outline=(40, 40, 40), width=3)
    draw.ellipse([272, 225, 312, 255], outline=(40, 40, 40), width=3)
    draw.ellipse([150, 330, 200, 380], fill=(120, 170, 220))
    draw.ellipse([312, 330, 362, 380], fill=(120, 170, 220))
    return image


def _paint_buff_doge_vs_cheems() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 255, BASE_SIZE], fill=(120, 170, 230))
    draw.rectangle([257, 0, BASE_SIZE, BASE_SIZE], fill=(200, 190, 180))
    # Buff: huge torso. Cheems: small and slumped.
    draw.polygon([(30, BASE_SIZE), (40, 260), (216, 260), (226, BASE_SIZE)], fill=(225, 160, 80))
    draw.ellipse([10, 250, 90, 340], fill=(225, 160, 80))
    draw.ellipse([166, 250, 246, 340], fill=(225, 160, 80))
    _dog_face(draw, 128, 200, 70, (225, 160, 80), "open")
    draw.rounded_rectangle([320, 400, 450, BASE_SIZE], radius=40, fill=(230, 190, 120))
    _dog_face(draw, 385, 350, 55, (230, 190, 120), "side")
    draw.line([(256, 0), (256, BASE_SIZE)], fill=(40, 40, 40), width=4)
    return image


def _paint_trade_offer() -> Image.Image:
    image = vertical_gradient((70, 60, 90), (30, 25, 40))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([156, 300, 356, BASE_SIZE], radius=60, fill=(30, 30, 35))
    draw.polygon([(226, 300), (286, 300), (256, 380)], fill=(240, 240, 240))
    draw.polygon([(246, 310), (266, 310), (256, 400)], fill=(150, 30, 40))
    _cartoon_head(
        draw, 256, 220, 80, skin=(160, 110, 80), hair=(20, 20, 20), eyes="open", mouth="smile"
    )
    draw.line([(160, 330), (90, 250)], fill=(30, 30, 35), width=26)
    draw.line([(352, 330), (422, 250)], fill=(30, 30, 35), width=26)
    draw.ellipse([70, 225, 110, 265], fill=(160, 110, 80))
    draw.ellipse([402, 225, 442, 265], fill=(160, 110, 80))
    return image


def _paint_mocking_spongebob() -> Image.Image:
    image = vertical_gradient((120, 200, 230), (60, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 400, BASE_SIZE, BASE_SIZE], fill=(230, 210, 150))
    # A yellow sponge bent forward like a chicken: the pose carries the joke.
    draw.polygon(
        [(150, 360), (200, 150), (360, 180), (330, 380)],
        fill=(250, 235, 80),
        outline=(150, 140, 40),
    )
    for x, y in ((220, 200), (300, 230), (250, 300), (310, 330)):
        draw.ellipse([x - 10, y - 8, x + 10, y + 8], fill=(200, 190, 50))
    draw.ellipse([230, 210, 270, 250], fill=(255, 255, 255), outline=(40, 40, 40), width=2)
    draw.ellipse([280, 220, 320, 260], fill=(255, 255, 255), outline=(40, 40, 40), width=2)
    draw.ellipse([248, 228, 262, 242], fill=(60, 120, 200))
    draw.ellipse([298, 238, 312, 252], fill=(60, 120, 200))
    draw.arc([240, 260, 320, 300], 10, 170, fill=(120, 40, 40), width=4)
    draw.rectangle([180, 360, 330, 390], fill=(140, 90, 50))
    draw.line([(200, 390), (190, 440)], fill=(250, 235, 80), width=8)
    draw.line([(300, 390), (310, 440)], fill=(250, 235, 80), width=8)
    return image


def _paint_left_exit() -> Image.Image:
    image = vertical_gradient((140, 200, 240), (200, 230, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 250, BASE_SIZE, BASE_SIZE], fill=(90, 150, 70))
    draw.polygon([(120, BASE_SIZE), (240, 250), (290, 250), (400, BASE_SIZE)], fill=(80, 80, 85))
    draw.polygon([(180, BASE_SIZE), (250, 250), (262, 250), (20, 380)], fill=(80, 80, 85))
    for y in range(270, BASE_SIZE, 40):
        x = 265 + (y - 250) // 6
        draw.line([(x, y), (x + 2, y + 18)], fill=(250, 250, 250), width=4)
    draw.rectangle([260, 120, 470, 200], fill=(30, 110, 60), outline=(250, 250, 250), width=4)
    draw.line([(300, 200), (300, 250)], fill=(120, 120, 120), width=6)
    draw.line([(430, 200), (430, 250)], fill=(120, 120, 120), width=6)
    draw.line([(290, 160), (330, 140), (330, 180)], fill=(250, 250, 250), width=5)
    # The car swerving across the lanes towards the exit.
    draw.polygon([(200, 410), (290, 380), (320, 440), (230, 470)], fill=(200, 40, 40))
    draw.polygon([(225, 400), (275, 385), (285, 410), (235, 425)], fill=(160, 210, 240))
    for wx, wy in ((222, 470), (310, 442)):
        draw.ellipse([wx - 12, wy - 12, wx + 12, wy + 12], fill=(20, 20, 20))
    return image


def _paint_panik_kalm() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for row, mood in enumerate(("open", "smile", "open")):
        y0 = row * 171
        background = (240, 190, 190) if mood == "open" else (200, 230, 200)
        draw.rectangle([300, y0, BASE_SIZE, y0 + 170], fill=background)
        _cartoon_head(
            draw, 406, y0 + 85, 58, skin=(245, 230, 200), hair=None, eyes="open", mouth=mood
        )
        draw.line([(0, y0 + 170), (BASE_SIZE, y0 + 170)], fill=(40, 40, 40), width=3)
    draw.line([(300, 0), (300, BASE_SIZE)], fill=(40, 40, 40), width=3)
    return image


def _paint_who_would_win() -> Image.Image:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 130, 250, BASE_SIZE], fill=(220, 230, 250), outline=(40, 40, 40), width=3)
    draw.rectangle(
        [262, 130, BASE_SIZE, BASE_SIZE], fill=(250, 225, 215), outline=(40, 40, 40), width=3
    )
    draw.polygon([(230, 300), (282, 300), (256, 250)], fill=(230, 40, 40))
    draw.polygon([(230, 300), (282, 300), (256, 350)], fill=(40, 40, 230))
    for x in (80, 170):
        _stick_figure(draw, x, 480, shirt=(80, 90, 160))
    draw.ellipse([360, 380, 400, 420], fill=(250, 200, 60), outline=(60, 40, 20), width=3)
    return image


def _paint_coffin_dance() -> Image.Image:
    image = vertical_gradient((250, 200, 120), (200, 120, 70))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 400, BASE_SIZE, BASE_SIZE], fill=(120, 90, 60))
    draw.polygon(
        [(60, 250), (100, 220), (420, 220), (460, 250), (420, 280), (100, 280)],
        fill=(90, 50, 30),
        outline=(40, 20, 10),
    )
    for i, x in enumerate((100, 200, 310, 410)):
        skin = (110, 70, 45) if i % 2 else (140, 95, 60)
        draw.rounded_rectangle([x - 30, 290, x + 30, 400], radius=14, fill=(30, 30, 35))
        draw.ellipse([x - 25, 250, x + 25, 300], fill=skin)
        draw.rectangle([x - 28, 235, x + 28, 255], fill=(20, 20, 20))
        draw.rectangle([x - 16, 255, x + 16, 262], fill=(20, 20, 20))
        draw.line([(x - 8, 400), (x - 16, 440)], fill=(30, 30, 35), width=10)
        draw.line([(x + 8, 400), (x + 16, 440)], fill=(30, 30, 35), width=10)
    return image


def _paint_skeleton_waiting() -> Image.Image:
    image = vertical_gradient((140, 170, 120), (90, 120, 80))
    draw = ImageDraw.Draw(image)
    draw.rectangle([60, 330, 452, 350], fill=(140, 90, 50))
    draw.rectangle([80, 350, 95, 430], fill=(110, 70, 40))
    draw.rectangle([417, 350, 432, 430], fill=(110, 70, 40))
    draw.rectangle([60, 250, 452, 265], fill=(140, 90, 50))
    bone = (240, 235, 220)
    draw.ellipse([210, 130, 290, 215], fill=bone)
    draw.ellipse([228, 160, 248, 182], fill=(30, 30, 30))
    draw.ellipse([254, 160, 274, 182], fill=(30, 30, 30))
    draw.line([(250, 215), (250, 330)], fill=bone, width=10)
    for y in range(235, 320, 18):
        draw.arc([215, y - 10, 285, y + 14], 200, 340, fill=bone, width=6)
    draw.line([(250, 330), (320, 330), (320, 420)], fill=bone, width=10)
    draw.line([(250, 330), (190, 335), (185, 420)], fill=bone, width=10)
    draw.line([(225, 240), (180, 300), (170, 330)], fill=bone, width=8)
    for x, y in ((120, 120), (380, 90), (330, 200)):
        draw.line([(x, y), (x + 40, y + 40)], fill=(220, 220, 220), width=2)
        draw.line([(x + 40, y), (x, y + 40)], fill=(220, 220, 220), width=2)
    return image


def _paint_monkey_puppet() -> Image.Image:
    image = vertical_gradient((190, 150, 110), (140, 100, 70))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([150, 330, 362, BASE_SIZE], radius=60, fill=(230, 120, 40))
    draw.ellipse([136, 140, 376, 370], fill=(110, 70, 40), outline=(60, 40, 20), width=3)
    draw.ellipse([116, 210, 166, 270], fill=(110, 70, 40))
    draw.ellipse([346, 210, 396, 270], fill=(110, 70, 40))
    draw.ellipse([176, 200, 336, 350], fill=(230, 190, 150))
    for x in (220, 292):
        draw.ellipse([x - 24, 220, x + 24, 262], fill=(255, 255, 255))
        draw.ellipse([x + 2, 228, x + 20, 254], fill=(20, 20, 20))  # eyes to the side
    draw.line([(226, 310), (286, 305)], fill=(90, 40, 30), width=4)
    return image


def _paint_brace_yourselves() -> Image.Image:
    image = vertical_gradient((170, 180, 200), (230, 235, 245))
    draw = ImageDraw.Draw(image)
    rng = random.Random(1996)
    for _ in range(80):
        x, y, r = rng.randrange(BASE_SIZE), rng.randrange(BASE_SIZE), rng.randint(2, 4)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255))
    draw.polygon([(130, BASE_SIZE), (170, 320), (342, 320), (382, BASE_SIZE)], fill=(70, 55, 45))
    draw.polygon([(130, 330), (382, 330), (400, 380), (112, 380)], fill=(180, 170, 160))
    _cartoon_head(draw, 256, 240, 80, hair=(40, 30, 25), eyes="open", mouth="flat")
    draw.chord([196, 255, 316, 340], 0, 180, fill=(60, 45, 35))
    return image


def _paint_take_my_money() -> Image.Image:
    image = vertical_gradient((120, 190, 120), (60, 130, 70))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([170, 330, 342, BASE_SIZE], radius=40, fill=(200, 60, 40))
    draw.ellipse([176, 150, 336, 330], fill=(250, 200, 160), outline=(120, 80, 50), width=3)
    draw.rectangle([186, 140, 326, 180], fill=(250, 150, 40))
    draw.ellipse([220, 215, 240, 235], fill=(20, 20, 20))
    draw.ellipse([272, 215, 292, 235], fill=(20, 20, 20))
    draw.ellipse([236, 270, 276, 310], fill=(120, 30, 30))
    # A fan of banknotes held out.
    for i, angle in enumerate(range(-30, 31, 15)):
        rad = math.radians(angle - 90)
        tip = (400 + int(math.cos(rad) * 90), 400 + int(math.sin(rad) * 90))
        draw.line([(400, 400), tip], fill=(120, 200, 120) if i % 2 else (90, 170, 90), width=34)
    draw.ellipse([380, 380, 420, 420], fill=(250, 200, 160))
    return image


# --- catalog ---------------------------------------------------------------------------


def _words(words: str) -> frozenset[str]:
    return frozenset(words.split())


TEMPLATES: tuple[Template, ...] = (
    Template(
        "distracted",
        _words("distracted boyfriend girlfriend"),
        _words("new other look looking temptation want shiny tempted eyes jealous"),
        CLASSIC_SLOTS,
        _paint_distracted,
        caption=("me, living {at}", "{query} walking by"),
        description="a man turns to stare at a passer-by while his partner glares at him",
    ),
    Template(
        "drake",
        _words("drake hotline bling"),
        _words("prefer instead rather better than no yes vs versus nah approve"),
        (
            Slot(Box(268, 12, 500, 244), "top", "middle"),
            Slot(Box(268, 268, 500, 500), "bottom", "middle"),
        ),
        _paint_drake,
        caption=("anything else {at}", "{query}"),
        description="two panels: a man refuses the top option and approves the bottom one",
        badge_center=(50, BASE_SIZE // 2),
    ),
    Template(
        "expanding-brain",
        _words("brain expanding enlightened"),
        _words("smart smarter genius idea ideas think thinking big level mind"),
        (
            Slot(Box(8, 6, 248, 122), "top"),
            Slot(Box(8, 134, 248, 250), "fixed", text="THINKING ABOUT IT"),
            Slot(Box(8, 262, 248, 378), "fixed", text="NEEDING IT"),
            Slot(Box(8, 390, 248, 506), "bottom"),
        ),
        _paint_brain,
        caption=("hearing about {query}", "{query} {at}"),
        description="four panels, a brain glowing brighter at each more absurd idea",
    ),
    Template(
        "this-is-fine",
        _words("fine"),
        _words("fire burning ok okay chaos everything hot flames coffee deadline"),
        CLASSIC_SLOTS,
        _paint_this_is_fine,
        caption=("{query} {at}", "this is fine"),
        description="a dog sips coffee calmly in a room on fire",
    ),
    Template(
        "success-kid",
        _words("success kid"),
        _words("winning won finally victory achievement nailed passed done found got beach"),
        CLASSIC_SLOTS,
        _paint_success_kid,
        caption=("finally found {query}", "{at}"),
        description="a toddler on a beach clenches a fist of sand in triumph",
    ),
    Template(
        "stonks",
        _words("stonks"),
        _words("stock money profit invest market price crypto buy rich cheap economy"),
        CLASSIC_SLOTS,
        _paint_stonks,
        caption=("{query} {at}", "stonks"),
        description="a faceless businessman in front of a rising stock chart",
    ),
    Template(
        "two-buttons",
        _words("buttons"),
        _words("two choice choose decide decision dilemma both either or hard sweating"),
        CLASSIC_SLOTS,
        _paint_two_buttons,
        caption=("{query} now", "or {query} {at}"),
        description="a sweating man cannot choose between two red buttons",
    ),
    Template(
        "surprised",
        _words("pikachu surprised"),
        _words("surprise shock shocked unexpected what omg suddenly face"),
        CLASSIC_SLOTS,
        _paint_surprised,
        caption=("orders {query} {at}", "is surprised when it arrives"),
        description="a yellow creature with an open mouth, shocked by the obvious",
    ),
    Template(
        "change-my-mind",
        _words("change"),
        _words("mind opinion debate prove wrong unpopular take argue convince fact"),
        (Slot(TOP_BOX, "top", "top"), Slot(Box(52, 298, 460, 392), "bottom", "middle")),
        _paint_change_my_mind,
        caption=("{query} is the best thing {at}", "change my mind"),
        description="a man sits at a table with a sign inviting debate",
    ),
    Template(
        "crying-cat",
        _words("crying cry"),
        _words("sad cat tears miss lonely monday tired broke hungry closed empty"),
        CLASSIC_SLOTS,
        _paint_crying_cat,
        caption=("no {query} {at}", "i'm not crying, you are"),
        description="a cat with huge teary eyes",
    ),
    Template(
        "galaxy-think",
        _words("galaxy cosmic"),
        _words("space universe stars night dream dreaming far away moon astronomy"),
        CLASSIC_SLOTS,
        _paint_galaxy_think,
        caption=("me at 3 am thinking about {query}", "{at}"),
        description="a swirling galaxy in deep space",
    ),
    Template(
        "doge",
        _words("doge shibe shiba"),
        _words("wow such much very dog puppy amaze amazing"),
        CLASSIC_SLOTS,
        _paint_doge,
        caption=("such {query}", "very {place}. wow"),
        description="a shiba dog glancing sideways, amazed by everything",
    ),
    Template(
        "grumpy-cat",
        _words("grumpy"),
        _words("no nope angry annoyed hate never refuse kitten mood"),
        CLASSIC_SLOTS,
        _paint_grumpy_cat,
        caption=("{query} {at}?", "no."),
        description="a scowling cat that disapproves of everything",
    ),
    Template(
        "one-does-not-simply",
        _words("simply boromir mordor"),
        _words("one does walk impossible difficult easy just"),
        CLASSIC_SLOTS,
        _paint_one_does_not_simply,
        caption=("one does not simply", "find {query} {at}"),
        description="a bearded warrior explains, with a hand gesture, that it is not easy",
    ),
    Template(
        "roll-safe",
        _words("rollsafe"),
        _words("safe logic hack lifehack trick clever cant if tap temple outsmart"),
        CLASSIC_SLOTS,
        _paint_roll_safe,
        caption=("can't miss {query}", "if you never leave {place}"),
        description="a man taps his temple, proud of terrible logic",
    ),
    Template(
        "disaster-girl",
        _words("disaster"),
        _words("house burn burned evil smirk smile revenge arson"),
        CLASSIC_SLOTS,
        _paint_disaster_girl,
        caption=("they said no {query} {at}", "so i fixed it"),
        description="a girl smirks at the camera while a house burns behind her",
    ),
    Template(
        "hide-the-pain",
        _words("harold pain"),
        _words("hide hiding fake coping cope smile old boomer awkward grandpa"),
        CLASSIC_SLOTS,
        _paint_hide_the_pain,
        caption=("when they ask about {query} {at}", "*smiles through the pain*"),
        description="an older man smiles politely while clearly suffering",
    ),
    Template(
        "woman-yelling-at-cat",
        _words("yelling yell"),
        _words("woman shouting scream argue argument table dinner salad confused cats"),
        (
            Slot(Box(8, 8, 248, 140), "top", "top"),
            Slot(Box(264, 8, 504, 140), "bottom", "top"),
        ),
        _paint_woman_yelling_at_cat,
        caption=("where is my {query}?!", "i live {at}"),
        description="left: a woman yells and points; right: a confused cat at a dinner table",
        badge_center=(BASE_SIZE // 2, 470),
    ),
    Template(
        "is-this-a-pigeon",
        _words("pigeon"),
        _words("butterfly bird misunderstand misunderstanding wrong confused identify anime"),
        (
            Slot(Box(12, 8, 500, 110), "top", "top"),
            Slot(BOTTOM_BOX, "bottom", "bottom"),
        ),
        _paint_is_this_a_pigeon,
        caption=("me {at}", "is this {query}?"),
        description="a man points at a butterfly and misnames it",
    ),
    Template(
        "uno-draw-25",
        _words("uno"),
        _words("draw cards card refuse skip rather stubborn game"),
        (
            Slot(Box(92, 110, 268, 300), "top", "middle"),
            Slot(Box(12, 400, 320, 504), "bottom", "bottom"),
        ),
        _paint_uno_draw_25,
        caption=("give up {query} or draw 25", "me {at}: *draws 25*"),
        description="a card says 'do this or draw 25'; the player holds a huge pile instead",
        badge_center=(420, 90),
    ),
    Template(
        "gru-plan",
        _words("gru"),
        _words("plan plans step steps scheme backfire strategy presentation board"),
        (
            Slot(Box(28, 28, 228, 146), "top", "middle"),
            Slot(Box(284, 28, 484, 146), "fixed", text="STEP 2: ???"),
            Slot(Box(28, 284, 228, 402), "fixed", text="STEP 3: PROFIT"),
            Slot(Box(284, 284, 484, 402), "bottom", "middle"),
        ),
        _paint_gru_plan,
        caption=("step 1: want {query}", "wait, step 3: profit?"),
        description="four panels of a villain presenting a plan that backfires at the end",
        badge_center=(BASE_SIZE // 2, BASE_SIZE // 2),
    ),
    Template(
        "always-has-been",
        _words("astronaut astronauts"),
        _words("always been earth wait ohio conspiracy truth secretly"),
        CLASSIC_SLOTS,
        _paint_always_has_been,
        caption=("wait, {place} is all about {query}?", "always has been"),
        description="an astronaut discovers the truth about Earth; another holds a gun",
    ),
    Template(
        "bernie-asking",
        _words("bernie"),
        _words("asking ask again once support donate request please mittens"),
        CLASSIC_SLOTS,
        _paint_bernie_asking,
        caption=("i am once again asking", "for {query} {at}"),
        description="an old man in a coat and mittens makes the same request again",
    ),
    Template(
        "buff-doge-vs-cheems",
        _words("cheems buff"),
        _words("then now past back days old strong weak before after nostalgia"),
        (
            Slot(Box(8, 8, 248, 120), "top", "top"),
            Slot(Box(264, 8, 504, 120), "bottom", "top"),
        ),
        _paint_buff_doge_vs_cheems,
        caption=("{query} in the old days", "{query} {at} today"),
        description="left: a muscular dog (the past); right: a small sad dog (the present)",
        badge_center=(BASE_SIZE // 2, 470),
    ),
    Template(
        "trade-offer",
        _words("trade"),
        _words("offer receive deal exchange swap negotiate bargain"),
        CLASSIC_SLOTS,
        _paint_trade_offer,
        caption=("trade offer: i receive {query}", "you receive: a meme {at}"),
        description="a man in a suit spreads his hands to present a trade offer",
    ),
    Template(
        "mocking-spongebob",
        _words("spongebob mocking"),
        _words("mock sarcasm sarcastic says saying repeat yeah sure whatever"),
        (Slot(TOP_BOX, "top", "top"), Slot(BOTTOM_BOX, "bottom", "bottom", case="mocking")),
        _paint_mocking_spongebob,
        caption=("{query} {at}", "{query} {at}"),
        description="a yellow sponge bent over like a chicken, repeating words mockingly",
    ),
    Template(
        "left-exit",
        _words("exit"),
        _words("highway swerve road car drive driving turn last minute detour"),
        CLASSIC_SLOTS,
        _paint_left_exit,
        caption=("me, on the way home {at}", "taking the exit to {query}"),
        description="a car swerves across the lanes to take an exit at the last second",
    ),
    Template(
        "panik-kalm",
        _words("panik kalm"),
        _words("panic calm worry worried anxiety relax stress nervous"),
        (
            Slot(Box(8, 8, 292, 163), "top", "middle"),
            Slot(Box(8, 179, 292, 334), "fixed", text="KALM: A MEME IS ON ITS WAY"),
            Slot(Box(8, 350, 292, 504), "bottom", "middle"),
        ),
        _paint_panik_kalm,
        caption=("panik: no {query} {at}", "panik: it cost a token"),
        description="three faces: panic, calm, panic again",
        badge_center=(150, 171),
    ),
    Template(
        "who-would-win",
        _words("win"),
        _words("who would fight battle versus vs stronger against"),
        (
            Slot(Box(12, 8, 500, 124), "top", "top"),
            Slot(Box(270, 150, 504, 360), "bottom", "middle"),
        ),
        _paint_who_would_win,
        caption=("who would win? {query}", "or one meme {at}"),
        description="two boxes compared: a crowd against one small thing",
        badge_center=(130, 200),
    ),
    Template(
        "coffin-dance",
        _words("coffin"),
        _words("dance dancing funeral dead rip died death pallbearers"),
        CLASSIC_SLOTS,
        _paint_coffin_dance,
        caption=("{query} {at}", "*coffin dance intensifies*"),
        description="pallbearers in suits dance while carrying a coffin",
    ),
    Template(
        "skeleton-waiting",
        _words("skeleton"),
        _words("waiting wait still forever bench reply late slow queue"),
        CLASSIC_SLOTS,
        _paint_skeleton_waiting,
        caption=("me waiting for {query}", "{at}"),
        description="a skeleton sits on a park bench, still waiting",
    ),
    Template(
        "monkey-puppet",
        _words("monkey puppet"),
        _words("side eye awkward nervous look away guilty silence"),
        CLASSIC_SLOTS,
        _paint_monkey_puppet,
        caption=("when someone {at} mentions {query}", "*looks away*"),
        description="a monkey puppet glances sideways, awkwardly avoiding eye contact",
    ),
    Template(
        "brace-yourselves",
        _words("brace"),
        _words("yourselves coming winter incoming ready soon prepare snow"),
        CLASSIC_SLOTS,
        _paint_brace_yourselves,
        caption=("brace yourselves", "{query} is coming to {place}"),
        description="a stern man in furs in the snow warns that something is coming",
    ),
    Template(
        "take-my-money",
        _words("shut"),
        _words("take my money need want shopping pay sale cash wallet"),
        CLASSIC_SLOTS,
        _paint_take_my_money,
        caption=("{query} {at}?", "shut up and take my token"),
        description="a man with a cap holds out a fan of banknotes",
    ),
)

TEMPLATES_BY_NAME: dict[str, Template] = {t.name: t for t in TEMPLATES}
_WORD_INDEX: dict[str, dict[int, int]] = _weights_by_word()

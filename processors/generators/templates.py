"""Meme templates drawn with Pillow primitives.

The project ships no third-party images (licensing, repo size), so every template is a
small painter function that draws a recognisable caricature of a classic meme layout.
Backgrounds are painted once per (template, size) and cached; callers get a copy.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image, ImageDraw, ImageOps

BASE_SIZE = 512
"""Painters, caption boxes and slots are all expressed in this coordinate space."""

Role = Literal["top", "bottom", "fixed"]
VAlign = Literal["top", "middle", "bottom"]
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
    """

    box: Box
    role: Role
    valign: VAlign = "middle"
    text: str = ""


@dataclass(frozen=True)
class Template:
    name: str
    tags: frozenset[str]
    slots: tuple[Slot, ...]
    painter: Callable[[], Image.Image] = field(repr=False)
    # Where the "ai" kind puts its badge: a spot no caption slot of this template covers.
    badge_center: tuple[int, int] = (BASE_SIZE - 50, BASE_SIZE // 2)

    def draw(self, size: int = BASE_SIZE) -> Image.Image:
        """Return a fresh RGB copy of the background, so callers may draw on it."""
        return _painted(self, size).copy()


@functools.lru_cache(maxsize=64)
def _painted(template: Template, size: int) -> Image.Image:
    image = template.painter()
    if size != BASE_SIZE:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


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


# --- catalog ---------------------------------------------------------------------------


def _tags(words: str) -> frozenset[str]:
    return frozenset(words.split())


TEMPLATES: tuple[Template, ...] = (
    Template(
        "distracted",
        _tags(
            "distracted boyfriend girlfriend new other look looking temptation want shiny tempted"
        ),
        CLASSIC_SLOTS,
        _paint_distracted,
    ),
    Template(
        "drake",
        _tags("drake prefer instead rather better than no yes vs versus hotline nah approve"),
        (
            Slot(Box(268, 12, 500, 244), "top", "middle"),
            Slot(Box(268, 268, 500, 500), "bottom", "middle"),
        ),
        _paint_drake,
        badge_center=(50, BASE_SIZE // 2),
    ),
    Template(
        "expanding-brain",
        _tags("brain smart smarter genius idea ideas think thinking galaxy big enlightened level"),
        (
            Slot(Box(8, 6, 248, 122), "top"),
            Slot(Box(8, 134, 248, 250), "fixed", text="THINKING ABOUT IT"),
            Slot(Box(8, 262, 248, 378), "fixed", text="NEEDING IT"),
            Slot(Box(8, 390, 248, 506), "bottom"),
        ),
        _paint_brain,
    ),
    Template(
        "this-is-fine",
        _tags(
            "fine fire burning ok okay calm chaos disaster deadline everything hot flames coffee"
        ),
        CLASSIC_SLOTS,
        _paint_this_is_fine,
    ),
    Template(
        "success-kid",
        _tags("success win won finally victory achievement nailed passed done found got kid beach"),
        CLASSIC_SLOTS,
        _paint_success_kid,
    ),
    Template(
        "stonks",
        _tags("stonks stocks stock money profit invest market price crypto buy rich cheap deal"),
        CLASSIC_SLOTS,
        _paint_stonks,
    ),
    Template(
        "two-buttons",
        _tags("two buttons choice choose decide decision dilemma both either or hard sweating"),
        CLASSIC_SLOTS,
        _paint_two_buttons,
    ),
    Template(
        "surprised",
        _tags("surprised surprise shock shocked wow unexpected what omg suddenly face pikachu"),
        CLASSIC_SLOTS,
        _paint_surprised,
    ),
    Template(
        "change-my-mind",
        _tags("change mind opinion debate prove wrong unpopular take argue convince fact"),
        (Slot(TOP_BOX, "top", "top"), Slot(Box(52, 298, 460, 392), "bottom", "middle")),
        _paint_change_my_mind,
    ),
    Template(
        "crying-cat",
        _tags("sad cry crying cat tears miss lonely monday tired broke hungry closed empty"),
        CLASSIC_SLOTS,
        _paint_crying_cat,
    ),
    Template(
        "galaxy-think",
        _tags("space galaxy universe stars cosmic night dream dreaming far away moon astronomy"),
        CLASSIC_SLOTS,
        _paint_galaxy_think,
    ),
)

TEMPLATES_BY_NAME: dict[str, Template] = {t.name: t for t in TEMPLATES}

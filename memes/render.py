"""Pure meme rendering: query + coordinates -> deterministic 512x512 PNG.

No Kafka, no network, no clocks: the generator workers may retry or run a request twice
and must get byte-identical output, so every choice is derived from the inputs (and, for
the "ai" kind, from a hash of the request id and the caption the AI backend wrote).

What is cached, per process (the rendering budget is in docs/performance.md):

- template backgrounds, painted once per template (``templates._painted``), and the
  eight grey ramps of the AI backgrounds (``_ramp``);
- the bundled font, opened once per size (``_font``), and per-character glyph checks
  and advance widths (``_has_glyph``, ``_char_width``);
- caption layouts: font size and line breaks per (text, box) (``fit_text``), and each
  drawn line as coverage masks of its outline and glyphs (``draw_line``);
- template choice per query and place name per coordinates (``choose_template``,
  ``place.locate``);
- the last ``FINISHED_MEMES`` finished memes (``_render``), keyed by everything the
  picture depends on: a popular query at a popular place, or a retry, is served
  without drawing. At ~64 KB a PNG that is ~130 MB per generator process; 256 missed
  two thirds of the realistic workload's standard memes (docs/capacity.md).

What is not: the AI backgrounds and encoding the PNG (``encode_png``), most of the time
of a new meme now.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import math
import random
import struct
import unicodedata
import zlib
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps, features
from zlib_ng import zlib_ng

from memes.captions import ELLIPSIS, caption_for, clean_ai_caption, offline_ai_caption
from memes.matching import choose_template, stable_hash
from memes.templates import BASE_SIZE, FONT_PATH, Box, Slot, Template
from schemas.events import KINDS, Kind

IMAGE_SIZE = BASE_SIZE
# zlib-ng's deflate at level 2 makes ~the size of zlib's level 1 (35.4 vs 34.3 KB per
# meme) in under half the time (0.71 vs 1.70 ms). ISA-L (isal) was faster still but left
# the CPU's vector state dirty: every later zlib and Pillow call in the same thread ran
# ~3x slower (measured: Pillow's PNG encode 2.1 -> 5.9 ms after one isal call).
PNG_ZLIB_LEVEL = 2
FINISHED_MEMES = 2048  # finished memes cached per process (see the module docstring)
LINE_MASKS = 2048  # drawn caption lines cached per process, ~25 KB each
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_FONT_SIZE = 12
MAX_FONT_SIZE = 64
SLOT_PADDING = 4
# Raqm shapes Arabic, Indic scripts and right-to-left text; without it Pillow's basic
# layout still draws every glyph, one after another. Chosen once per process.
LAYOUT_ENGINE = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC

__all__ = [
    "RenderedMeme",
    "draw_line",
    "drawable_text",
    "encode_png",
    "fit_text",
    "mocking_case",
    "render_meme",
]


@dataclass(frozen=True)
class RenderedMeme:
    meme_id: str
    png: bytes
    caption: str
    template: str
    kind: Kind


# --- text fitting ----------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """The bundled DejaVu Sans Bold (assets/), never a system font: same glyphs everywhere."""
    return ImageFont.truetype(str(FONT_PATH), size, layout_engine=LAYOUT_ENGINE)


@functools.lru_cache(maxsize=1)
def _notdef_mask() -> bytes:
    return bytes(_font(24).getmask("\ue000"))


@functools.lru_cache(maxsize=16384)
def _has_glyph(char: str) -> bool:
    # A character the font lacks renders as its .notdef box; a private-use code point
    # (which the font does not map) shows what that box looks like.
    return bytes(_font(24).getmask(char)) != _notdef_mask()


_TRANSLITERATIONS = str.maketrans({"\u2013": "-", "\u2014": "-"})


def drawable_text(text: str) -> str:
    """Map text onto glyphs the bundled font has.

    Characters the font draws stay as they are (accents, Greek, Cyrillic, Hebrew,
    Arabic, many symbols). Others get their compatibility form if the font has that
    (full-width "\uff21" -> "A", "\ufb01" -> "fi"), else one "?" per run of undrawable characters
    ("寿司" or an emoji sequence -> "?"). Control and format characters draw nothing.
    """
    out: list[str] = []
    substituting = False
    for char in unicodedata.normalize("NFC", text.translate(_TRANSLITERATIONS)):
        if char.isspace():
            char = " "
        elif unicodedata.category(char) in ("Cc", "Cf"):
            continue
        elif not _has_glyph(char):
            compat = "".join(
                c
                for c in unicodedata.normalize("NFKD", char)
                if not unicodedata.combining(c) and not c.isspace()
            )
            if compat and all(_has_glyph(c) for c in compat):
                char = compat
            else:
                if not substituting:
                    out.append("?")
                substituting = True
                continue
        substituting = False
        out.append(char)
    return " ".join("".join(out).split())


def mocking_case(text: str) -> str:
    """ "sUcH a GoOd IdEa": alternate lower/upper over letters, starting lower."""
    out, upper = [], False
    for char in text:
        if char.isalpha():
            out.append(char.upper() if upper else char.lower())
            upper = not upper
        else:
            out.append(char)
    return "".join(out)


@dataclass(frozen=True)
class TextLayout:
    font_size: int
    stroke: int
    line_height: int
    lines: tuple[str, ...]
    width: int
    height: int


@functools.lru_cache(maxsize=16384)
def _char_width(size: int, char: str) -> float:
    return _font(size).getlength(char)


def _approx_width(size: int, text: str) -> float:
    return sum(_char_width(size, c) for c in text)


def _split_long_word(word: str, size: int, max_width: float) -> list[str]:
    if _approx_width(size, word) <= max_width:
        return [word]
    pieces, current = [], ""
    for char in word:
        if current and _approx_width(size, current + char) > max_width:
            pieces.append(current)
            current = ""
        current += char
    return [*pieces, current] if current else pieces


def _wrap(text: str, size: int, max_width: float, split_words: bool) -> list[str] | None:
    """Greedy word wrap using cached per-char widths (kerning is checked afterwards).

    Returns None when a single word is wider than the line and splitting is not allowed.
    """
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        if _approx_width(size, word) > max_width and not split_words:
            return None
        for piece in _split_long_word(word, size, max_width):
            candidate = f"{current} {piece}" if current else piece
            if current and _approx_width(size, candidate) > max_width:
                lines.append(current)
                candidate = piece
            current = candidate
    if current:
        lines.append(current)
    return lines


def _stroke_for(size: int) -> int:
    return max(2, round(size / 10))


def _layout(text: str, size: int, box_w: int, split_words: bool) -> TextLayout | None:
    stroke = _stroke_for(size)
    wrapped = _wrap(text, size, box_w - 2 * stroke, split_words)
    if wrapped is None:
        return None
    font = _font(size)
    ascent, descent = font.getmetrics()
    line_height = ascent + descent + 2 * stroke
    width = max((round(font.getlength(line)) + 2 * stroke for line in wrapped), default=0)
    return TextLayout(size, stroke, line_height, tuple(wrapped), width, line_height * len(wrapped))


def _truncate_to(layout: TextLayout, box_w: int, box_h: int) -> TextLayout:
    """Last resort at the minimum size: keep the lines that fit, end with an ellipsis."""
    keep = max(1, box_h // layout.line_height)
    if len(layout.lines) <= keep and layout.width <= box_w:
        return layout
    font, stroke = _font(layout.font_size), layout.stroke
    last = layout.lines[keep - 1] if len(layout.lines) >= keep else ""
    while last and font.getlength(last + ELLIPSIS) + 2 * stroke > box_w:
        last = last[:-1]
    lines = (*layout.lines[: keep - 1], last.rstrip() + ELLIPSIS)
    width = max(round(font.getlength(line)) + 2 * stroke for line in lines)
    return TextLayout(
        layout.font_size, stroke, layout.line_height, lines, width, layout.line_height * len(lines)
    )


def _largest_fit(text: str, box_w: int, box_h: int, split_words: bool) -> TextLayout | None:
    # Binary search: fitting is monotone enough in font size, and ~6 probes keep a
    # 500-character caption within a few milliseconds.
    lo, hi = MIN_FONT_SIZE, max(MIN_FONT_SIZE, min(MAX_FONT_SIZE, box_h))
    best: TextLayout | None = None
    while lo <= hi:
        size = (lo + hi) // 2
        layout = _layout(text, size, box_w, split_words)
        if layout is not None and layout.width <= box_w and layout.height <= box_h:
            best, lo = layout, size + 1
        else:
            hi = size - 1
    return best


@functools.lru_cache(maxsize=4096)
def fit_text(text: str, box_w: int, box_h: int) -> TextLayout:
    """Largest font size whose wrapped text fits inside box_w x box_h.

    Breaking inside a word is only used when no size keeps every word whole; when even
    the minimum size overflows, the text is cut with an ellipsis. Cached: layouts are
    immutable and the same caption in the same box always gets the same one.
    """
    text = drawable_text(text)
    fitted = _largest_fit(text, box_w, box_h, False) or _largest_fit(text, box_w, box_h, True)
    if fitted is not None:
        return fitted
    smallest = _layout(text, MIN_FONT_SIZE, box_w, split_words=True)
    if smallest is None:  # unreachable: with splitting allowed wrapping never gives up
        raise RuntimeError("text wrapping failed")
    return _truncate_to(smallest, box_w, box_h)


def _draw_caption(draw: ImageDraw.ImageDraw, text: str, slot: Slot) -> None:
    box = _inner(slot.box)
    if slot.case == "mocking":
        text = mocking_case(text)
    layout = fit_text(text, box.width, box.height)
    spare = box.height - layout.height
    offset = {"top": 0, "middle": spare // 2, "bottom": spare}[slot.valign]
    cx = (box.x0 + box.x1) // 2
    for i, line in enumerate(layout.lines):
        y = box.y0 + offset + layout.stroke + i * layout.line_height
        draw_line(draw, (cx, y), line, layout.font_size, layout.stroke, "white", "black", "ma")


@functools.lru_cache(maxsize=LINE_MASKS)
def _line_mask(text: str, size: int, stroke: int, anchor: str) -> tuple[Image.Image, int, int]:
    """One line's coverage as Pillow draws it (with ``stroke``, the filled outline; else
    the glyphs alone), and where its top left sits from the anchor point."""
    font = _font(size)
    # Whole pixels for a line drawn at a whole-pixel anchor (typed float for other cases).
    left, top, right, bottom = map(int, font.getbbox(text, stroke_width=stroke, anchor=anchor))
    mask = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(mask).text(
        (-left, -top), text, 255, font, anchor, stroke_width=stroke, stroke_fill=255
    )
    return mask, left, top


def draw_line(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    size: int,
    stroke: int,
    fill: str | tuple[int, ...],
    stroke_fill: str | tuple[int, ...],
    anchor: str,
) -> None:
    """``draw.text`` of one line outlined in another ink, pixel for pixel, from cached masks.

    FreeType rasterising the outline and then the glyphs was a third of a new meme's
    time, and caption lines repeat far more than whole memes do (a query's top line at
    every place, a phrase of the offline AI backend with every query).
    """
    x, y = xy
    for ink, width in ((stroke_fill, stroke), (fill, 0)):
        mask, left, top = _line_mask(text, size, width, anchor)
        draw.bitmap((x + left, y + top), mask, fill=ink)


def _inner(box: Box) -> Box:
    p = SLOT_PADDING
    return Box(box.x0 + p, box.y0 + p, box.x1 - p, box.y1 - p)


def _slot_text(slot: Slot, top: str, bottom: str) -> str:
    return {"top": top, "bottom": bottom, "fixed": slot.text}[slot.role]


def _draw_captions(image: Image.Image, template: Template, top: str, bottom: str) -> None:
    draw = ImageDraw.Draw(image)
    for slot in template.slots:
        _draw_caption(draw, _slot_text(slot, top, bottom), slot)


# --- "ai" stand-in ---------------------------------------------------------------------


def _rng_for(request_id: str) -> random.Random:
    # Integer seeds are reproducible across Python versions and processes.
    return random.Random(stable_hash(f"ai\0{request_id}"))


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


@functools.lru_cache(maxsize=8)
def _ramp(radial: bool, rotation: int) -> Image.Image:
    """One of the eight grey ramps an AI background is coloured from, made once (~1 ms
    each, an eighth of an AI meme). ``_colourised`` copies it, never writes to it."""
    ramp = Image.radial_gradient("L") if radial else Image.linear_gradient("L")
    return ramp.rotate(rotation).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)


_GREY_LEVELS = Image.frombytes("L", (256, 1), bytes(range(256)))


def _colourised(
    ramp: Image.Image,
    black: tuple[int, int, int],
    white: tuple[int, int, int],
    mid: tuple[int, int, int],
) -> Image.Image:
    """``ImageOps.colorize(ramp, black, white, mid=mid)``, pixel for pixel, in under half
    the time: colorize maps each grey level to one colour, so it is run on the 256 levels
    alone and its answer becomes the ramp's palette."""
    palette = ImageOps.colorize(_GREY_LEVELS, black, white, mid=mid).tobytes()
    image = ramp.copy()
    image.putpalette(palette)
    return image.convert("RGB")


def _procedural_background(rng: random.Random) -> Image.Image:
    hue = rng.random()
    ramp = _ramp(rng.random() < 0.4, rng.choice((0, 90, 180, 270)))
    image = _colourised(
        ramp, _hsv(hue, 0.8, 0.35), _hsv(hue + 0.35, 0.6, 0.95), _hsv(hue + 0.15, 0.9, 0.7)
    )
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(rng.randint(10, 18)):
        _random_shape(draw, rng, hue)
    for _ in range(rng.randint(12, 24)):
        _sparkle(draw, rng.randrange(IMAGE_SIZE), rng.randrange(IMAGE_SIZE), rng.randint(3, 9))
    return image


def _random_shape(draw: ImageDraw.ImageDraw, rng: random.Random, hue: float) -> None:
    colour = (*_hsv(hue + rng.uniform(-0.2, 0.5), rng.uniform(0.4, 1), 1.0), rng.randint(40, 110))
    x, y, r = rng.randrange(IMAGE_SIZE), rng.randrange(IMAGE_SIZE), rng.randint(20, 140)
    kind = rng.randrange(3)
    if kind == 0:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif kind == 1:
        draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=rng.randint(4, 14))
    else:
        draw.regular_polygon(
            (x, y, r), rng.randint(3, 6), rotation=rng.uniform(0, 360), fill=colour
        )


def _sparkle(draw: ImageDraw.ImageDraw, x: int, y: int, r: int) -> None:
    # Eight points alternating long/short radius: a four-pointed star.
    points = [
        (x + round(math.sin(i * math.pi / 4) * reach), y - round(math.cos(i * math.pi / 4) * reach))
        for i, reach in enumerate((r, r // 3) * 4)
    ]
    draw.polygon(points, fill=(255, 255, 240, 200))


def _draw_ai_badge(image: Image.Image, center: tuple[int, int]) -> None:
    draw = ImageDraw.Draw(image, "RGBA")
    x0, y0, x1, y1 = center[0] - 40, center[1] - 22, center[0] + 40, center[1] + 22
    draw.rounded_rectangle(
        [x0, y0, x1, y1], radius=14, fill=(150, 40, 220, 235), outline=(255, 255, 255, 255), width=3
    )
    _sparkle(draw, x0 + 20, (y0 + y1) // 2, 11)
    draw_line(draw, (x1 - 28, (y0 + y1) // 2), "AI", 26, 1, "white", (60, 0, 90), "mm")


def _render_ai_image(request_id: str, template: Template) -> Image.Image:
    background = _procedural_background(_rng_for(request_id))
    # Keep the template faintly visible so the joke's layout still reads.
    return Image.blend(background, template.draw(IMAGE_SIZE), 0.45)


# --- entry point -----------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: Image.Image) -> bytes:
    """A minimal PNG (IHDR, one IDAT, IEND) of an RGB image; bytes depend only on pixels.

    Why not ``Image.save(format="PNG")``: Pillow tries all five PNG row filters on every
    row and keeps the best, which costs more than the compression itself. On our flat
    cartoons, unfiltered rows at deflate level 1 come out as small (measured: 64 KB vs
    70 KB on average) in half the time (3.4 ms vs 6.7 ms per meme); zlib-ng's deflate
    then cut the compression from 1.7 to 0.7 ms. No tIME or text chunks, so the same
    pixels always give the same bytes (with one zlib-ng version: pyproject pins it).
    """
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got {image.mode}")
    width, height = image.size
    raw = memoryview(image.tobytes())
    stride = width * 3
    # Each scanline is prefixed with its filter type; 0 = None.
    scanlines = b"\x00".join(
        [b"", *(raw[y : y + stride] for y in range(0, height * stride, stride))]
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib_ng.compress(scanlines, PNG_ZLIB_LEVEL))
        + _png_chunk(b"IEND", b"")
    )


def render_meme(
    request_id: str,
    query: str,
    lat: float,
    lon: float,
    kind: Kind,
    *,
    ai_caption: tuple[str, str] | None = None,
) -> RenderedMeme:
    """Render one meme as a 512x512 PNG; identical inputs give identical bytes.

    "standard": the catalog template picked by `choose_template`, captioned with its own
    patterns, the query and the place name (`caption_for`). It does not depend on
    `request_id`.

    "ai": the same template blended over a procedural background (gradient, translucent
    shapes, sparkles) seeded by a hash of `request_id`, an "AI" badge, and the caption
    an AI backend wrote (`ai_caption`). Without one, the offline backend's phrase bank
    writes it (`offline_ai_caption`): a deterministic stand-in, not a language model.
    Different request ids give different images; the same request id (and caption)
    always gives the same one.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown meme kind: {kind!r}")
    template = choose_template(query)
    if kind == "ai":
        if ai_caption is None:
            top, bottom = offline_ai_caption(request_id, query, lat, lon)
        else:
            top, bottom = clean_ai_caption(ai_caption[0]), clean_ai_caption(ai_caption[1])
        return _render(template, top, bottom, request_id)
    top, bottom = caption_for(query, lat, lon, template)
    return _render(template, top, bottom, None)


def finished_memes_cached() -> tuple[int, int]:
    """How many memes this process served from its cache of finished memes, and how
    many it drew: (hits, misses)."""
    info = _render.cache_info()
    return info.hits, info.misses


@functools.lru_cache(maxsize=FINISHED_MEMES)
def _render(template: Template, top: str, bottom: str, ai_request_id: str | None) -> RenderedMeme:
    """The picture is a function of exactly these arguments, so finished memes are cached:
    a popular query at a popular place, or a retried request, costs no drawing at all."""
    if ai_request_id is not None:
        image = _render_ai_image(ai_request_id, template)
    else:
        image = template.draw(IMAGE_SIZE)
    _draw_captions(image, template, top, bottom)
    if ai_request_id is not None:
        _draw_ai_badge(image, template.badge_center)
    png = encode_png(image)
    return RenderedMeme(
        meme_id=hashlib.sha256(png).hexdigest()[:32],
        png=png,
        caption=f"{top} / {bottom}",
        template=template.name,
        kind="standard" if ai_request_id is None else "ai",
    )

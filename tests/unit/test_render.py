import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from memes.captions import caption_for, clean_ai_caption, offline_ai_caption
from memes.catalog import TEMPLATES, TEMPLATES_BY_NAME
from memes.matching import word_forms
from memes.render import (
    LAYOUT_ENGINE,
    RenderedMeme,
    draw_line,
    drawable_text,
    encode_png,
    fit_text,
    mocking_case,
    render_meme,
)
from memes.templates import FONT_PATH, Template
from schemas.events import Kind

NYC = (40.7306, -73.9352)
PARIS = (48.8534, 2.3488)
PACIFIC = (0.0, -140.0)
REPO = Path(__file__).resolve().parents[2]


def _open(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def _query_for(template: Template) -> str:
    others = set().union(*(t.names | t.tags for t in TEMPLATES if t is not template))
    return min(w for w in template.names if w not in others and word_forms(w)[-1] not in others)


# --- captions --------------------------------------------------------------------------


def test_caption_uses_the_template_patterns_and_the_place() -> None:
    stonks = TEMPLATES_BY_NAME["stonks"]
    assert caption_for("pizza", *PARIS, stonks) == ("PIZZA IN PARIS, FRANCE", "STONKS")
    brace = TEMPLATES_BY_NAME["brace-yourselves"]
    assert caption_for("pizza", *NYC, brace) == (
        "BRACE YOURSELVES",
        "PIZZA IS COMING TO NEW YORK CITY, UNITED STATES",
    )


def test_ocean_coordinates_still_make_a_sensible_caption() -> None:
    stonks = TEMPLATES_BY_NAME["stonks"]
    assert caption_for("pizza", *PACIFIC, stonks) == ("PIZZA IN THE MIDDLE OF NOWHERE", "STONKS")
    doge = TEMPLATES_BY_NAME["doge"]
    assert caption_for("fish", *PACIFIC, doge) == ("SUCH FISH", "VERY THE MIDDLE OF NOWHERE. WOW")


def test_caption_cleans_the_query() -> None:
    stonks = TEMPLATES_BY_NAME["stonks"]
    assert caption_for("  ", *PARIS, stonks)[0] == "A MEME IN PARIS, FRANCE"
    assert caption_for("hot\n\x00dog", *PARIS, stonks)[0] == "HOT DOG IN PARIS, FRANCE"
    with pytest.raises(ValueError):
        caption_for("pizza", 91.0, 0.0)
    with pytest.raises(ValueError):
        caption_for("pizza", float("nan"), 0.0)


def test_offline_ai_caption_depends_on_the_request_id() -> None:
    captions = {offline_ai_caption(f"req-{i}", "pizza", *PARIS) for i in range(40)}
    assert len(captions) > 10
    assert offline_ai_caption("req-1", "pizza", *PARIS) == offline_ai_caption(
        "req-1", "pizza", *PARIS
    )
    assert all("PIZZA" in top for top, _ in captions)


def test_clean_ai_caption_bounds_model_output() -> None:
    assert clean_ai_caption("  hello\x00\x1b world\n ") == "HELLO WORLD"
    assert len(clean_ai_caption("x" * 1000)) == 240


# --- determinism -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["standard", "ai"])
def test_same_inputs_give_identical_bytes(kind: Kind) -> None:
    a = render_meme("req-1", "pizza", *NYC, kind)
    b = render_meme("req-1", "pizza", *NYC, kind)
    assert a == b
    assert a.meme_id == hashlib.sha256(a.png).hexdigest()[:32]
    assert a.kind == kind


def test_same_request_renders_identically_in_another_process() -> None:
    """A retried request may land on another worker: bytes must not depend on the process
    (hash seeds, cache state, thread timing)."""
    script = (
        "import hashlib, sys\n"
        "from memes.render import render_meme\n"
        "for kind in ('standard', 'ai'):\n"
        "    m = render_meme('req-x', 'Ünïcode pizza ✓', 40.7306, -73.9352, kind)\n"
        "    print(hashlib.sha256(m.png).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    here = [
        hashlib.sha256(render_meme("req-x", "Ünïcode pizza ✓", *NYC, kind).png).hexdigest()
        for kind in ("standard", "ai")
    ]
    assert out == here


def test_standard_ignores_request_id_but_ai_does_not() -> None:
    assert (
        render_meme("r1", "pizza", *NYC, "standard").png
        == render_meme("r2", "pizza", *NYC, "standard").png
    )
    ai_1 = render_meme("r1", "pizza", *NYC, "ai")
    ai_2 = render_meme("r2", "pizza", *NYC, "ai")
    assert ai_1.png != ai_2.png
    assert ai_1.meme_id != ai_2.meme_id


def test_ai_caption_from_a_backend_is_drawn_and_recorded() -> None:
    meme = render_meme("r1", "pizza", *NYC, "ai", ai_caption=("Top line", "bottom\tline"))
    assert meme.caption == "TOP LINE / BOTTOM LINE"
    assert meme.png != render_meme("r1", "pizza", *NYC, "ai").png


# --- output ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["standard", "ai"])
def test_output_is_a_512_png_without_metadata(kind: Kind) -> None:
    meme = render_meme("req-1", "pizza", *NYC, kind)
    assert isinstance(meme, RenderedMeme)
    image = _open(meme.png)
    assert image.format == "PNG"
    assert image.size == (512, 512)
    assert b"tIME" not in meme.png  # a timestamp chunk would break determinism


def test_encode_png_is_lossless_and_minimal() -> None:
    image = TEMPLATES_BY_NAME["stonks"].draw()
    png = encode_png(image)
    decoded = _open(png)
    assert decoded.mode == "RGB"
    assert decoded.tobytes() == image.tobytes()
    assert [png[12:16], png[-8:-4]] == [b"IHDR", b"IEND"]
    with pytest.raises(ValueError):
        encode_png(image.convert("RGBA"))


def test_caption_and_template_fields() -> None:
    meme = render_meme("req-1", "this is fine", *NYC, "standard")
    assert meme.template == "this-is-fine"
    assert meme.caption == "THIS IS FINE IN NEW YORK CITY, UNITED STATES / THIS IS FINE"


def test_ai_caption_differs_from_standard() -> None:
    standard = render_meme("req-1", "pizza", *NYC, "standard")
    ai = render_meme("req-1", "pizza", *NYC, "ai")
    assert "PIZZA" in ai.caption
    assert ai.caption != standard.caption


@pytest.mark.parametrize("kind", ["standard", "ai"])
@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_every_template_renders_a_meme(template: Template, kind: Kind) -> None:
    meme = render_meme("req-t", _query_for(template), *PARIS, kind)
    assert meme.template == template.name
    assert _open(meme.png).size == (512, 512)


# --- text --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["standard", "ai"])
def test_very_long_query_renders(kind: Kind) -> None:
    for query in ("word " * 100, "x" * 500, "Ωμέγα " * 60):
        meme = render_meme("req-long", query, *NYC, kind)
        assert _open(meme.png).size == (512, 512)
        assert len(meme.caption) < 600  # the query is cut, with an ellipsis
        assert "\u2026" in meme.caption


@pytest.mark.parametrize("text", ["word " * 100, "y" * 500, "WHEN YOU WANT PIZZA", "Ж" * 300])
def test_fit_text_stays_inside_the_box(text: str) -> None:
    for width, height in ((480, 110), (230, 110), (100, 30)):
        layout = fit_text(text, width, height)
        assert layout.lines
        assert layout.width <= width
        assert layout.height <= height


def test_fit_text_is_cached() -> None:
    assert fit_text("CACHED CAPTION", 480, 110) is fit_text("CACHED CAPTION", 480, 110)


@pytest.mark.parametrize(
    ("text", "drawn"),
    [
        ("CRÈME BRÛLÉE À LA CAFÉ", "CRÈME BRÛLÉE À LA CAFÉ"),  # accents kept, not folded
        ("ΚΑΛΗΜΈΡΑ МИР שלום", "ΚΑΛΗΜΈΡΑ МИР שלום"),  # Greek, Cyrillic, Hebrew
        ("I ♥ ☕ → ★", "I ♥ ☕ → ★"),  # symbols the font has
        ("寿司が食べたい", "?"),  # no CJK in DejaVu: one "?" per run
        ("PIZZA 🍕 PARTY 👨\u200d👩\u200d👧", "PIZZA ? PARTY ?"),
        ("\uff26\uff35\uff2c\uff2c", "FULL"),  # full-width forms the font lacks
        ("A\u200bB\x00C\tD", "ABC D"),  # format/control characters draw nothing
        ("e\u0301", "é"),  # combining sequences composed (NFC)
    ],
)
def test_drawable_text(text: str, drawn: str) -> None:
    assert drawable_text(text) == drawn


@pytest.mark.parametrize("kind", ["standard", "ai"])
@pytest.mark.parametrize(
    "query",
    [
        "pizza 🍕 party 👨‍👩‍👧",
        "寿司が食べたい",
        "crème brûlée à la café",
        "Straße\u200b\x00\t",
        "مرحبا بالعالم",
        "Привет мир",
    ],
)
def test_unicode_queries_render(kind: Kind, query: str) -> None:
    meme = render_meme("req-u", query, *NYC, kind)
    assert _open(meme.png).size == (512, 512)
    assert query.split()[0].upper().replace("\x00", "") in meme.caption  # original text kept
    assert "\x00" not in meme.caption


def test_unicode_is_drawn_not_replaced() -> None:
    """Cyrillic in the bundled font draws real glyphs: the image differs from '?'s."""
    cyrillic = render_meme("r", "Привет мир", *PARIS, "standard").png
    question = render_meme("r", "?????? ???", *PARIS, "standard").png
    assert cyrillic != question


@pytest.mark.parametrize(
    ("text", "size", "stroke", "anchor"),
    [
        ("WHEN YOU WANT PIZZA", 48, 5, "ma"),
        ("ΚΑΛΗΜΈΡΑ МИР שלום", 33, 3, "ma"),
        ("مرحبا بالعالم", 20, 2, "ma"),
        ("sUcH a GoOd IdEa\u2026", 12, 2, "ma"),
        ("AI", 26, 1, "mm"),
        ("", 30, 3, "ma"),
    ],
)
def test_draw_line_draws_what_pillow_draws(text: str, size: int, stroke: int, anchor: str) -> None:
    """The cached masks give the pixels of Pillow's own ``draw.text``, so memes keep their
    bytes (and ids) across the change."""
    font = ImageFont.truetype(str(FONT_PATH), size, layout_engine=LAYOUT_ENGINE)
    background = Image.linear_gradient("L").resize((640, 160)).convert("RGB")
    expected = background.copy()
    ImageDraw.Draw(expected).text(
        (320, 40), text, "white", font, anchor, stroke_width=stroke, stroke_fill=(60, 0, 90)
    )
    for _ in range(2):  # the second time from the cache
        drawn = background.copy()
        draw_line(
            ImageDraw.Draw(drawn), (320, 40), text, size, stroke, "white", (60, 0, 90), anchor
        )
        assert drawn.tobytes() == expected.tobytes()


def test_mocking_case() -> None:
    assert mocking_case("SUCH A GOOD IDEA!") == "sUcH a GoOd IdEa!"


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ValueError):
        render_meme("req-1", "pizza", *NYC, "gif")  # type: ignore[arg-type]

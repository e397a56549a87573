import hashlib
import io

import pytest
from PIL import Image

from processors.generators.render import (
    RenderedMeme,
    caption_for,
    choose_template,
    fit_text,
    render_meme,
    template_scores,
)
from processors.generators.templates import BASE_SIZE, TEMPLATES, Template

NYC = (40.7306, -73.9352)


def _open(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_catalog_has_enough_uniquely_named_templates() -> None:
    assert len(TEMPLATES) >= 8
    assert len({t.name for t in TEMPLATES}) == len(TEMPLATES)
    assert all(t.tags and t.slots for t in TEMPLATES)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("this is fine, everything is on fire", "this-is-fine"),
        ("Drake prefers tea instead of coffee? nah", "drake"),
        ("stonks: crypto money", "stonks"),
        ("so SAD, my cat misses monday", "crying-cat"),
        ("galaxy brain ideas", "expanding-brain"),
    ],
)
def test_choose_template_by_tags(query: str, expected: str) -> None:
    assert choose_template(query).name == expected


def test_template_scores_explain_the_choice() -> None:
    scores = dict(template_scores("fire fire calm stocks"))
    assert scores["this-is-fine"] == 2  # distinct words: repeated "fire" counts once
    assert scores["stonks"] == 1  # "stocks" matches the singular tag "stock"


def test_choose_template_is_deterministic_and_spreads_ties() -> None:
    queries = [f"pizza number {i}" for i in range(60)]
    first = [choose_template(q).name for q in queries]
    assert first == [choose_template(q).name for q in queries]
    assert len(set(first)) >= 4
    assert choose_template("Pizza  Number 1") == choose_template("pizza number 1")


def test_caption_for() -> None:
    assert caption_for("pizza", *NYC) == ("WHEN YOU WANT PIZZA", "AT 40.73°N 73.94°W")
    assert caption_for("  ", -33.86, 151.2) == ("WHEN YOU WANT A MEME", "AT 33.86°S 151.20°E")
    assert caption_for("hot\n\x00dog", 0, 0)[0] == "WHEN YOU WANT HOT DOG"
    with pytest.raises(ValueError):
        caption_for("pizza", 91.0, 0.0)
    with pytest.raises(ValueError):
        caption_for("pizza", float("nan"), 0.0)


@pytest.mark.parametrize("kind", ["standard", "ai"])
def test_same_inputs_give_identical_bytes(kind: str) -> None:
    a = render_meme("req-1", "pizza", *NYC, kind)
    b = render_meme("req-1", "pizza", *NYC, kind)
    assert a == b
    assert a.meme_id == hashlib.sha256(a.png).hexdigest()[:32]
    assert a.kind == kind


def test_standard_ignores_request_id_but_ai_does_not() -> None:
    assert (
        render_meme("r1", "pizza", *NYC, "standard").png
        == render_meme("r2", "pizza", *NYC, "standard").png
    )
    ai_1 = render_meme("r1", "pizza", *NYC, "ai")
    ai_2 = render_meme("r2", "pizza", *NYC, "ai")
    assert ai_1.png != ai_2.png
    assert ai_1.meme_id != ai_2.meme_id


@pytest.mark.parametrize("kind", ["standard", "ai"])
def test_output_is_a_512_png_without_metadata(kind: str) -> None:
    meme = render_meme("req-1", "pizza", *NYC, kind)
    assert isinstance(meme, RenderedMeme)
    image = _open(meme.png)
    assert image.format == "PNG"
    assert image.size == (512, 512)
    assert b"tIME" not in meme.png  # a timestamp chunk would break determinism


def test_caption_and_template_fields() -> None:
    meme = render_meme("req-1", "this is fine", *NYC, "standard")
    assert meme.caption == "WHEN YOU WANT THIS IS FINE / AT 40.73°N 73.94°W"
    assert meme.template == "this-is-fine"


def test_ai_caption_differs_from_standard() -> None:
    standard = render_meme("req-1", "pizza", *NYC, "standard")
    ai = render_meme("req-1", "pizza", *NYC, "ai")
    assert "PIZZA" in ai.caption
    assert ai.caption != standard.caption


@pytest.mark.parametrize("kind", ["standard", "ai"])
def test_very_long_query_renders(kind: str) -> None:
    for query in ("word " * 100, "x" * 500):
        meme = render_meme("req-long", query, *NYC, kind)
        assert _open(meme.png).size == (512, 512)


@pytest.mark.parametrize("text", ["word " * 100, "y" * 500, "WHEN YOU WANT PIZZA"])
def test_fit_text_stays_inside_the_box(text: str) -> None:
    for width, height in ((480, 110), (230, 110), (100, 30)):
        layout = fit_text(text, width, height)
        assert layout.lines
        assert layout.width <= width
        assert layout.height <= height


@pytest.mark.parametrize("kind", ["standard", "ai"])
@pytest.mark.parametrize(
    "query",
    ["pizza 🍕 party 👨‍👩‍👧", "寿司が食べたい", "crème brûlée à la café", "Straße\u200b\x00\t"],
)
def test_unicode_queries_render(kind: str, query: str) -> None:
    meme = render_meme("req-u", query, *NYC, kind)
    assert _open(meme.png).size == (512, 512)
    assert query.split()[0].upper().replace("\x00", "") in meme.caption  # original text kept
    assert "\x00" not in meme.caption


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_every_template_draws(template: Template) -> None:
    image = template.draw()
    assert image.size == (BASE_SIZE, BASE_SIZE)
    assert image.mode == "RGB"
    image.putpixel((0, 0), (1, 2, 3))  # callers get a copy, the cache stays clean
    assert template.draw().getpixel((0, 0)) != (1, 2, 3)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_every_template_renders_a_meme(template: Template) -> None:
    shared = set().union(*(t.tags for t in TEMPLATES if t != template))
    query = min(template.tags - shared)  # a tag only this template has, so it must win
    meme = render_meme("req-t", query, *NYC, "standard")
    assert meme.template == template.name
    assert _open(meme.png).size == (512, 512)


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ValueError):
        render_meme("req-1", "pizza", *NYC, "gif")  # type: ignore[arg-type]

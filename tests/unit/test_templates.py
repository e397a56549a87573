"""The template catalog and the scoring that picks a template for a query."""

import string

import pytest

from memes.catalog import TEMPLATES, TEMPLATES_BY_NAME
from memes.matching import (
    NAME_WEIGHT,
    TAG_WEIGHT,
    choose_template,
    explain,
    match,
    tokenize,
    word_forms,
)
from memes.templates import ASSETS_DIR, BASE_SIZE, FONT_PATH, Template


def _unique_name_word(template: Template) -> str:
    others = set().union(*(t.names | t.tags for t in TEMPLATES if t is not template))
    own = sorted(w for w in template.names if w not in others and word_forms(w)[-1] not in others)
    assert own, f"{template.name} has no name word of its own"
    return own[0]


def test_catalog_has_at_least_30_uniquely_named_templates() -> None:
    assert len(TEMPLATES) >= 30
    assert len(TEMPLATES_BY_NAME) == len(TEMPLATES)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_every_template_is_complete(template: Template) -> None:
    assert template.names and template.tags and template.description
    assert "no third-party artwork" in template.license  # the licence, next to the image
    roles = [slot.role for slot in template.slots]
    assert roles.count("top") == 1 and roles.count("bottom") == 1
    for slot in template.slots:
        box = slot.box
        assert 0 <= box.x0 < box.x1 <= BASE_SIZE and 0 <= box.y0 < box.y1 <= BASE_SIZE
        assert (slot.role == "fixed") == bool(slot.text)
    for pattern in template.caption:
        fields = {name for _, name, _, _ in string.Formatter().parse(pattern) if name}
        assert fields <= {"query", "place", "at"}
    assert "query" in " ".join(template.caption)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_a_word_naming_the_meme_picks_it(template: Template) -> None:
    word = _unique_name_word(template)
    assert choose_template(f"{word} with extra words") is template


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("this is fine, everything is on fire", "this-is-fine"),
        ("I would rather have tea instead of coffee", "drake"),
        ("crypto money", "stonks"),
        ("so sad, my cat misses monday", "crying-cat"),
        ("big brain ideas", "expanding-brain"),
        ("my plan has four steps", "gru-plan"),
        ("waiting for the bus forever", "skeleton-waiting"),
        ("such wow, very amaze", "doge"),
        ("Brace yourselves, winter is coming", "brace-yourselves"),
    ],
)
def test_choose_template_by_tags(query: str, expected: str) -> None:
    assert choose_template(query).name == expected


def test_scores_explain_the_choice() -> None:
    scores = {m.template.name: m for m in match("drake stonks money money")}
    # A word naming the meme outweighs a tag; repeated words count once.
    assert scores["stonks"].score == NAME_WEIGHT + TAG_WEIGHT
    assert scores["stonks"].matched == ("stonks", "money")
    assert scores["drake"].score == NAME_WEIGHT
    assert scores["take-my-money"].score == TAG_WEIGHT
    assert choose_template("drake stonks money").name == "stonks"
    assert explain("drake stonks money").startswith("stonks=4 (stonks money) drake=3 (drake)")


def test_plurals_fold_to_the_tag() -> None:
    assert word_forms("stocks") == ("stocks", "stock")
    assert word_forms("parties") == ("parties", "party")
    assert word_forms("boss") == ("boss",)
    assert {m.template.name: m.score for m in match("stocks")}["stonks"] == TAG_WEIGHT


def test_tokenize_folds_case_and_accents() -> None:
    assert tokenize("Café  DOGE! 寿司 #1") == ["cafe", "doge", "1"]


def test_ties_are_deterministic_and_spread_over_the_catalog() -> None:
    queries = [f"pizza number {i}" for i in range(120)]
    first = [choose_template(q).name for q in queries]
    assert first == [choose_template(q).name for q in queries]
    assert len(set(first)) >= 15
    assert choose_template("Pizza  Number 1") is choose_template("pizza number 1")


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_every_template_draws(template: Template) -> None:
    image = template.draw()
    assert image.size == (BASE_SIZE, BASE_SIZE)
    assert image.mode == "RGB"
    assert len(image.resize((16, 16)).getcolors(256) or ()) > 4  # a picture, not a blank
    image.putpixel((0, 0), (1, 2, 3))  # callers get a copy, the cache stays clean
    assert template.draw().getpixel((0, 0)) != (1, 2, 3)


def test_the_font_ships_with_its_licence() -> None:
    assert FONT_PATH.is_file() and FONT_PATH.stat().st_size > 100_000
    licence = (ASSETS_DIR / "DejaVuSans-Bold.LICENSE").read_text()
    assert "bitstream-vera" in licence and "Permission is hereby granted" in licence
    assert "DejaVuSans-Bold.ttf" in (ASSETS_DIR / "LICENSES.md").read_text()

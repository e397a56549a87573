"""Choosing a template for a query (``match`` explains a choice, ``choose_template``
makes it):

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
import re
import unicodedata
from dataclasses import dataclass

from memes.catalog import TEMPLATES
from memes.templates import Template

NAME_WEIGHT = 3
TAG_WEIGHT = 1

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


_WORD_INDEX: dict[str, dict[int, int]] = _weights_by_word()

"""Content policy: is this text fit for a meme? ``screen(text, surface) -> PolicyVerdict``.

The classifier is ``alt-profanity-check`` from PyPI: a TF-IDF bag of words and a
linear SVM calibrated with 5-fold sigmoid calibration, trained (its authors say) on
~200k human-labelled samples of clean and profane text. The model files ship inside
the wheel: no download, no network. It scores offensive language - swearing, insults,
slurs - from 0 to 1. It knows English words only and reads no context;
docs/content-policy.md says what that means in practice.

A text is checked in this order; the first rule that matches decides:

1. ``self_harm``: it tells someone to kill or harm themselves ("kys"). The classifier
   misses these (they score below 0.05), so a short phrase list covers them.
2. ``violence_against_group``: a call to kill or attack people for who they are (a
   violent verb, then within three words a religious, ethnic, national, gender or
   sexual-orientation group: "gas the ...", "death to ..."). The classifier scores
   profanity, not hate: such calls without swear words score as low as 0.05, so this
   narrow pattern covers the worst of them. It is not a hate-speech detector.
3. ``offensive_language``: the classifier's probability reaches the threshold of the
   surface (``QUERY_THRESHOLD`` for a client's query, ``CAPTION_THRESHOLD`` for an
   AI-written caption). The text is scored as written and with common obfuscations
   undone (leetspeak digits, letters spelled apart, accents); the highest score counts.

Captions are held to a stricter threshold than queries: a false positive on a query
refuses the client's request, on a caption it only swaps the AI meme for a standard one.

Speed: the model is loaded once per process (~4 s, most of it importing scikit-learn;
``warm_up`` pays it at start-up). Scoring uses the package's own fitted analyzer,
vocabulary, idf weights and the five calibrated linear heads directly instead of
scikit-learn's ``transform`` + ``predict_proba``, whose input validation costs ~15 ms a
call: the same numbers (checked against ``predict_proba`` on probe texts at load time,
falling back to it if they ever differ) at tens of microseconds per text.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Surface = Literal["query", "caption"]

QUERY_THRESHOLD = 0.95
CAPTION_THRESHOLD = 0.80
THRESHOLDS: dict[Surface, float] = {"query": QUERY_THRESHOLD, "caption": CAPTION_THRESHOLD}

MODEL_PACKAGE = "alt-profanity-check"
PROBE_TEXTS = ("a pizza at the beach", "you absolute idiot", "hell yeah", "", "crap")


@dataclass(frozen=True)
class PolicyVerdict:
    """``reason`` is a stable code ("ok", "self_harm", "violence_against_group",
    "offensive_language") followed by a human explanation after a colon; ``score`` is
    the classifier's probability (1.0 for the phrase rules)."""

    allowed: bool
    reason: str
    score: float = 0.0

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


ALLOWED = PolicyVerdict(True, "ok", 0.0)

# --- normalisation ---------------------------------------------------------------------

_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)
# "f u c k", "f.u.c.k", "f-u-c-k": three or more single letters joined by separators.
_SPELLED_APART = re.compile(r"\b(?:\w[\s.\-_*]){2,}\w\b")
_SELF_HARM = re.compile(
    r"\b(?:kys|kill\s*(?:your|ur)\s*self|kill\s*yourselves|go\s+die|unalive\s*(?:your|ur)self)\b"
)
_VIOLENT = (
    r"(?:kill(?:s|ed|ing)?|gas(?:sed|sing)?|lynch(?:es|ed|ing)?|exterminat(?:e|es|ed|ing)"
    r"|eradicat(?:e|es|ed|ing)|shoot(?:s|ing)?|shot|bomb(?:s|ed|ing)?|murder(?:s|ed|ing)?"
    r"|slaughter(?:s|ed|ing)?|massacre(?:s|d)?|genocide|death\s+to)"
)
_GROUPS = (
    r"(?:jews?|jewish|muslims?|christians?|catholics?|hindus?|sikhs?|buddhists?|atheists?"
    r"|blacks?|whites?|asians?|arabs?|africans?|mexicans?|latinos?|immigrants?|refugees?"
    r"|migrants?|foreigners?|gays?|lesbians?|homosexuals?|queers?|trans|transgender"
    r"|women|men|roma|gypsies)"
)
_GROUP_VIOLENCE = re.compile(rf"\b{_VIOLENT}\b(?:\W+\w+){{0,3}}?\W+{_GROUPS}\b", re.IGNORECASE)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def variants(text: str) -> tuple[str, ...]:
    """The text as written plus obfuscation-undone forms, deduplicated, in order."""
    folded = _fold(text)
    joined = _SPELLED_APART.sub(lambda m: re.sub(r"[\s.\-_*]", "", m.group()), folded)
    out: list[str] = []
    for candidate in (text, folded, folded.translate(_LEET), joined, joined.translate(_LEET)):
        if candidate not in out:
            out.append(candidate)
    return tuple(out)


# --- the classifier ----------------------------------------------------------------------


class _Classifier:
    def __init__(self) -> None:
        # The package loads its two joblib files when imported.
        from profanity_check import profanity_check as package

        self._vectorizer: Any = package.vectorizer
        self._model: Any = package.model
        self._analyze = self._vectorizer.build_analyzer()  # lowercase, tokens, stop words
        self._vocabulary: dict[str, int] = self._vectorizer.vocabulary_
        self._idf: np.ndarray = self._vectorizer.idf_
        heads = self._model.calibrated_classifiers_
        self._weights = np.column_stack([h.estimator.coef_[0] for h in heads])
        self._intercepts = np.array([h.estimator.intercept_[0] for h in heads])
        self._a = np.array([h.calibrators[0].a_ for h in heads])
        self._b = np.array([h.calibrators[0].b_ for h in heads])
        self.fast = self._fast_matches_model()

    def _fast_matches_model(self) -> bool:
        """The shortcut relies on the fitted vectorizer's settings (raw counts, idf, l2)."""
        params = self._vectorizer.get_params()
        if params["sublinear_tf"] or params["binary"] or params["norm"] != "l2":
            return False
        if not params["use_idf"] or len(self._model.classes_) != 2:
            return False
        reference = self._model.predict_proba(self._vectorizer.transform(list(PROBE_TEXTS)))
        fast = [self._fast(text) for text in PROBE_TEXTS]
        return bool(np.allclose(fast, reference[:, 1], rtol=0, atol=1e-9))

    def _fast(self, text: str) -> float:
        counts: dict[int, int] = {}
        for token in self._analyze(text):
            column = self._vocabulary.get(token)
            if column is not None:
                counts[column] = counts.get(column, 0) + 1
        decision = self._intercepts
        if counts:
            columns = np.fromiter(counts, dtype=np.intp, count=len(counts))
            tfidf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            tfidf *= self._idf[columns]
            tfidf /= np.linalg.norm(tfidf)
            decision = tfidf @ self._weights[columns] + self._intercepts
        # scikit-learn's sigmoid calibration, p = 1 / (1 + exp(a * decision + b)),
        # averaged over the cross-validation folds.
        return float((1.0 / (1.0 + np.exp(self._a * decision + self._b))).mean())

    def probabilities(self, texts: list[str]) -> list[float]:
        if self.fast:
            return [self._fast(text) for text in texts]
        scores = self._model.predict_proba(self._vectorizer.transform(texts))[:, 1]
        return [float(s) for s in scores]


_lock = threading.Lock()
_classifier: _Classifier | None = None


def _get_classifier() -> _Classifier:
    global _classifier
    if _classifier is None:
        with _lock:
            if _classifier is None:
                _classifier = _Classifier()
    return _classifier


def warm_up() -> None:
    """Load the model now (API and generator start-up) rather than on the first text."""
    _get_classifier()


def offensive_probability(text: str) -> float:
    """The classifier's highest probability over the text's variants."""
    return max(_get_classifier().probabilities(list(variants(text))))


@functools.lru_cache(maxsize=8192)
def screen(text: str, surface: Surface = "query", threshold: float | None = None) -> PolicyVerdict:
    """Apply the policy to one text; see the module docstring for the rules and order.

    ``threshold`` overrides the surface's default (settings pass theirs in).
    """
    threshold = THRESHOLDS[surface] if threshold is None else threshold
    forms = variants(text)
    if any(_SELF_HARM.search(v) for v in forms):
        return PolicyVerdict(False, "self_harm: encourages self-harm", 1.0)
    if any(_GROUP_VIOLENCE.search(v) for v in forms):
        return PolicyVerdict(
            False, "violence_against_group: calls for violence against a group", 1.0
        )
    score = offensive_probability(text)
    if score >= threshold:
        return PolicyVerdict(
            False,
            f"offensive_language: the {surface} reads as offensive "
            f"(score {score:.2f}, limit {threshold:.2f})",
            score,
        )
    return PolicyVerdict(True, "ok", score)

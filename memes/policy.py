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
   The names of the groups of rule 2 are left out of what is scored: the classifier
   took some of them ("gay", "queer") for insults on their own.

Captions are held to a stricter threshold than queries: a false positive on a query
refuses the client's request, on a caption it only swaps the AI meme for a standard one.

Speed: scoring uses the package's fitted vocabulary, idf weights and the five calibrated
linear heads directly instead of scikit-learn's ``transform`` + ``predict_proba``, whose
input validation costs ~15 ms a call: the same numbers (checked against
``predict_proba`` on probe texts, falling back to it if they ever differ) at tens of
microseconds per text. Loading the package takes ~1.7 s of CPU, most of it importing
scikit-learn, so the numbers are kept in a cache file (``cache_path``: the user's cache
directory, named for the package's model files) and later starts read them in
milliseconds without scikit-learn. Each process loads once; ``warm_up`` pays it at
start-up rather than on the first text.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import threading
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol

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
    r"|migrants?|foreigners?|gays?|lesbians?|homosexuals?|bisexuals?|queers?|trans"
    r"|transgender|women|men|roma|gypsies)"
)
_GROUP_VIOLENCE = re.compile(rf"\b{_VIOLENT}\b(?:\W+\w+){{0,3}}?\W+{_GROUPS}\b", re.IGNORECASE)
# The classifier learnt some group names as insults from how they are misused: alone,
# "gay" scores 0.98, "queer" 0.99, "homosexual" 0.96, "i am a gay man" 0.95. Naming who
# one is is not offensive language, so the names are left out of what it scores (an
# insult or slur beside them still counts); calls for violence are rule 2's.
_GROUP_NAME = re.compile(rf"\b{_GROUPS}\b", re.IGNORECASE)


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

# The vectorizer settings the shortcut reproduces; with any other, the package scores.
_SHORTCUT_SETTINGS: dict[str, object] = {
    "analyzer": "word",
    "ngram_range": (1, 1),
    "lowercase": True,
    "strip_accents": None,
    "preprocessor": None,
    "tokenizer": None,
    "binary": False,
    "sublinear_tf": False,
    "use_idf": True,
    "norm": "l2",
}
CACHE_FORMAT = 1  # part of the cache file's name: a new layout is a new file


class _Scorer(Protocol):
    def probabilities(self, texts: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class _Package:
    """scikit-learn's ``transform`` + ``predict_proba``: the reference, ~15 ms a call."""

    vectorizer: Any
    model: Any

    def probabilities(self, texts: Sequence[str]) -> list[float]:
        scores = self.model.predict_proba(self.vectorizer.transform(list(texts)))[:, 1]
        return [float(s) for s in scores]


@dataclass(frozen=True)
class _Model:
    """The package's fitted numbers, scored directly: tens of microseconds a text."""

    vocabulary: dict[str, int]
    token_pattern: re.Pattern[str]
    idf: np.ndarray
    weights: np.ndarray  # a column per calibrated head
    intercepts: np.ndarray
    a: np.ndarray
    b: np.ndarray

    def probabilities(self, texts: Sequence[str]) -> list[float]:
        return [self._probability(text) for text in texts]

    def _probability(self, text: str) -> float:
        counts: dict[int, int] = {}
        # The vectorizer's analyzer lowercases, tokenizes and drops English stop words;
        # a stop word is in no fitted vocabulary, so the lookup drops it too.
        for token in self.token_pattern.findall(text.lower()):
            column = self.vocabulary.get(token)
            if column is not None:
                counts[column] = counts.get(column, 0) + 1
        decision = self.intercepts
        if counts:
            columns = np.fromiter(counts, dtype=np.intp, count=len(counts))
            tfidf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            tfidf *= self.idf[columns]
            tfidf /= np.linalg.norm(tfidf)
            decision = tfidf @ self.weights[columns] + self.intercepts
        # scikit-learn's sigmoid calibration, p = 1 / (1 + exp(a * decision + b)),
        # averaged over the cross-validation folds.
        return float((1.0 / (1.0 + np.exp(self.a * decision + self.b))).mean())

    @classmethod
    def of_package(cls, vectorizer: Any, model: Any) -> _Model | None:
        """The fitted numbers, if the shortcut reproduces the vectorizer's settings."""
        params = vectorizer.get_params()
        if any(params[k] != v for k, v in _SHORTCUT_SETTINGS.items()):
            return None
        if len(model.classes_) != 2 or sorted(vectorizer.vocabulary_.values()) != list(
            range(len(vectorizer.vocabulary_))
        ):
            return None
        heads = model.calibrated_classifiers_
        return cls(
            vocabulary=dict(vectorizer.vocabulary_),
            token_pattern=re.compile(params["token_pattern"]),
            idf=vectorizer.idf_,
            weights=np.column_stack([h.estimator.coef_[0] for h in heads]),
            intercepts=np.array([h.estimator.intercept_[0] for h in heads]),
            a=np.array([h.calibrators[0].a_ for h in heads]),
            b=np.array([h.calibrators[0].b_ for h in heads]),
        )

    def scores_probes_as(self, expected: Sequence[float]) -> bool:
        return bool(np.allclose(self.probabilities(PROBE_TEXTS), expected, rtol=0, atol=1e-9))


def cache_path() -> Path | None:
    """Where the fitted numbers are kept between starts, named for the package's model
    files (a new version of them is a new file); None if the package is not installed."""
    try:
        dist = metadata.distribution(MODEL_PACKAGE)
        digest = hashlib.sha256(f"format {CACHE_FORMAT}".encode())
        for file in sorted(f for f in dist.files or () if f.suffix == ".joblib"):
            digest.update(Path(str(dist.locate_file(file))).read_bytes())
    except (metadata.PackageNotFoundError, OSError):
        return None  # then importing the package fails, and says why
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "maas" / f"policy-{digest.hexdigest()[:16]}.npz"


def _read_cache(path: Path) -> _Model | None:
    try:
        # Opened here, not by np.load: it leaves its own handle open on a torn file.
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
            model = _Model(
                vocabulary={word: n for n, word in enumerate(data["words"].tolist())},
                token_pattern=re.compile(str(data["token_pattern"])),
                idf=data["idf"],
                weights=data["weights"],
                intercepts=data["intercepts"],
                a=data["a"],
                b=data["b"],
            )
            expected = data["probe_scores"].tolist()
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # missing, torn, or old
        return None
    # The zip's checksums refuse a damaged file; the probes, one written wrong.
    return model if model.scores_probes_as(expected) else None


def _write_cache(path: Path, model: _Model, probe_scores: list[float]) -> None:
    # Whole or not at all: the processes of a region start together, and a file half
    # written by one must not be read by another.
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as out:
            np.savez(
                out,
                words=np.array(sorted(model.vocabulary, key=model.vocabulary.__getitem__)),
                token_pattern=np.array(model.token_pattern.pattern),
                idf=model.idf,
                weights=model.weights,
                intercepts=model.intercepts,
                a=model.a,
                b=model.b,
                probe_scores=np.array(probe_scores),
            )
        os.replace(partial, path)
    except OSError:  # a read-only home: each start loads the package, as before
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _load() -> _Scorer:
    path = cache_path()
    cached = _read_cache(path) if path is not None else None
    if cached is not None:
        return cached
    # The package loads its two joblib files when imported (and scikit-learn with them).
    from profanity_check import profanity_check as package

    reference = _Package(package.vectorizer, package.model)
    expected = reference.probabilities(PROBE_TEXTS)
    model = _Model.of_package(package.vectorizer, package.model)
    if model is None or not model.scores_probes_as(expected):
        return reference
    if path is not None:
        _write_cache(path, model, expected)
    return model


_lock = threading.Lock()
_classifier: _Scorer | None = None


def _get_classifier() -> _Scorer:
    global _classifier
    if _classifier is None:
        with _lock:
            if _classifier is None:
                _classifier = _load()
    return _classifier


def warm_up() -> None:
    """Load the model now (API and generator start-up) rather than on the first text."""
    _get_classifier()


def offensive_probability(text: str) -> float:
    """The classifier's highest probability over the text's variants, group names left
    out."""
    scored = [_GROUP_NAME.sub(" ", form) for form in variants(text)]
    return max(_get_classifier().probabilities(scored))


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

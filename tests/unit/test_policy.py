"""Content policy: the shipped classifier, its thresholds and the fast path."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api import errors
from api.policy import ScreenedQuery
from core.settings import Settings
from memes import policy
from memes.policy import CAPTION_THRESHOLD, QUERY_THRESHOLD, screen, variants


@pytest.mark.parametrize(
    "text",
    [
        "pizza at the beach",
        "this is fine",
        "stonks",
        "crème brûlée",
        "寿司が食べたい",
        "",
        "x" * 200,
    ],
)
def test_ordinary_queries_are_allowed(text: str) -> None:
    verdict = screen(text)
    assert verdict.allowed
    assert verdict.reason == "ok"
    assert verdict.score < QUERY_THRESHOLD


@pytest.mark.parametrize("text", ["fuck this", "you stupid bitch", "what an asshole"])
def test_offensive_queries_are_blocked_with_a_reason(text: str) -> None:
    verdict = screen(text)
    assert not verdict.allowed
    assert verdict.code == "offensive_language"
    assert "limit 0.95" in verdict.reason


@pytest.mark.parametrize("text", ["sh1t", "f u c k this", "f.u.c.k", "b!tch", "shît"])
def test_obfuscations_are_undone(text: str) -> None:
    assert screen(text).code == "offensive_language"


@pytest.mark.parametrize("text", ["kys", "go kill yourself", "Kill  urself lol"])
def test_self_harm_is_blocked_even_though_the_model_misses_it(text: str) -> None:
    assert policy.offensive_probability("kys") < 0.5  # why the phrase list exists
    verdict = screen(text)
    assert (verdict.allowed, verdict.code) == (False, "self_harm")


@pytest.mark.parametrize(
    "text",
    [
        "gas the jews",
        "death to muslims",
        "lynch all the immigrants",
        "k1ll the gays",
        "kill bisexuals",
    ],
)
def test_calls_for_violence_against_a_group_are_blocked(text: str) -> None:
    verdict = screen(text)
    assert (verdict.allowed, verdict.code) == (False, "violence_against_group")


@pytest.mark.parametrize(
    "text",
    [
        "kill the bugs",
        "bomb the exam",
        "shoot the moon",
        "I could kill for a pizza",
        "men in black",
    ],
)
def test_violent_words_alone_are_not_hate(text: str) -> None:
    assert screen(text).allowed


@pytest.mark.parametrize(
    "text", ["gay", "i am a gay man", "two gay dads", "queer art", "homosexual", "G4Y"]
)
def test_naming_a_group_is_not_offensive_language(text: str) -> None:
    """The classifier alone scored these 0.83-0.99: a query refused, a caption swapped."""
    assert screen(text, "query").allowed
    assert screen(text, "caption").allowed


@pytest.mark.parametrize("text", ["stupid gay", "gay fag", "dumb women", "stupid bisexuals"])
def test_an_insult_beside_a_group_name_still_counts(text: str) -> None:
    assert screen(text).code == "offensive_language"


def test_captions_are_held_to_a_stricter_threshold() -> None:
    # "I hate mondays" scores ~0.9: fine as a query, too much for our own caption.
    score = policy.offensive_probability("I hate mondays")
    assert CAPTION_THRESHOLD <= score < QUERY_THRESHOLD
    assert screen("I hate mondays", "query").allowed
    assert not screen("I hate mondays", "caption").allowed
    assert screen("I hate mondays", "query", threshold=0.5).code == "offensive_language"


def test_variants_keep_the_original_first() -> None:
    assert variants("Sh1t") == ("Sh1t", "sh1t", "shit")
    assert variants("pizza") == ("pizza",)


def test_fast_path_matches_scikit_learn() -> None:
    from profanity_check import profanity_check as package

    classifier = policy._get_classifier()
    assert isinstance(classifier, policy._Model)  # not the ~15 ms-a-call fallback
    texts = ["pizza party", "hell yeah", "you absolute idiot", "zzzz qqq", "", "The AND of it"]
    reference = package.model.predict_proba(package.vectorizer.transform(texts))[:, 1]
    assert np.allclose(classifier.probabilities(texts), reference, rtol=0, atol=1e-9)


# --- the cache of the fitted numbers -------------------------------------------------------

LOADED = (
    "import sys; from memes import policy; policy.warm_up();"
    " print(type(policy._get_classifier()).__name__, 'sklearn' in sys.modules)"
)


def test_a_later_start_reads_the_cached_numbers_without_scikit_learn(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", LOADED], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs == [["_Model", "True"], ["_Model", "False"]]
    assert [p.name for p in (tmp_path / "maas").iterdir()] == [policy_cache(tmp_path).name]


def policy_cache(root: Path) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root))
        path = policy.cache_path()
    assert path is not None and path.is_relative_to(root)
    return path


@pytest.mark.parametrize("damage", ["torn", "garbage", "wrong numbers"])
def test_a_damaged_cache_is_not_used_and_is_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    path = policy_cache(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert isinstance(policy._load(), policy._Model)
    good = path.read_bytes()
    if damage == "torn":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a numpy file")
    else:  # readable, but one weight changed: the probes score differently
        with np.load(path) as data:
            arrays = dict(data)
        arrays["weights"][:, :] *= 1.5
        with path.open("wb") as out:
            np.savez(out, **arrays)
    assert policy._read_cache(path) is None
    assert isinstance(policy._load(), policy._Model)
    assert path.read_bytes() == good
    assert policy._read_cache(path) is not None


def test_an_unwritable_cache_directory_only_costs_the_slow_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "maas").write_text("a file where the directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert isinstance(policy._load(), policy._Model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maas"]


# --- at the API edge: a refused query is never charged -------------------------------------


@pytest.fixture(scope="module")
def api() -> tuple[TestClient, list[str]]:
    charged: list[str] = []
    app = FastAPI()
    app.state.settings = Settings()
    errors.install(app)

    @app.get("/memes")
    def get_meme(query: ScreenedQuery) -> dict[str, str]:
        charged.append(query)  # stands in for appending MemeRequested (the charge)
        return {"query": query}

    return TestClient(app), charged


def test_api_refuses_a_blocked_query_before_any_charge(api: tuple[TestClient, list[str]]) -> None:
    client, charged = api
    charged.clear()
    response = client.get("/memes", params={"query": "fuck this shit"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "content_policy"
    assert body["field"] == "query"
    assert body["reason"].startswith("offensive_language: ")
    assert client.get("/memes", params={"query": "kys"}).json()["reason"].startswith("self_harm")
    assert charged == []


def test_api_passes_an_allowed_query_through(api: tuple[TestClient, list[str]]) -> None:
    client, charged = api
    charged.clear()
    response = client.get("/memes", params={"query": "pizza in paris"})
    assert response.status_code == 200
    assert charged == ["pizza in paris"]


def test_api_length_checks_still_come_first(api: tuple[TestClient, list[str]]) -> None:
    client, charged = api
    charged.clear()
    response = client.get("/memes", params={"query": ""})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert charged == []

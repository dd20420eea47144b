"""Geo lookups in MaxMind databases (memory-mapped), as Segment `context.location` fields.

Keys: `city`, `country` (English name, as Segment's spec), `countryCode` (ISO 3166-1 alpha-2: GA4
`country_id`, Meta `country`), `region` (first subdivision), `regionCode` (ISO 3166-2, "US-WA"),
`postalCode`, `latitude`, `longitude`, `timeZone`, `continentCode`, `asn`, `asOrganization`.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

import maxminddb

from proxy.enrich.ip import parse_ip
from proxy.settings import GeoSettings

# A database of another kind opens fine and then answers nothing useful: refuse it at start.
_EXPECTED_TYPES = {
    "city_db": ("city",),
    "country_db": ("country", "city"),
    "asn_db": ("asn", "isp"),
}


class GeoDatabaseError(Exception):
    """A configured database cannot be used; the message names the setting and the file."""


class GeoLookup:
    """The opened databases, and an LRU of answers: a visitor's events share one address."""

    def __init__(
        self,
        city_db: str | None = None,
        country_db: str | None = None,
        asn_db: str | None = None,
        cache_size: int = 4096,
    ) -> None:
        self._readers: list[maxminddb.Reader] = []
        self._cached = lru_cache(maxsize=cache_size)(self._lookup)
        try:
            self._city = self._open("city_db", city_db)
            # The city database holds every country field, so a country one is only a fallback.
            self._country = self._open("country_db", country_db)
            self._asn = self._open("asn_db", asn_db)
        except GeoDatabaseError:
            self.close()
            raise

    @classmethod
    def from_settings(cls, settings: GeoSettings) -> GeoLookup:
        return cls(settings.city_db, settings.country_db, settings.asn_db)

    @property
    def enabled(self) -> bool:
        return bool(self._readers)

    def lookup(self, ip: str) -> dict[str, Any]:
        """Location fields for `ip`; {} for private, loopback, malformed or unknown addresses."""
        if parse_ip(ip) is None:
            return {}  # before the cache, which garbage would otherwise fill
        return dict(self._cached(ip))  # a copy: the cached answer is shared

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
        self._readers.clear()
        self._cached.cache_clear()

    def _lookup(self, ip: str) -> dict[str, Any]:
        address = parse_ip(ip)
        if address is None or not address.is_global:
            return {}
        location: dict[str, Any] = {}
        place = _record(self._city, address) or _record(self._country, address)
        if place:
            _add_place(location, place)
        network = _record(self._asn, address)
        if network:
            _put(location, "asn", network.get("autonomous_system_number"), int)
            _put(location, "asOrganization", network.get("autonomous_system_organization"), str)
        return location

    def _open(self, key: str, path: str | None) -> maxminddb.Reader | None:
        if not path:
            return None
        try:
            reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
        except maxminddb.InvalidDatabaseError as error:
            raise GeoDatabaseError(
                f"geo.{key}: {path} is not a valid MaxMind database: {error}"
            ) from error
        except OSError as error:  # its message repeats the path, as bytes
            reason = error.strerror or str(error)
            raise GeoDatabaseError(f"geo.{key}: {path} cannot be opened: {reason}") from error
        except ValueError as error:
            raise GeoDatabaseError(f"geo.{key}: {path} cannot be opened: {error}") from error
        self._readers.append(reader)
        kind = str(reader.metadata().database_type)
        if not any(word in kind.lower() for word in _EXPECTED_TYPES[key]):
            wanted = " or ".join(_EXPECTED_TYPES[key])
            raise GeoDatabaseError(f"geo.{key}: {path} is a {kind} database, not a {wanted} one")
        return reader


def _record(
    reader: maxminddb.Reader | None, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> dict[str, Any] | None:
    if reader is None:
        return None
    record = reader.get(address)
    return record if isinstance(record, dict) else None  # gap blocks answer {}: same as None


def _add_place(location: dict[str, Any], record: dict[str, Any]) -> None:
    country = _dict(record.get("country"))
    code = country.get("iso_code")
    _put(location, "city", _name(record.get("city")), str)
    _put(location, "country", _name(country), str)
    _put(location, "countryCode", code, str)
    subdivisions = record.get("subdivisions")
    region = _dict(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else {}
    _put(location, "region", _name(region), str)
    if isinstance(code, str) and isinstance(region.get("iso_code"), str):
        location["regionCode"] = f"{code}-{region['iso_code']}"
    _put(location, "postalCode", _dict(record.get("postal")).get("code"), str)
    place = _dict(record.get("location"))
    _put(location, "latitude", place.get("latitude"), float)
    _put(location, "longitude", place.get("longitude"), float)
    _put(location, "timeZone", place.get("time_zone"), str)
    _put(location, "continentCode", _dict(record.get("continent")).get("code"), str)


def _dict(value: object) -> dict[str, Any]:
    """`value` if it is a map; {} for absent parts (and odd third-party layouts)."""
    return value if isinstance(value, dict) else {}


def _name(part: object) -> object:
    return _dict(_dict(part).get("names")).get("en")


def _put(location: dict[str, Any], key: str, value: object, kind: type) -> None:
    if isinstance(value, kind) and not isinstance(value, bool):
        location[key] = value

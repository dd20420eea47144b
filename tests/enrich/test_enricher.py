"""The Enricher: every step on one event, only adding what the client did not send."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.enrich import Enricher, GeoDatabaseError
from proxy.settings import GeoSettings, ServerSettings, Settings
from tests.shared_data import shared_dir

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
LONDON = "81.2.69.142"


@pytest.fixture(scope="module")
def enricher() -> Iterator[Enricher]:
    geo = shared_dir("testdata", "geo")
    settings = Settings(
        server=ServerSettings(
            trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
            client_ip_header="CF-Connecting-IP",
        ),
        geo=GeoSettings(
            city_db=str(geo / "GeoLite2-City-Test.mmdb"),
            asn_db=str(geo / "GeoLite2-ASN-Test.mmdb"),
        ),
    )
    enricher = Enricher(settings)
    yield enricher
    enricher.close()


def browser_event(**context: Any) -> dict[str, Any]:
    return {
        "type": "page",
        "messageId": "m-1",
        "anonymousId": "a-1",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "context": {
            "page": {"url": "https://shop.example/?utm_source=news&gclid=G-1&fbclid=F-1"},
            **context,
        },
    }


def test_a_browser_event_gets_everything(enricher: Enricher) -> None:
    event = browser_event()
    enricher.enrich(event, LONDON, IPHONE)
    context = event["context"]
    assert context["ip"] == LONDON
    assert context["location"]["city"] == "London"
    assert context["location"]["countryCode"] == "GB"
    assert context["userAgent"] == IPHONE
    assert context["os"] == {"name": "iOS", "version": "17.4"}
    assert context["device"]["type"] == "mobile"
    assert context["browser"]["name"] == "Mobile Safari"
    assert context["campaign"] == {"source": "news"}
    assert context["clickIds"] == {"gclid": "G-1", "fbclid": "F-1"}
    assert context["fbc"] == "fb.1.1767225600000.F-1"
    assert "bot" not in context


def test_what_the_client_sent_wins(enricher: Enricher) -> None:
    event = browser_event(
        ip="216.160.83.58",
        userAgent="curl/8.5.0",
        location={"city": "Tacoma"},
    )
    enricher.enrich(event, LONDON, IPHONE)
    context = event["context"]
    assert context["ip"] == "216.160.83.58"
    assert context["location"]["city"] == "Tacoma"
    assert context["location"]["regionCode"] == "US-WA"  # geo of the client's ip, keys merged
    assert context["userAgent"] == "curl/8.5.0"
    assert context["botReason"] == "http_client"


def test_a_server_event_infers_nothing_from_the_backends_request(enricher: Enricher) -> None:
    event: dict[str, Any] = {"type": "track", "event": "Order Completed"}
    enricher.enrich(event, None, None)
    assert event["context"] == {}


def test_a_server_event_carrying_the_users_facts(enricher: Enricher) -> None:
    event: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "context": {"ip": "89.160.20.115", "userAgent": IPHONE},
    }
    enricher.enrich(event, None, None)
    assert event["context"]["location"]["asOrganization"] == "Bredband2 AB"
    assert event["context"]["device"]["model"] == "iPhone"


def test_a_browser_request_without_a_user_agent_is_flagged(enricher: Enricher) -> None:
    event = browser_event()
    enricher.enrich(event, "10.0.0.1", "")
    assert event["context"]["bot"] is True
    assert event["context"]["botReason"] == "no_user_agent"
    assert "userAgent" not in event["context"]
    assert "location" not in event["context"]  # a private address


def test_a_context_that_is_not_an_object_is_left_for_validation(enricher: Enricher) -> None:
    event: dict[str, Any] = {"type": "track", "context": "nonsense"}
    enricher.enrich(event, LONDON, IPHONE)
    assert event == {"type": "track", "context": "nonsense"}


def test_client_ip_uses_the_server_settings(enricher: Enricher) -> None:
    headers = {"CF-Connecting-IP": LONDON, "X-Forwarded-For": "6.6.6.6"}
    assert enricher.client_ip("127.0.0.1", headers) == LONDON
    assert enricher.client_ip("198.51.100.1", headers) == "198.51.100.1"


def test_without_geo_databases() -> None:
    enricher = Enricher(Settings())
    event = browser_event()
    enricher.enrich(event, LONDON, None)
    assert "location" not in event["context"]
    assert event["context"]["ip"] == LONDON
    enricher.close()


def test_a_broken_database_stops_the_start(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"not a database")
    with pytest.raises(GeoDatabaseError, match=r"^geo\.city_db: .* is not a valid MaxMind"):
        Enricher(Settings(geo=GeoSettings(city_db=str(broken))))

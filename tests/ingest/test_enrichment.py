"""Enrichment on the way into the spool: the client's address from trusted hops only (spoofed
headers end to end), geo and user agent for browser sources, nothing of a backend's own request,
and a broken geo database that stops the relay from starting."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.enrich import GeoDatabaseError
from proxy.settings import GeoSettings, ServerSettings
from tests.conftest import SERVER_KEY, WEB_ORIGIN, RelayFactory, SettingsFactory
from tests.ingest.client import post, track
from tests.shared_data import shared_dir
from tests.test_cli import run_cli

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
SWEDEN = "89.160.20.115"  # in the City and the ASN test databases
SPOOFED = "6.6.6.6"


@pytest.fixture
def geo() -> Path:
    return shared_dir("testdata", "geo")


@pytest.fixture
def expected(geo: Path) -> dict[str, Any]:
    rows = json.loads((geo / "expected.json").read_text())["ips"]
    found: dict[str, Any] = next(row for row in rows if row["ip"] == SWEDEN)
    return found


def relay_settings(settings_factory: SettingsFactory, geo: Path, *trusted: str) -> Any:
    return settings_factory(
        server=ServerSettings(trusted_proxies=tuple(ipaddress.ip_network(t) for t in trusted)),
        geo=GeoSettings(
            city_db=str(geo / "GeoLite2-City-Test.mmdb"),
            asn_db=str(geo / "GeoLite2-ASN-Test.mmdb"),
        ),
    )


async def send_one(
    relay_factory: RelayFactory, settings: Any, http: aiohttp.ClientSession, **kwargs: Any
) -> dict[str, Any]:
    relay = await relay_factory(settings)
    event = kwargs.pop("event", track())
    answer = await post(http, f"{relay.url}/v1/t", event, **kwargs)
    assert answer.status == 200, answer.json
    (spooled,) = await relay.spooled()
    return spooled


async def test_a_browser_event_through_a_trusted_proxy_is_enriched(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    geo: Path,
    expected: dict[str, Any],
) -> None:
    settings = relay_settings(settings_factory, geo, "127.0.0.1/32")
    page = {"url": "https://shop.example/?utm_source=news&fbclid=F-1"}
    spooled = await send_one(
        relay_factory,
        settings,
        http,
        event=track(context={"page": page}, timestamp="2026-01-02T03:04:05.000Z"),
        # The left-most entry is whatever the client claimed; the proxy appended the real peer.
        headers={
            "X-Forwarded-For": f"{SPOOFED}, {SWEDEN}",
            "User-Agent": IPHONE,
            "Origin": WEB_ORIGIN,
        },
    )
    context = spooled["context"]
    city, asn = expected["geolite2_city"], expected["geolite2_asn"]
    assert context["ip"] == SWEDEN
    assert context["location"]["city"] == city["city_name_en"]
    assert context["location"]["countryCode"] == city["country_iso_code"]
    assert context["location"]["asn"] == asn["autonomous_system_number"]
    assert context["userAgent"] == IPHONE
    assert context["os"] == {"name": "iOS", "version": "17.4"}
    assert context["device"]["type"] == "mobile"
    assert context["campaign"] == {"source": "news"}
    # fbc needs the event's time: normalise ran first, so it is the stored timestamp's.
    stamp = datetime.fromisoformat(spooled["timestamp"].replace("Z", "+00:00"))
    assert context["fbc"] == f"fb.1.{int(stamp.timestamp() * 1000)}.F-1"
    assert "bot" not in context


async def test_spoofed_hops_through_several_trusted_proxies(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    geo: Path,
) -> None:
    settings = relay_settings(settings_factory, geo, "127.0.0.1/32", "10.0.0.0/8")
    spooled = await send_one(
        relay_factory,
        settings,
        http,
        headers={"X-Forwarded-For": f"{SPOOFED}, 10.9.9.9, {SWEDEN}, 10.0.0.2"},
    )
    assert spooled["context"]["ip"] == SWEDEN


async def test_an_untrusted_peers_forwarding_headers_are_ignored(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    geo: Path,
) -> None:
    settings = relay_settings(settings_factory, geo, "10.0.0.0/8")  # not 127.0.0.1
    spooled = await send_one(
        relay_factory,
        settings,
        http,
        headers={"X-Forwarded-For": SWEDEN, "Forwarded": f"for={SWEDEN}", "X-Real-IP": SWEDEN},
    )
    assert spooled["context"]["ip"] == "127.0.0.1"
    assert "location" not in spooled["context"]  # a loopback address has no place


async def test_a_server_sources_own_address_and_agent_are_not_the_users(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    geo: Path,
) -> None:
    settings = relay_settings(settings_factory, geo, "127.0.0.1/32")
    spooled = await send_one(
        relay_factory,
        settings,
        http,
        key=SERVER_KEY,
        headers={"X-Forwarded-For": SWEDEN, "User-Agent": "analytics-python/2.3"},
    )
    context = spooled.get("context") or {}
    assert not {"ip", "location", "userAgent", "os", "bot", "device"} & set(context)


async def test_a_browser_cannot_name_its_own_address_or_botness(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    # A script with the public key posed as visitors from anywhere, declared human: the address
    # goes to Meta and TikTok for matching, and the bot flag kept it in every vendor's numbers.
    relay = await relay_factory()
    claims = {"ip": SWEDEN, "bot": False, "botReason": None}
    headers = {"Origin": WEB_ORIGIN, "User-Agent": "curl/8.5.0"}
    batch = {"batch": [track(context=claims)], "context": {"ip": SPOOFED}}
    for answer in (
        await post(http, f"{relay.url}/v1/t", track(context=claims), headers=headers),
        await post(http, f"{relay.url}/v1/batch", batch, headers=headers),
    ):
        assert answer.status == 200
    for event in await relay.spooled():
        context = event["context"]
        assert (context["ip"], context["userAgent"]) == ("127.0.0.1", "curl/8.5.0")
        assert (context["bot"], context["botReason"]) == (True, "http_client")


async def test_a_mobile_sdk_keeps_the_agent_and_place_it_sends(
    relay_factory: RelayFactory, http: aiohttp.ClientSession
) -> None:
    # Segment's mobile SDKs hold a public key too, send no Origin, and name the device's own
    # user agent and GPS place in the body, where their HTTP library's header says less.
    relay = await relay_factory()
    place = {"latitude": 59.33, "longitude": 18.07}
    event = track(context={"userAgent": IPHONE, "location": place})
    headers = {"User-Agent": "analytics-swift/1.5.0"}
    assert (await post(http, f"{relay.url}/v1/t", event, headers=headers)).status == 200
    [spooled] = await relay.spooled()
    context = spooled["context"]
    assert (context["userAgent"], context["location"]) == (IPHONE, place)
    assert context["os"]["name"] == "iOS"
    assert "bot" not in context


async def test_a_server_source_may_name_the_users_address_and_agent(
    relay_factory: RelayFactory,
    settings_factory: SettingsFactory,
    http: aiohttp.ClientSession,
    geo: Path,
    expected: dict[str, Any],
) -> None:
    settings = relay_settings(settings_factory, geo)
    event = track(context={"ip": SWEDEN, "userAgent": IPHONE})
    spooled = await send_one(relay_factory, settings, http, key=SERVER_KEY, event=event)
    context = spooled["context"]
    assert context["location"]["city"] == expected["geolite2_city"]["city_name_en"]
    assert context["os"]["name"] == "iOS"
    assert "id" not in context["device"]  # no device cookie for a backend


async def test_a_broken_geo_database_stops_the_start_before_the_spool(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, geo: Path
) -> None:
    broken = geo / "GeoIP2-City-Test-Invalid-Node-Count.mmdb"
    settings = settings_factory(geo=GeoSettings(city_db=str(broken)))
    with pytest.raises(GeoDatabaseError, match=r"geo\.city_db: .* is not a valid MaxMind database"):
        await relay_factory(settings)
    assert not await asyncio.to_thread(Path(settings.spool.path).exists)


def test_serve_with_a_broken_geo_database_says_why_and_exits(tmp_path: Path, geo: Path) -> None:
    broken = geo / "GeoIP2-City-Test-Invalid-Node-Count.mmdb"
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\n[spool]\npath = "spool.sqlite3"\n'
        f'[geo]\ncity_db = "{broken}"\n'
    )
    result = run_cli("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert f"error: geo.city_db: {broken} is not a valid MaxMind database" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "spool.sqlite3").exists()

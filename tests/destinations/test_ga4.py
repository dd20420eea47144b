"""GA4 Measurement Protocol adapter: request grouping and limits, naming rules, identity, config,
and every golden request accepted by the fake validation server (shared/vendors/ga4.md)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.config import ConfigError
from proxy.destinations import validate
from proxy.destinations.base import HttpRequest
from proxy.destinations.ga4 import GA4
from proxy.events import Event
from proxy.settings import Settings
from tests.destinations.cases import NOW, adapter, cases, configured, serving
from tests.fakes.ga4 import FakeGA4

CONFIG = {"measurement_id": "G-ABC123XYZ", "api_secret": "s3cr3t"}


def ga4(**config: Any) -> GA4:
    return configured("ga4", GA4, {**CONFIG, **config})


def track(n: int, **fields: Any) -> Event:
    data = {
        "type": "track",
        "event": "Product Added",
        "messageId": f"m-{n}",
        "anonymousId": "a-1",
        "properties": {"product_id": "p1", "price": 15, "quantity": 2},
        "timestamp": "2025-12-31T23:59:00.000Z",
        **fields,
    }
    return Event.from_data(data)


def bodies(requests: list[HttpRequest]) -> list[dict[str, Any]]:
    return [orjson.loads(request.body) for request in requests]


@pytest.fixture
async def fake() -> AsyncIterator[FakeGA4]:
    async with serving(FakeGA4(now=lambda: NOW)) as vendor:
        yield vendor


def test_26_events_make_two_requests() -> None:
    requests = ga4().build([track(n) for n in range(26)], NOW)
    assert [len(request.event_ids) for request in requests] == [25, 1]
    assert [len(body["events"]) for body in bodies(requests)] == [25, 1]
    assert requests[1].event_ids == ("m-25",)


def test_each_client_and_each_timestamp_gets_its_own_request() -> None:
    events = [
        track(1),
        track(2, anonymousId="a-2"),
        track(3, timestamp="2025-12-31T23:59:01.000Z"),
        track(4),
    ]
    requests = ga4().build(events, NOW)
    assert [request.event_ids for request in requests] == [("m-1", "m-4"), ("m-2",), ("m-3",)]
    stamps = [body["timestamp_micros"] for body in bodies(requests)]
    assert stamps == [1767225540000000, 1767225540000000, 1767225541000000]


def test_a_landing_page_view_and_its_campaign_details_stay_in_one_request() -> None:
    context = {"campaign": {"name": "spring", "source": "google"}}
    pages = [
        Event.from_data(
            {"type": "page", "messageId": f"p-{n}", "anonymousId": "a-1", "context": context}
        )
        for n in range(13)
    ]
    requests = ga4().build(pages, NOW)  # 26 GA4 events: 12 pages fit in 25, 1 in the next
    assert [len(request.event_ids) for request in requests] == [12, 1]
    names = [event["name"] for event in bodies(requests)[1]["events"]]
    assert names == ["campaign_details", "page_view"]


@pytest.mark.parametrize(
    ("ga", "client_id"),
    [
        ({"client_id": "GA1.1.1197596843.1673515099"}, "1197596843.1673515099"),
        (
            {"client_id": "1197596843.1673515099", "session_id": "1767225000"},
            "1197596843.1673515099",
        ),
    ],
)
def test_client_id_from_the_ga_cookie_convention(ga: dict[str, str], client_id: str) -> None:
    (body,) = bodies(ga4().build([track(1, context={"ga": ga})], NOW))
    assert body["client_id"] == client_id
    if "session_id" in ga:
        assert body["events"][0]["params"]["session_id"] == 1767225000


def test_client_id_is_derived_stably_from_the_anonymous_id_otherwise() -> None:
    destination = ga4()
    derived = {bodies(destination.build([e], NOW))[0]["client_id"] for e in (track(1), track(2))}
    (client_id,) = derived
    assert re.fullmatch(r"[1-9]\d*\.[1-9]\d*", client_id)
    # Not two positive numbers (GA4 refuses them; before, the last three were sent).
    for bad in ("not-a-client-id", "GA1.1.0.0", "GA1.1.0123.456", "\u0661\u0662.\u0663\u0664"):
        bad_cookie = track(3, context={"ga": {"client_id": bad}})
        assert bodies(destination.build([bad_cookie], NOW))[0]["client_id"] == client_id, bad


@pytest.mark.parametrize("session", ["\u00b2", "0", "9" * 400, 2**63])
def test_a_session_id_ga4_cannot_take_is_left_out(session: object) -> None:
    # Before, "²" and the 400 digits failed the mapping (the event a dead letter).
    (body,) = bodies(ga4().build([track(1, context={"ga": {"session_id": session}})], NOW))
    assert "session_id" not in body["events"][0]["params"]


def test_a_client_clock_ahead_of_the_relays_is_cut_to_the_time_received() -> None:
    received = "2025-12-31T23:59:00.000Z"
    ahead = track(1, timestamp="2026-01-01T00:20:00.000Z", receivedAt=received)
    (body,) = bodies(ga4().build([ahead], NOW))
    # GA4 refuses timestamps in the future (ga4.md §100); before, the client's was sent.
    assert body["timestamp_micros"] == 1767225540_000_000


def test_custom_event_names_and_params_are_cleaned_to_ga4_rules() -> None:
    props: dict[str, Any] = {"ga_secret": 1, "_hidden": 2, "nested": {"a": 1}}
    props.update({f"prop {n}": n for n in range(30)})
    event = track(1, event="9 Lives: Video Played!", properties=props)
    (body,) = bodies(ga4().build([event], NOW))
    (sent,) = body["events"]
    assert sent["name"] == "Lives_Video_Played"
    params = sent["params"]
    assert len(params) == 25
    assert params["engagement_time_msec"] == 1
    assert params["hidden"] == 2  # a leading "_" is cleaned away
    assert "ga_secret" not in params
    assert "nested" not in params
    assert params["prop_0"] == 0


def test_long_values_are_cut_to_their_limits() -> None:
    url = "https://shop.example/" + "a" * 2000
    event = track(1, properties={"note": "x" * 150}, context={"page": {"url": url}})
    (body,) = bodies(ga4().build([event], NOW))
    params = body["events"][0]["params"]
    assert len(params["page_location"]) == 1000
    assert len(params["note"]) == 100


@pytest.mark.parametrize("name", ["error", "session_start", "!!!"])
def test_reserved_or_empty_names_are_skipped(name: str) -> None:
    assert ga4().skip_reason(track(1, event=name)) == "invalid_name"


@pytest.mark.parametrize("kind", ["identify", "screen", "alias"])
def test_calls_without_a_ga4_event_are_skipped(kind: str) -> None:
    event = Event.from_data({"type": kind, "messageId": "m-1", "anonymousId": "a-1"})
    assert ga4().skip_reason(event) == "unsupported_type"
    assert ga4().build([event], NOW) == []


def test_the_users_event_names_map_wins_and_gets_the_vendor_params() -> None:
    destination = adapter("ga4", {**CONFIG, "event_names": {"Order Placed": "purchase"}})
    event = track(1, event="Order Placed", properties={"order_id": "o-1", "revenue": 9.5})
    (body,) = bodies(destination.build([event], NOW))
    params = body["events"][0]["params"]
    assert body["events"][0]["name"] == "purchase"
    assert (params["transaction_id"], params["value"], params["currency"]) == ("o-1", 9.5, "USD")


def test_user_properties_leave_out_pii_and_keep_to_limits() -> None:
    traits = {
        "email": "a@b.co",
        "phone": "+1 650",
        "plan": "pro",
        "a_very_long_trait_key_here": "y",
    }
    traits["company_size"] = "z" * 50
    (body,) = bodies(ga4().build([track(1, context={"traits": traits})], NOW))
    assert body["user_properties"] == {
        "plan": {"value": "pro"},
        "a_very_long_trait_key_he": {"value": "y"},
        "company_size": {"value": "z" * 36},
    }


def test_user_properties_leave_out_pii_under_any_name() -> None:
    """Sites name traits as they like, and analytics.js users put them in context.traits."""
    traits = {
        "Name": "Ada Lovelace",  # a review's finds: case, other names, and numbers by value
        "userName": "ada",
        "homeAddress": "1 Main St",
        "dob": "1815-12-10",
        "tel": "+47 912 34 567",
        "reachMeAt": "+47 912 34 567",
        "signup_day": "2026-01-01",  # a date is not a phone number
        "emailAddress": "ada@example.com",
        "mobile_phone": "+47 912 34 567",
        "FullName": "Ada Lovelace",
        "date_of_birth": "1815-12-10",
        "zipCode": "0150",
        "contact": "Ada <ada@example.com>",
        "gender": "f",
        "plan_name": "pro",
        "team": "@platform",
    }
    (body,) = bodies(ga4().build([track(1, context={"traits": traits})], NOW))
    assert body["user_properties"] == {
        "gender": {"value": "f"},
        "signup_day": {"value": "2026-01-01"},
        "team": {"value": "@platform"},
    }


def test_region_and_endpoint_choose_the_base_url() -> None:
    (eu,) = ga4(region="eu").build([track(1)], NOW)
    assert eu.url.startswith("https://region1.google-analytics.com/mp/collect?")
    (local,) = ga4(endpoint="http://127.0.0.1:9101/").build([track(1)], NOW)
    assert (
        local.url == "http://127.0.0.1:9101/mp/collect?measurement_id=G-ABC123XYZ&api_secret=s3cr3t"
    )


@pytest.mark.parametrize(
    ("config", "key"),
    [({"measurement_id": "1234567"}, "measurement_id"), ({"region": "us"}, "region")],
)
def test_bad_config_names_the_key(config: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ga4(**config)


def test_events_older_than_72_hours_are_dead_letters() -> None:
    assert GA4.limits.max_age_secs == 72 * 3600


def test_a_batch_of_many_clients_becomes_requests_of_one_client_and_at_most_25() -> None:
    events = [
        Event.from_data(
            {
                "type": "track",
                "event": f"E{n}",
                "messageId": f"m-{n}",
                "anonymousId": f"a-{n % 2}",
                "timestamp": "2025-12-31T23:00:00.000Z",
            }
        )
        for n in range(60)
    ]
    requests = ga4().build(events, 1_767_225_600)
    bodies = [orjson.loads(r.body) for r in requests]
    assert sorted(len(b["events"]) for b in bodies) == [5, 5, 25, 25]
    assert all(len({b["client_id"]}) == 1 for b in bodies)
    assert len({b["client_id"] for b in bodies}) == 2


async def test_golden_requests_pass_the_fake_validation_server(fake: FakeGA4) -> None:
    async with aiohttp.ClientSession() as session:
        for case in cases("ga4"):
            destination = ga4(**{**case.config, "endpoint": fake.url})
            for request in destination.build(case.events, case.now):
                async with session.post(request.url, data=request.body, headers=request.headers):
                    pass
    assert len(fake.requests) == len(cases("ga4"))
    assert fake.problems == []


async def test_validation_reports_the_servers_messages(fake: FakeGA4) -> None:
    fake.now = time.time  # the sample event is stamped with the wall clock
    good = adapter("ga4", {**CONFIG, "endpoint": fake.url}).settings
    bad = adapter("ga4", {**CONFIG, "api_secret": "wrong", "endpoint": fake.url}, "bad").settings
    settings = Settings(destinations=(good, bad))
    assert await validate.test_destination(settings, "golden") == (
        True,
        "Valid: the validation server returned no validationMessages.",
    )
    ok, text = await validate.test_destination(settings, "bad")
    assert not ok
    assert "api_secret" in text
    assert [request.path for request in fake.requests] == ["/debug/mp/collect"] * 2
    assert await validate.test_destination(settings, "nope") == (
        False,
        "No destination named 'nope' in the config.",
    )


@pytest.mark.parametrize(
    ("preferences", "expected"),
    [
        ({"marketing": True, "analytics": True}, "GRANTED"),
        ({"marketing": False, "analytics": True}, "DENIED"),
        ({"analytics": True}, None),
    ],
)
def test_ads_consent_follows_the_marketing_category(
    preferences: dict[str, bool], expected: str | None
) -> None:
    context = {"consent": {"categoryPreferences": preferences}}
    (body,) = bodies(ga4().build([track(1, context=context)], NOW))
    if expected is None:
        assert "consent" not in body  # no answer: GA4's own default applies
    else:
        assert body["consent"] == {"ad_user_data": expected, "ad_personalization": expected}
    other = ga4(ads_consent_category="ads").build([track(1, context=context)], NOW)
    assert "consent" not in bodies(other)[0]


def test_events_with_different_ads_consent_go_in_separate_requests() -> None:
    yes = {"consent": {"categoryPreferences": {"marketing": True}}}
    no = {"consent": {"categoryPreferences": {"marketing": False}}}
    sent = bodies(ga4().build([track(1, context=yes), track(2, context=no)], NOW))
    assert [body["consent"]["ad_user_data"] for body in sent] == ["GRANTED", "DENIED"]


def test_user_location_comes_from_the_iso_codes_geo_enrichment_writes() -> None:
    # enrich/geo.py writes English names to country/region and the codes to countryCode and
    # regionCode; before, only the names were read, so user_location was never sent (§3).
    location = {
        "city": "Seattle",
        "country": "United States",
        "countryCode": "US",
        "region": "Washington",
        "regionCode": "US-WA",
    }
    (body,) = bodies(ga4().build([track(1, context={"location": location})], NOW))
    assert body["user_location"] == {"country_id": "US", "city": "Seattle", "region_id": "US-WA"}
    # A client's own two-letter country still counts.
    (body,) = bodies(ga4().build([track(2, context={"location": {"country": "no"}})], NOW))
    assert body["user_location"] == {"country_id": "NO"}


def test_a_promotion_becomes_ga4_promotion_params_and_items() -> None:
    # ga4.md §9: Promotion Viewed -> view_promotion with items. Segment's promotion fields went
    # out as raw params ("name", "creative") that no GA4 report reads.
    properties = {
        "promotion_id": "promo_1",
        "name": "Summer sale",
        "creative": "banner_a",
        "position": "home_top",
        "products": [{"product_id": "p1", "name": "Sandals"}, {"sku": "s2"}],
    }
    viewed = track(1, event="Promotion Viewed", properties=properties)
    clicked = track(2, event="Promotion Clicked", properties={"promotion_id": "promo_1"})
    sent = [e for body in bodies(ga4().build([viewed, clicked], NOW)) for e in body["events"]]
    promotion = {
        "promotion_id": "promo_1",
        "promotion_name": "Summer sale",
        "creative_name": "banner_a",
        "creative_slot": "home_top",
    }
    assert sent[0]["name"] == "view_promotion"
    assert sent[0]["params"].items() >= promotion.items()
    assert sent[0]["params"]["items"] == [
        {"item_id": "p1", "item_name": "Sandals", **promotion},
        {"item_id": "s2", **promotion},
    ]
    assert not {"name", "creative", "position", "products"} & sent[0]["params"].keys()
    assert sent[1]["name"] == "select_promotion"
    assert sent[1]["params"]["promotion_id"] == "promo_1"
    assert "items" not in sent[1]["params"]  # no products: an item needs an id or a name

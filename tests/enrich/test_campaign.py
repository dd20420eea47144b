"""Campaign and click ids from the page URL; Meta's fbc built from an fbclid."""

from __future__ import annotations

from typing import Any

import pytest

import proxy.enrich.campaign as campaign_module
from proxy.enrich.campaign import CLICK_IDS, apply_campaign, build_fbc, parse_url

LANDING = (
    "https://shop.example/spring?utm_source=google&utm_medium=cpc&utm_campaign=spring%20sale"
    "&utm_term=red+shoes&utm_content=ad_1&utm_creative_format=video&gclid=Cj0KCQ_Bw-E"
    "&fbclid=IwAR2F4-dbP0l7Mn1IawQQ&page=2#reviews"
)
TIMESTAMP = "2026-01-01T00:01:00.123Z"
TIMESTAMP_MS = 1_767_225_660_123


def page_event(url: object, **context: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "timestamp": TIMESTAMP,
        "context": {"page": {"url": url}, **context},
    }


def test_parse_url() -> None:
    campaign, click_ids = parse_url(LANDING)
    assert campaign == {
        "source": "google",
        "medium": "cpc",
        "name": "spring sale",
        "term": "red shoes",
        "content": "ad_1",
        "creative_format": "video",
    }
    assert click_ids == {"gclid": "Cj0KCQ_Bw-E", "fbclid": "IwAR2F4-dbP0l7Mn1IawQQ"}


@pytest.mark.parametrize("name", sorted(CLICK_IDS))
def test_every_click_id(name: str) -> None:
    assert parse_url(f"https://shop.example/?{name}=abc-123")[1] == {name: "abc-123"}


def test_click_ids_are_kept_as_written() -> None:
    _, click_ids = parse_url("https://shop.example/?fbclid=IwAR%2Fab+Cd&GCLID=x&ScCid=S1")
    assert click_ids == {"fbclid": "IwAR%2Fab+Cd", "ScCid": "S1"}  # never decoded; names exact


def test_the_last_repeat_wins_and_empty_values_say_nothing() -> None:
    campaign, _ = parse_url("https://a.example/?utm_source=a&utm_source=b&utm_medium=&utm_=x")
    assert campaign == {"source": "b"}


def test_a_second_question_mark_is_read_through() -> None:
    assert parse_url("https://a.example/?ref=1?utm_source=news")[0] == {"source": "news"}


@pytest.mark.parametrize(
    "garbage",
    ["", "not a url", "http://[::1", "https://a.example/?%zz=%zz&utm_source=%E0%A4%A", "?&&=&=="],
)
def test_garbage_urls_never_raise(garbage: str) -> None:
    parse_url(garbage)


def test_build_fbc() -> None:
    assert build_fbc("IwAR2F4-dbP0l7Mn1IawQQ", 1767225000000) == (
        "fb.1.1767225000000.IwAR2F4-dbP0l7Mn1IawQQ"
    )


def test_apply_fills_campaign_click_ids_and_fbc() -> None:
    event = page_event(LANDING)
    apply_campaign(event, event["context"])
    context = event["context"]
    assert context["campaign"]["name"] == "spring sale"
    assert context["clickIds"] == {"gclid": "Cj0KCQ_Bw-E", "fbclid": "IwAR2F4-dbP0l7Mn1IawQQ"}
    assert context["fbc"] == f"fb.1.{TIMESTAMP_MS}.IwAR2F4-dbP0l7Mn1IawQQ"


def test_the_clients_campaign_is_kept_whole() -> None:
    event = page_event(LANDING, campaign={"name": "from a cookie"})
    apply_campaign(event, event["context"])
    assert event["context"]["campaign"] == {"name": "from a cookie"}


def test_click_ids_merge_one_by_one() -> None:
    event = page_event(LANDING, clickIds={"gclid": "client", "ttclid": "E.C.P.x"})
    apply_campaign(event, event["context"])
    assert event["context"]["clickIds"] == {
        "gclid": "client",
        "ttclid": "E.C.P.x",
        "fbclid": "IwAR2F4-dbP0l7Mn1IawQQ",
    }


@pytest.mark.parametrize(
    ("context", "properties"),
    [({"fbc": "fb.1.1.client"}, {}), ({}, {"fbc": "fb.1.1.client"})],
)
def test_the_clients_fbc_is_kept(context: dict[str, Any], properties: dict[str, Any]) -> None:
    event = page_event(LANDING, **context)
    event["properties"] = properties
    apply_campaign(event, event["context"])
    assert event["context"].get("fbc") == context.get("fbc")


def test_fbc_from_a_client_sent_fbclid() -> None:
    event = page_event("https://shop.example/", clickIds={"fbclid": "IwAR-remembered"})
    event["timestamp"] = "not a time"
    event["receivedAt"] = TIMESTAMP
    apply_campaign(event, event["context"])
    assert event["context"]["fbc"] == f"fb.1.{TIMESTAMP_MS}.IwAR-remembered"


def test_no_event_time_no_fbc() -> None:
    event = page_event(LANDING)
    del event["timestamp"]
    apply_campaign(event, event["context"])
    assert "fbc" not in event["context"]
    assert event["context"]["clickIds"]["fbclid"] == "IwAR2F4-dbP0l7Mn1IawQQ"


def test_page_calls_may_carry_the_url_in_properties() -> None:
    event: dict[str, Any] = {"type": "page", "properties": {"url": LANDING}, "context": {}}
    apply_campaign(event, event["context"])
    assert event["context"]["campaign"]["source"] == "google"
    # On a track call, properties.url is some other page (a product's), not this one.
    track: dict[str, Any] = {"type": "track", "properties": {"url": LANDING}, "context": {}}
    apply_campaign(track, track["context"])
    assert track["context"] == {}


@pytest.mark.parametrize("url", [None, 42, "", "http://[::1", ["https://a.example/?gclid=x"]])
def test_nothing_to_read_adds_nothing(url: object) -> None:
    event = page_event(url)
    apply_campaign(event, event["context"])
    assert event["context"] == {"page": {"url": url}}


def test_odd_client_shapes_are_left_alone() -> None:
    event = page_event(LANDING, clickIds=["gclid"], campaign="spring")
    apply_campaign(event, event["context"])
    assert event["context"]["clickIds"] == ["gclid"]
    assert event["context"]["campaign"] == "spring"
    assert "fbc" not in event["context"]


def test_a_long_url_is_parsed_and_not_remembered() -> None:
    # A batch of a few MB can carry URLs that long; remembered, 4,096 of them grew the relay
    # by the gigabyte (a fuzzing helper saw 15 MB per refused request).
    url = "https://shop.example/?utm_source=news&gclid=g-1&x=" + "a" * 100_000 + "#top"
    before = campaign_module._parse_query.cache_info().currsize
    assert parse_url(url) == ({"source": "news"}, {"gclid": "g-1"})
    assert campaign_module._parse_query.cache_info().currsize == before
    short = "https://shop.example/?utm_source=news&gclid=g-2"
    assert parse_url(short) == ({"source": "news"}, {"gclid": "g-2"})
    assert campaign_module._parse_query.cache_info().currsize == before + 1
    # Read by the same rules as a short one: a "?" inside the fragment is no query.
    hashed = "https://shop.example/#/x?utm_source=news&fbclid=F&x=" + "a" * 3000
    assert parse_url(hashed) == ({}, {})

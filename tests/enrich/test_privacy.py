"""Issue 6 privacy rules as pure functions: query redaction, Global Privacy Control, what a
missing consent answer means, and per-destination IP handling."""

from __future__ import annotations

import time
from typing import Any

import pytest

from proxy.deliver.privacy import apply_ip
from proxy.enrich.consent import apply_gpc, gpc_header, refused
from proxy.enrich.redact import Redactor
from proxy.events import Event
from proxy.identity.profile import attach
from proxy.settings import PrivacySettings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://s.example/p?utm_source=x&token=abc&q=shoes", "https://s.example/p?utm_source=x&q=shoes"),
        ("https://s.example/?next=bob%40mail.example", "https://s.example/"),
        ("https://s.example/?utm_term=bob@mail.example&gclid=Cj0", "https://s.example/?gclid=Cj0"),
        ("?Password=hunter2&page=2", "?page=2"),
        ("?session=1", ""),
        ("https://s.example/plain", "https://s.example/plain"),
    ],
)  # fmt: skip
def test_default_redaction(url: str, expected: str) -> None:
    assert Redactor(PrivacySettings()).url(url) == expected


def test_deny_and_allow_lists() -> None:
    redactor = Redactor(PrivacySettings(redact_query_params=("ref",), keep_query_params=("q",)))
    url = "https://s.example/?q=a&ref=b&other=c&utm_medium=d&fbclid=e"
    assert redactor.url(url) == "https://s.example/?q=a&utm_medium=d&fbclid=e"


def test_every_url_field_is_redacted() -> None:
    event: dict[str, Any] = {
        "type": "page",
        "properties": {"url": "https://s.example/?email=a", "search": "?email=a"},
        "context": {
            "page": {"url": "https://s.example/?code=1", "referrer": "https://r.example/?key=k"},
            "campaign": {"name": "spring", "term": "bob@mail.example"},
        },
    }
    Redactor(PrivacySettings()).event(event)
    assert event["properties"] == {"url": "https://s.example/", "search": ""}
    assert event["context"]["page"] == {
        "url": "https://s.example/",
        "referrer": "https://r.example/",
    }
    assert event["context"]["campaign"] == {"name": "spring"}


def test_addresses_in_click_ids_and_fbc_are_dropped_too() -> None:
    # ?fbclid=jane.doe@example.com reached the webhook in clickIds and Meta in fbc, though the
    # URL it came from was redacted (a fuzzing helper's find).
    event: dict[str, Any] = {
        "type": "track",
        "context": {
            "campaign": {"term": "jane.doe@example.com"},
            "clickIds": {"fbclid": "jane.doe@example.com", "gclid": "Cj0KCQ"},
            "fbc": "fb.1.1767225600000.jane.doe@example.com",
        },
    }
    Redactor(PrivacySettings()).event(event)
    assert event["context"] == {"clickIds": {"gclid": "Cj0KCQ"}}


def test_a_huge_value_ending_in_at_is_checked_in_linear_time() -> None:
    # A backtracking address pattern took seconds for 40 KB and hours for this megabyte: the
    # loop would stall on one request. Linear, it takes milliseconds; 5 s is only a backstop.
    value = "a" * 1_000_000 + "@"
    event: dict[str, Any] = {
        "type": "page",
        "context": {"page": {"url": f"https://s.example/?q={value}"}, "campaign": {"term": value}},
    }
    started = time.monotonic()
    Redactor(PrivacySettings()).event(event)
    assert time.monotonic() - started < 5
    assert event["context"]["campaign"] == {"term": value}  # no address in it: kept


def gpc_context(**preferences: bool) -> dict[str, Any]:
    return {"consent": {"categoryPreferences": dict(preferences)}}


def test_gpc_refuses_marketing_even_when_granted() -> None:
    context = gpc_context(marketing=True, analytics=True)
    apply_gpc(context, "1", PrivacySettings())
    assert context["consent"]["categoryPreferences"] == {"marketing": False, "analytics": True}


def test_gpc_can_yield_to_a_grant() -> None:
    privacy = PrivacySettings(gpc_overrides_consent=False)
    granted = gpc_context(marketing=True)
    apply_gpc(granted, "1", privacy)
    assert granted["consent"]["categoryPreferences"] == {"marketing": True}
    unanswered: dict[str, Any] = {"globalPrivacyControl": True}
    apply_gpc(unanswered, None, privacy)
    assert unanswered["consent"]["categoryPreferences"] == {"marketing": False}


def test_do_not_track_counts_as_gpc_only_when_honoured() -> None:
    honour = PrivacySettings(honor_dnt=True)
    assert gpc_header({"DNT": "1"}, PrivacySettings()) is None  # off by default
    assert gpc_header({"DNT": "1"}, honour) == "1"
    assert gpc_header({"DNT": "0", "Sec-GPC": "1"}, honour) == "1"
    assert gpc_header({"DNT": "0"}, honour) is None
    context = gpc_context(marketing=True)
    apply_gpc(context, gpc_header({"DNT": " 1 "}, honour), honour)
    assert context["consent"]["categoryPreferences"] == {"marketing": False}


@pytest.mark.parametrize(
    "value", ["granted", "CPXxRfAPXxRfAAfKABENB-CgAP_AAH_AAAqIHWtf", [], True, 0]
)
def test_gpc_refuses_whatever_shape_the_pages_consent_has(value: object) -> None:
    # A consent tool that writes a string (a TCF string, "granted") turned GPC off: the event
    # reached a marketing destination (a fuzzing helper's find). The value is kept beside.
    context: dict[str, Any] = {"consent": value}
    apply_gpc(context, "1", PrivacySettings())
    assert context["consent"] == {"value": value, "categoryPreferences": {"marketing": False}}
    assert refused(context, ["marketing"], required=False)


def test_a_users_refusal_reaches_a_server_event_whatever_its_consent_shape() -> None:
    context: dict[str, Any] = {"consent": "granted", "campaign": {"name": "own"}}
    attach(context, {"consent": {"marketing": False, "analytics": True}})
    assert context["consent"]["categoryPreferences"] == {"marketing": False, "analytics": True}
    own = {"consent": {"categoryPreferences": {"analytics": False}}}
    attach(own, {"consent": {"marketing": False, "analytics": True}})
    assert own["consent"]["categoryPreferences"] == {"analytics": False, "marketing": False}


def test_without_gpc_nothing_changes() -> None:
    context: dict[str, Any] = {}
    apply_gpc(context, "0", PrivacySettings())
    apply_gpc(context, None, PrivacySettings())
    assert context == {}


def test_a_missing_answer_is_allowed_unless_consent_is_required() -> None:
    assert not refused({}, ["marketing"], required=False)
    assert refused({}, ["marketing"], required=True)
    assert not refused(gpc_context(marketing=True), ["marketing"], required=True)
    assert refused(gpc_context(marketing=False), ["marketing"], required=False)
    assert not refused({}, ["necessary"], required=True)  # cannot be refused


@pytest.mark.parametrize(
    ("mode", "ip", "expected"),
    [
        ("full", "203.0.113.7", "203.0.113.7"),
        ("truncate", "203.0.113.7", "203.0.113.0"),
        ("truncate", "2001:db8:1:2::7", "2001:db8:1::"),
        ("truncate", "not an ip", None),
        ("drop", "203.0.113.7", None),
    ],
)
def test_ip_per_destination(mode: Any, ip: str, expected: str | None) -> None:
    stored = Event.from_data({"type": "track", "messageId": "m", "context": {"ip": ip}})
    sent = apply_ip(stored, mode)
    assert sent.context.get("ip") == expected
    assert stored.context["ip"] == ip  # other destinations still get the stored event
    assert (b'"ip"' in sent.raw) is (expected is not None)


def test_a_long_url_is_redacted_and_not_remembered() -> None:
    redactor = Redactor(PrivacySettings())
    long = "https://s.example/?email=a&q=" + "b" * 100_000
    event: dict[str, Any] = {"type": "track", "context": {"page": {"url": long}}}
    redactor.event(event)
    assert event["context"]["page"]["url"] == "https://s.example/?q=" + "b" * 100_000
    assert redactor.url.cache_info().currsize == 0  # a batch of such URLs grew it by the MB
    redactor.event({"type": "track", "context": {"page": {"url": "https://s.example/?q=1"}}})
    assert redactor.url.cache_info().currsize == 1

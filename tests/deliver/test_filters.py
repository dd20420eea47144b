"""Filters: types allow list, events allow / exclude_events deny (exact or fnmatch, case-sensitive),
consent categories."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.deliver.filters import filter_reason
from proxy.events import Event
from proxy.settings import DestinationSettings


def settings(**fields: Any) -> DestinationSettings:
    return DestinationSettings(name="d", type="debug", config=None, **fields)


def track(name: str, **fields: Any) -> Event:
    return Event.from_data({"type": "track", "event": name, "messageId": "m", **fields})


def consent(**preferences: bool) -> dict[str, Any]:
    return {"consent": {"categoryPreferences": preferences}}


def test_no_settings_pass_everything() -> None:
    assert filter_reason(track("Anything"), settings()) is None


def test_types_allow_list() -> None:
    only_track = settings(types=("track",))
    assert filter_reason(track("A"), only_track) is None
    page = Event.from_data({"type": "page", "name": "Home", "messageId": "m"})
    assert filter_reason(page, only_track) == "types"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Order Completed", None),
        ("Order Refunded", None),
        ("order completed", "events"),  # case-sensitive
        ("Signed Up", "events"),
        ("Checkout Started", None),
    ],
)
def test_events_allow_list_takes_names_and_patterns(name: str, reason: str | None) -> None:
    allow = settings(events=("Order *", "Checkout Started"))
    assert filter_reason(track(name), allow) == reason


def test_exclude_events_deny_list() -> None:
    deny = settings(exclude_events=("Debug *", "Heartbeat"))
    assert filter_reason(track("Debug ping"), deny) == "exclude_events"
    assert filter_reason(track("Heartbeat"), deny) == "exclude_events"
    assert filter_reason(track("Heartbeats"), deny) is None


def test_a_name_with_pattern_characters_matches_itself() -> None:
    assert filter_reason(track("Added [beta]"), settings(events=("Added [beta]",))) is None


def test_name_filters_leave_unnamed_types_alone() -> None:
    identify = Event.from_data({"type": "identify", "userId": "u", "messageId": "m"})
    assert filter_reason(identify, settings(events=("Order *",))) is None


def test_page_names_are_filtered_like_event_names() -> None:
    page = Event.from_data({"type": "page", "name": "Admin", "messageId": "m"})
    assert filter_reason(page, settings(exclude_events=("Admin",))) == "exclude_events"


def test_consent_refused_for_a_needed_category() -> None:
    needs = settings(consent=("marketing",))
    assert filter_reason(track("A", context=consent(marketing=False)), needs) == "consent"
    assert filter_reason(track("A", context=consent(marketing=True)), needs) is None
    # An answer about other categories leaves marketing unanswered.
    only_analytics = track("A", context=consent(analytics=False))
    assert filter_reason(only_analytics, needs) == "consent"
    assert filter_reason(only_analytics, needs, consent_required=False) is None


def test_events_without_consent_information_pass_only_when_consent_is_not_required() -> None:
    needs = settings(consent=("marketing",))
    assert filter_reason(track("A"), needs) == "consent"  # the default: no answer is no consent
    assert filter_reason(track("A", context={"consent": "yes"}), needs) == "consent"
    granted = track("A", context=consent(marketing=True))
    assert filter_reason(granted, needs) is None
    assert filter_reason(track("A"), needs, consent_required=False) is None
    malformed = track("A", context={"consent": "yes"})
    assert filter_reason(malformed, needs, consent_required=False) is None


def test_consent_is_ignored_when_the_destination_needs_none() -> None:
    assert filter_reason(track("A", context=consent(marketing=False)), settings()) is None


# Segment's `integrations` object (segment.md, the message table): the sender's own choice of
# destinations, settled as filtered:integrations.


def named(name: str, kind: str) -> DestinationSettings:
    return DestinationSettings(name=name, type=kind, config=None)


def routed(integrations: object, **fields: Any) -> Event:
    """A track event as ingest stores it: a non-empty `integrations` object first."""
    data = {"integrations": integrations, "type": "track", "event": "A", "messageId": "m"}
    return Event.from_data({**data, **fields})


MIXPANEL = named("product", "mixpanel")  # Segment calls the type "Mixpanel"
GA4 = named("ga4", "ga4")


def test_all_false_and_one_true_sends_only_to_that_one() -> None:
    only_mixpanel = routed({"All": False, "Mixpanel": True})
    assert filter_reason(only_mixpanel, MIXPANEL) is None
    assert filter_reason(only_mixpanel, GA4) == "integrations"
    assert filter_reason(only_mixpanel, named("d", "debug")) == "integrations"


def test_all_false_does_not_stop_what_goes_on_to_segment() -> None:
    # analytics.js sends Segment.io every event whatever `All` says, and Segment applies the
    # object to its own destinations: {"All": false, "Mixpanel": true} must reach Segment to
    # reach its Mixpanel. Only the relay's segment destination's own names turn it off.
    segment = named("seg", "segment")
    assert filter_reason(routed({"All": False, "Mixpanel": True}), segment) is None
    assert filter_reason(routed({"All": False, "Segment.io": False}), segment) == "integrations"
    assert filter_reason(routed({"seg": False}), segment) == "integrations"


def test_one_false_turns_off_only_that_one() -> None:
    not_mixpanel = routed({"Mixpanel": False})
    assert filter_reason(not_mixpanel, MIXPANEL) == "integrations"
    assert filter_reason(not_mixpanel, GA4) is None
    assert filter_reason(routed({"All": True, "Mixpanel": False}), MIXPANEL) == "integrations"


def test_an_options_object_turns_on() -> None:
    options = routed({"All": False, "Amplitude": {"session_id": 1}, "ga4": {}})
    assert filter_reason(options, named("amp", "amplitude")) is None
    assert filter_reason(options, GA4) is None
    assert filter_reason(options, MIXPANEL) == "integrations"


def test_all_defaults_to_true_and_an_empty_object_chooses_nothing() -> None:
    assert filter_reason(routed({"Amplitude": False}), MIXPANEL) is None
    assert filter_reason(routed({}), MIXPANEL) is None
    assert filter_reason(routed({"All": False}), MIXPANEL) == "integrations"


def test_keys_are_case_sensitive() -> None:
    assert filter_reason(routed({"mixpanel": False}), MIXPANEL) is None
    assert filter_reason(routed({"All": False, "mixpanel": True}), MIXPANEL) == "integrations"
    assert filter_reason(routed({"all": False}), MIXPANEL) is None
    assert filter_reason(routed({"Product": False}), MIXPANEL) is None


@pytest.mark.parametrize(
    ("kind", "segment_name"),
    [
        ("ga4", "Google Analytics 4"),
        ("ga4", "Google Analytics 4 Cloud"),
        ("meta_capi", "Facebook Conversions API"),
        ("mixpanel", "Mixpanel"),
        ("amplitude", "Amplitude"),
        ("posthog", "PostHog"),
        ("segment", "Segment"),
        ("tiktok", "TikTok Conversions"),
        ("webhook", "Webhooks"),
    ],
)
def test_each_type_answers_to_its_segment_catalog_name(kind: str, segment_name: str) -> None:
    settings = named("mine", kind)
    assert filter_reason(routed({segment_name: False}), settings) == "integrations"
    assert filter_reason(routed({"All": False, segment_name: True}), settings) is None


def test_the_configured_name_answers_too_also_for_webhook_and_debug() -> None:
    for settings in (named("hook", "webhook"), named("dbg", "debug"), GA4, MIXPANEL):
        only = routed({"All": False, settings.name: True})
        assert filter_reason(only, settings) is None
        assert filter_reason(routed({settings.name: False}), settings) == "integrations"


def test_the_configured_name_wins_over_the_catalog_name() -> None:
    assert filter_reason(routed({"Mixpanel": False, "product": True}), MIXPANEL) is None
    assert filter_reason(routed({"Mixpanel": True, "product": False}), MIXPANEL) == "integrations"
    # And the object's order does not matter.
    assert filter_reason(routed({"product": True, "Mixpanel": False}), MIXPANEL) is None


def test_catalog_names_of_one_type_disagreeing_turn_it_on() -> None:
    both = {"All": False, "Google Analytics 4": False, "Google Analytics 4 Cloud": True}
    assert filter_reason(routed(both), GA4) is None
    off = {"Google Analytics 4": False, "Google Analytics 4 Cloud": False}
    assert filter_reason(routed(off), GA4) == "integrations"


@pytest.mark.parametrize("value", [None, 0, "false", [], True])
def test_only_false_turns_off(value: object) -> None:
    assert filter_reason(routed({"All": False, "Mixpanel": value}), MIXPANEL) is None
    assert filter_reason(routed({"Mixpanel": value}), MIXPANEL) is None
    assert filter_reason(routed({"All": value}), MIXPANEL) is None


@pytest.mark.parametrize("value", [True, False, "Mixpanel", ["Mixpanel"], None, 1])
def test_integrations_that_is_not_an_object_is_ignored(value: object) -> None:
    assert filter_reason(routed(value), MIXPANEL) is None


def test_integrations_elsewhere_in_the_event_is_not_routing() -> None:
    nested = track("A", properties={"integrations": {"All": False}})
    assert filter_reason(nested, MIXPANEL) is None
    in_context = track("A", context={"integrations": {"Mixpanel": False}})
    assert filter_reason(in_context, MIXPANEL) is None


def test_integrations_come_before_the_other_filters() -> None:
    only_track = settings(types=("track",))
    page = routed({"d": False}, type="page")
    assert filter_reason(page, only_track) == "integrations"
    assert filter_reason(routed({"d": False}), only_track) == "integrations"


def test_integrations_not_first_in_the_stored_bytes_are_not_read() -> None:
    # Ingest puts them first; an event spooled by a relay from before routing goes everywhere,
    # as it would have then.
    older = track("A", integrations={"All": False})
    assert older.raw.startswith(b'{"type":')
    assert filter_reason(older, MIXPANEL) is None
    assert filter_reason(routed({"All": False}), MIXPANEL) == "integrations"

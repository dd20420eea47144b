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
    assert filter_reason(track("A", context=consent(analytics=False)), needs) is None


def test_events_without_consent_information_pass_unless_consent_is_required() -> None:
    needs = settings(consent=("marketing",))
    assert filter_reason(track("A"), needs) is None
    assert filter_reason(track("A", context={"consent": "yes"}), needs) is None
    assert filter_reason(track("A"), needs, consent_required=True) == "consent"
    granted = track("A", context=consent(marketing=True))
    assert filter_reason(granted, needs, consent_required=True) is None


def test_consent_is_ignored_when_the_destination_needs_none() -> None:
    assert filter_reason(track("A", context=consent(marketing=False)), settings()) is None

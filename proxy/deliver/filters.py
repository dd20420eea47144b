"""Which events a destination never receives: its `types`, `events` / `exclude_events` and
`consent` settings, what the adapter cannot take, and what is too old for it. Pure; a filtered
event is settled as done with `Outcome.filtered(reason)`, the reason naming the setting."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from proxy.destinations.base import Destination
from proxy.events import Event
from proxy.outcomes import Outcome
from proxy.settings import DestinationSettings

# Only these types carry a name (`event` for track, `name` for page / screen); the name filters
# leave identify, group and alias alone: `types` is the setting that governs those.
NAMED_TYPES = frozenset({"track", "page", "screen"})


def filter_reason(event: Event, settings: DestinationSettings) -> str | None:
    """Why `event` is not for this destination, or None when it is."""
    if not (settings.types or settings.events or settings.exclude_events or settings.consent):
        return None  # the common case; also spares decoding a stored event just to look
    kind = event.data.get("type")
    if settings.types and kind not in settings.types:
        return "types"
    if kind in NAMED_TYPES:
        name = event.name or ""
        if settings.events and not matches(name, settings.events):
            return "events"
        if settings.exclude_events and matches(name, settings.exclude_events):
            return "exclude_events"
    if settings.consent and _refused(event, settings.consent):
        return "consent"
    return None


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Exact names or fnmatch patterns, case-sensitive (event names are case-sensitive)."""
    return any(name == pattern or fnmatchcase(name, pattern) for pattern in patterns)


def _refused(event: Event, categories: Sequence[str]) -> bool:
    """True when the event's consent preferences turn off a category the destination needs.

    Events without consent information pass; the consent policy (enrich/consent.py) will decide
    what a missing answer means.
    """
    consent = event.context.get("consent")
    if not isinstance(consent, dict):
        return False
    preferences = consent.get("categoryPreferences")
    if not isinstance(preferences, dict):
        return False
    return any(preferences.get(category) is False for category in categories)


def screen(event: Event, destination: Destination[Any], now: float) -> Outcome | None:
    """The final Outcome of an event that is not sent at all (filtered, unsupported, too old)."""
    reason = filter_reason(event, destination.settings) or destination.skip_reason(event)
    if reason is not None:
        return Outcome.filtered(reason)
    max_age = destination.limits.max_age_secs
    if max_age is not None and now - event.timestamp.timestamp() > max_age:
        return Outcome.dead("too_old")
    return None

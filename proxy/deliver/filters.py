"""Which events a destination never receives: its `types`, `events` / `exclude_events` and
`consent` settings, what the adapter cannot take, and what is too old for it. Pure; a filtered
event is settled as done with `Outcome.filtered(reason)`, the reason naming the setting."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from proxy.destinations.base import Destination
from proxy.enrich.consent import refused
from proxy.events import Event
from proxy.outcomes import Outcome
from proxy.settings import DestinationSettings

# Only these types carry a name (`event` for track, `name` for page / screen); the name filters
# leave identify, group and alias alone: `types` is the setting that governs those.
NAMED_TYPES = frozenset({"track", "page", "screen"})


def filter_reason(
    event: Event, settings: DestinationSettings, consent_required: bool = False
) -> str | None:
    """Why `event` is not for this destination, or None when it is.

    `consent_required` is `[privacy] consent_required`: whether an unanswered category refuses."""
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
    if settings.consent and refused(event.context, settings.consent, consent_required):
        return "consent"
    return None


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Exact names or fnmatch patterns, case-sensitive (event names are case-sensitive)."""
    return any(name == pattern or fnmatchcase(name, pattern) for pattern in patterns)


def stops_nothing(destination: Destination[Any]) -> bool:
    """True when `screen` lets every event through: no filter setting, no adapter skip_reason,
    no age limit. The worker then spares each event the decoding the checks would need."""
    settings = destination.settings
    return (
        not (settings.types or settings.events or settings.exclude_events or settings.consent)
        and type(destination).skip_reason is Destination.skip_reason
        and destination.limits.max_age_secs is None
    )


def screen(
    event: Event, destination: Destination[Any], now: float, consent_required: bool = False
) -> Outcome | None:
    """The final Outcome of an event that is not sent at all (filtered, unsupported, too old)."""
    reason = filter_reason(event, destination.settings, consent_required)
    reason = reason or destination.skip_reason(event)
    if reason is not None:
        return Outcome.filtered(reason)
    max_age = destination.limits.max_age_secs
    if max_age is not None and now - event.timestamp.timestamp() > max_age:
        return Outcome.dead("too_old")
    return None

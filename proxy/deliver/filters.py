"""Which events a destination never receives: those whose Segment `integrations` object turns it
off, its `types`, `events` / `exclude_events` and `consent` settings, what the adapter cannot
take, and what is too old for it. Pure; a filtered event is settled as done with
`Outcome.filtered(reason)`, the reason naming the setting (or `integrations`)."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from proxy.destinations import SEGMENT_NAMES
from proxy.destinations.base import Destination
from proxy.enrich.consent import refused
from proxy.events import Event
from proxy.outcomes import Outcome
from proxy.settings import DestinationSettings

# Only these types carry a name (`event` for track, `name` for page / screen); the name filters
# leave identify, group and alias alone: `types` is the setting that governs those.
NAMED_TYPES = frozenset({"track", "page", "screen"})

# Stored events are compact orjson (no spaces), and ingest puts a non-empty `integrations` object
# first (ingest/pipeline.py, normalise), so the events that may choose destinations start with
# these bytes. The others, nearly all, are never decoded for routing, nor even read: searching
# each event for the key (about 1 µs per KB) made tests/bench/bench_delivery 10-20% slower. An
# empty `{}` turns nothing off. Events spooled by a relay from before routing keep their order,
# and go out as they would have then (everywhere).
NAMES_DESTINATIONS = b'{"integrations":{"'


def names_destinations(raw: bytes) -> bool:
    """Whether a stored event carries an `integrations` object that may choose destinations."""
    return raw.startswith(NAMES_DESTINATIONS)


def filter_reason(
    event: Event, settings: DestinationSettings, consent_required: bool = True
) -> str | None:
    """Why `event` is not for this destination, or None when it is.

    `consent_required` is `[privacy] consent_required`: whether an unanswered category refuses."""
    if turned_off(event, settings):
        return "integrations"  # the sender's own choice, ahead of the config's filters
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


def turned_off(event: Event, settings: DestinationSettings) -> bool:
    """Whether the event's own `integrations` object turns this destination off."""
    return names_destinations(event.raw) and routed_away(
        event.data.get("integrations"),
        settings.name,
        SEGMENT_NAMES.get(settings.type, ()),
        settings.type not in PAST_ALL,
    )


# Types `All: false` does not turn off. A `segment` destination hands events on to Segment
# itself, which analytics.js sends every event to whatever `All` says ("Segment.io" is always
# on unless named false): Segment applies the object to its own destinations downstream, so
# `{"All": false, "Mixpanel": true}` must reach it to reach Segment's Mixpanel.
PAST_ALL = frozenset({"segment"})


def routed_away(
    integrations: object, name: str, segment_names: Sequence[str], all_applies: bool = True
) -> bool:
    """Whether a message's Segment `integrations` object turns off the destination configured as
    `name` whose type Segment's catalog calls `segment_names` (keys are case-sensitive).

    The configured name, the more specific, decides when the object has it. Else the catalog
    names do, the destination being on when any of them is on (each names a Segment destination
    this one stands in for). Else `All`, true when absent. As analytics.js reads the object, only
    `false` turns off: `true`, an options object or any other value under a name turns on. An
    `integrations` that is not an object chooses nothing (ingest refuses those). `all_applies`
    False: only a name turns the destination off (PAST_ALL)."""
    if not isinstance(integrations, dict):
        return False
    if name in integrations:
        return integrations[name] is False
    named = [integrations[key] for key in segment_names if key in integrations]
    if named:
        return all(value is False for value in named)
    return all_applies and integrations.get("All") is False


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Exact names or fnmatch patterns, case-sensitive (event names are case-sensitive)."""
    return any(name == pattern or fnmatchcase(name, pattern) for pattern in patterns)


def stops_nothing(destination: Destination[Any]) -> bool:
    """True when `screen` lets through every event that does not name destinations (see
    `names_destinations`): no filter setting, no adapter skip_reason, no age limit. The worker
    then spares those events the decoding the checks would need."""
    settings = destination.settings
    return (
        not (settings.types or settings.events or settings.exclude_events or settings.consent)
        and type(destination).skip_reason is Destination.skip_reason
        and destination.limits.max_age_secs is None
    )


def screen(
    event: Event, destination: Destination[Any], now: float, consent_required: bool = True
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

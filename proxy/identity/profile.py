"""A profile: the browser context the relay remembers for one device id, anonymousId or userId,
so a server event naming only the user can carry it (context stitching).

Pure functions of plain JSON: `capture` takes what a browser event's context says, `merge` folds
a newer capture into an older profile (associative within MAX_BYTES, so captures can be coalesced
before they are written), `merge_within` where a store keeps the bound, `attach` fills what a
server event's context lacks: what the backend sent wins; consent is what it leaves out last.
`match_traits` is what a profile keeps of an identify's traits: only what ads vendors match on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from proxy.enrich.consent import writable_preferences

JSON = dict[str, Any]

# Replaced as a whole by a newer capture (a new campaign is one unit; so is a new set of clicks).
LAST_TOUCH = ("campaign", "clickIds", "fbp", "fbc", "ttp", "ip", "userAgent", "location")
# Merged key by key: a later event may carry the GA session id without the client id, or
# answer one consent category without repeating the others, or identify with a phone only.
TRAITS = "traits"
MERGED = ("ga", "consent", TRAITS)
FIRST_TOUCH = "firstTouch"  # {"campaign", "clickIds"} of the first capture that had either
PAGE = "page"  # {"url", "referrer"} of the last page seen
DEVICE = "deviceId"


# The browser sends the context, so a profile is bounded: at most this much as JSON (real ones
# are well under 2 KB), and nested at least HEADROOM levels less than the encoder writes (254).
# Without it one request stored a 4 MB URL under a key for months, or a campaign nested so deep
# that every event the profile was attached to later could not be encoded (and the backend's
# events for that user were refused); ga / consent keys merged in from capture after capture
# grew a profile past the event limit.
MAX_BYTES = 8192
HEADROOM = 8  # attach() puts a profile's values 3 levels into an event
MAX_MERGED_KEYS = 32  # in ga, consent or traits (a match-traits object has at most 9)
# What attach() leaves out of a profile past the bound, first to last: the largest and least
# needed first. Consent is never left out for the rest: without a refusal, delivery takes the
# category as unanswered (allowed), and an order goes to a destination the user refused.
CONSENT = "consent"
# Traits go after these (they are what Meta and TikTok match a backend's order on), consent last.
TRIM_ORDER = ("ga", PAGE, FIRST_TOUCH, "location", "userAgent", "campaign", "clickIds")


def capture(context: JSON) -> JSON:
    """What is worth remembering of a browser event's (enriched, redacted) context."""
    profile: JSON = {}
    for key in LAST_TOUCH:
        value = context.get(key)
        if value:
            profile[key] = value
    ga = context.get("ga")
    if isinstance(ga, dict) and ga:
        profile["ga"] = dict(ga)
    consent = context.get("consent")
    preferences = consent.get("categoryPreferences") if isinstance(consent, dict) else None
    if isinstance(preferences, dict) and preferences:
        profile["consent"] = dict(preferences)
    touch = {key: profile[key] for key in ("campaign", "clickIds") if key in profile}
    if touch:
        profile[FIRST_TOUCH] = touch
    page = context.get("page")
    if isinstance(page, dict):
        seen = {key: page[key] for key in ("url", "referrer") if page.get(key)}
        if seen:
            profile[PAGE] = seen
    device = context.get("device")
    device_id = device.get("id") if isinstance(device, dict) else None
    if isinstance(device_id, str) and device_id:
        profile[DEVICE] = device_id
    if fits(profile):
        return profile
    profile.pop(PAGE, None)  # the likeliest to be long: what it takes to keep the rest
    return profile if fits(profile) else {}


# The Segment reserved traits the ads adapters match on (destinations/hashing.py, Pii.of), and
# nothing else: a profile is no place for whatever else a site puts in traits.
MATCH_TRAITS = (
    "email",
    "phone",
    "firstName",
    "first_name",
    "lastName",
    "last_name",
    "gender",
    "birthday",
)
ADDRESS = "address"  # kept and lent as a unit: fields of two addresses make a place that is not
ADDRESS_FIELDS = ("city", "state", "postalCode", "postal_code", "country")
# Spellings of one trait: the backend's own, in either spelling, wins over a lent one.
SPELLINGS = {
    "firstName": "first_name",
    "first_name": "firstName",
    "lastName": "last_name",
    "last_name": "lastName",
}
MAX_TRAIT_CHARS = 256  # longer than any address or name a vendor takes; bounds a planted value


def match_traits(traits: object) -> JSON:
    """What a profile keeps of an identify's traits: the match traits, as text or numbers
    (phones and zips arrive as either)."""
    if not isinstance(traits, dict):
        return {}
    kept: JSON = {}
    for key in MATCH_TRAITS:
        value = _trait(traits.get(key))
        if value is not None:
            kept[key] = value
    address = traits.get(ADDRESS)
    if isinstance(address, dict):
        place = {
            key: value for key in ADDRESS_FIELDS if (value := _trait(address.get(key))) is not None
        }
        if place:
            kept[ADDRESS] = place
    return kept


def _trait(value: object) -> str | int | float | None:
    if isinstance(value, str):
        return value if value.strip() and len(value) <= MAX_TRAIT_CHARS else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def fits(profile: JSON) -> bool:
    """Whether `profile` is within MAX_BYTES and HEADROOM (one C call: the encoder, wrapped)."""
    try:
        # HEADROOM lists written out: a loop building them costs the ingest path half as much again.
        return len(orjson.dumps([[[[[[[[profile]]]]]]]])) <= MAX_BYTES + 2 * HEADROOM
    except orjson.JSONEncodeError:  # nested deeper than the encoder writes, with the headroom
        return False


def merge(older: JSON | None, newer: JSON) -> JSON:
    """`newer` folded into `older`: last touch replaced, ga / consent merged, first touch kept."""
    if not older:
        return dict(newer)
    merged = {**older, **newer}
    for key in MERGED:
        if key in older and key in newer:
            union = {**older[key], **newer[key]}
            # New keys capture after capture would grow it without end: past a real ga / consent
            # object's size, the newer one alone. (No fits() here: this runs on every browser
            # request; the store checks the whole profile where it writes, attach() where used.)
            merged[key] = union if len(union) <= MAX_MERGED_KEYS else newer[key]
    if FIRST_TOUCH in older:
        merged[FIRST_TOUCH] = older[FIRST_TOUCH]
    return merged


def merge_within(older: JSON | None, newer: JSON) -> JSON | None:
    """merge() where a profile is stored: past the bound, `newer` alone, with the older consent
    answers if they fit with it (a refusal forgotten lets events through to a destination the
    user refused); None if even `newer` is past it (or cannot be encoded at all)."""
    merged = merge(older, newer)
    if fits(merged):
        return merged
    if older and older.get(CONSENT):
        merged = merge({CONSENT: older[CONSENT]}, newer)
        if fits(merged):
            return merged
    return newer if fits(newer) else None


def coalesce(buffered: JSON | None, capture: JSON) -> JSON | None:
    """`capture` folded into what a store buffers for a key until its next write, bounded as that
    write is (a buffer past the bound would be dropped whole there, a refusal in it with the
    rest); None: the buffer stays as it was."""
    if buffered is None:
        return dict(capture)
    return merge_within(buffered, capture)


def attach(context: JSON, profile: JSON) -> None:
    """Fill `context` from `profile` where the server event did not say it itself."""
    profile = trimmed(profile)
    for key in LAST_TOUCH:
        if key in profile and not context.get(key):
            context[key] = profile[key]
    ga = context.get("ga")
    if "ga" in profile and (ga is None or isinstance(ga, dict)):
        context["ga"] = {**profile["ga"], **(ga or {})}
    if "consent" in profile:
        # The backend's own answers win for the categories it answered, and only for those: a
        # refusal it did not repeat still holds.
        own = writable_preferences(context)
        for category, answer in profile["consent"].items():
            own.setdefault(category, answer)
    if FIRST_TOUCH in profile:
        context.setdefault(FIRST_TOUCH, profile[FIRST_TOUCH])
    if PAGE in profile and not context.get(PAGE):
        context[PAGE] = dict(profile[PAGE])
    if DEVICE in profile:
        device = context.setdefault("device", {})
        if isinstance(device, dict):
            device.setdefault("id", profile[DEVICE])
    if TRAITS in profile:
        _lend_traits(context, profile[TRAITS])


def _lend_traits(context: JSON, lent: JSON) -> None:
    """The remembered traits under `context.traits`, where Pii.of reads them, key by key: a
    trait the backend sent (in either spelling) wins, and so does its address as a whole."""
    own = context.get(TRAITS)
    if own is not None and not isinstance(own, dict):
        return
    said = {key for key, value in (own or {}).items() if value not in (None, "")}
    missing = {
        key: value
        for key, value in lent.items()
        if key not in said and SPELLINGS.get(key) not in said
    }
    if missing:
        context[TRAITS] = {**(own or {}), **missing}


def without_traits(found: JSON) -> JSON:
    """What a link carries from an anonymousId to a user: not its traits. An anonymousId passes
    to whoever signs in next on that browser when a site forgets reset(); their orders must not
    be matched on the last person's email."""
    return {key: value for key, value in found.items() if key != TRAITS}


def combine(profiles: Sequence[JSON], refusals_from: Sequence[JSON] = ()) -> JSON:
    """The profiles a server event names, least specific first (user, anonymous, device),
    merged as captures are: the most specific wins field by field. A consent refusal in any of
    them, or in `refusals_from` (the devices they were last seen on), wins over a grant: one
    profile's grant must not undo what the user refused elsewhere."""
    combined: JSON = {}
    for found in profiles:
        combined = merge(combined, found)
    refused = {
        category: False
        for found in (*profiles, *refusals_from)
        if isinstance(found.get("consent"), dict)
        for category, answer in found["consent"].items()
        if answer is False
    }
    if refused:
        combined["consent"] = {**combined.get("consent", {}), **refused}
    return combined


def trimmed(profile: JSON) -> JSON:
    """`profile` within the bound, to attach: past it (stored before the stores bounded it, or
    too deep), fields are left out in TRIM_ORDER until it fits, consent last; consent past it
    alone keeps its refusals."""
    if fits(profile):
        return profile
    kept = dict(profile)
    for key in (*TRIM_ORDER, *(key for key in profile if key not in TRIM_ORDER)):
        if key in kept and key != CONSENT:
            del kept[key]
            if fits(kept):
                return kept
    consent = kept.get(CONSENT)
    if not isinstance(consent, dict):
        return {}
    # What delivery filters on (an unanswered category is allowed): the refusals, all that fit.
    refusals: dict[str, bool] = {}
    for category, answer in consent.items():
        if answer is False:
            refusals[category] = False
            if not fits({CONSENT: refusals}):
                del refusals[category]
    return {CONSENT: refusals} if refusals else {}


def keys(event: JSON) -> Iterator[str]:
    """The store keys an event names, most specific first: device, anonymous, user."""
    context = event.get("context")
    device = context.get("device") if isinstance(context, dict) else None
    device_id = device.get("id") if isinstance(device, dict) else None
    for prefix, value in (
        ("d:", device_id),
        ("a:", event.get("anonymousId")),
        ("u:", event.get("userId")),
    ):
        if type(value) is int:  # ingest's normalise() turns numeric ids into strings
            value = str(value)
        if isinstance(value, str) and value:
            yield prefix + value

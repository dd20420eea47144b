"""One event's way into the spool: validate -> policy -> normalise -> enrich -> encode, as plain
functions of (event, request facts, settings) so each stage can be timed on its own.

What a stored event carries besides the client's message: `messageId` (kept, else `relay-<uuid4>`;
numeric ids become strings), `receivedAt` (relay clock), `timestamp` (skew-corrected, always
ISO-8601 UTC with ms), `originalTimestamp` (the client's timestamp as sent), `sentAt` (the
event's or the batch envelope's), `_relay: {"source": "<source name>", "kind": "<its kind>"}`
(set by the relay only; a client's `_relay` is overwritten), and no `writeKey`. Enrichment adds to
`context` (see proxy/enrich), and for browser sources `context.device.id` (the device cookie),
`context.fbp` and `context.ttp`.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from proxy.enrich import Enricher
from proxy.events import EventType, format_time, parse_time
from proxy.ingest.auth import ServerOnly, refuse_server_only
from proxy.ingest.common import json_kind
from proxy.ingest.limits import BOT_EVENTS
from proxy.ingest.stitch import ContextStep
from proxy.settings import Settings, SourceKind, SourceSettings

JSON = dict[str, Any]

EVENT_TYPES = frozenset(kind.value for kind in EventType)
OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
ID_FIELDS = ("userId", "anonymousId", "messageId", "groupId", "previousId")
TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt")
NAME_FIELDS = ("name", "category")  # page and screen
MAX_MESSAGE_ID_CHARS = 99  # Segment: messageId must be shorter than 100 characters
RELAY_FIELD = "_relay"
ABSENT = (None, "")  # an id that is missing or empty
# Room for what is added to an event after its client's size was checked (the batch envelope's
# context, receivedAt, _relay, the parsed user agent, geo, the stitched context): an event
# Segment takes as sent must not be refused for the relay's own additions (SDKs drop what gets
# a 413). Only a guard on what is stored: the limit a client meets is max_event_bytes.
RELAY_ADDITIONS_BYTES = 4096
# What a browser source's body may not say of itself (enrich()): its address, which only the
# connection (and trusted proxies) can tell, and whether it is a bot. Its userAgent and location
# stay: a client sets its User-Agent header as freely, and Segment's mobile SDKs, which send
# no Origin and hold a public key like a page, send their device's real ones there.
BROWSER_CLAIMS = ("ip", "bot", "botReason")


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the request (not the body) says about every event in it."""

    received_at: datetime
    received_at_iso: str
    ip: str | None
    user_agent: str | None
    source: SourceSettings
    device_id: str | None = None  # from the relay's device cookie (browser sources only)
    fbp: str | None = None  # the site's `_fbp` cookie
    ttp: str | None = None  # the site's `_ttp` cookie (the TikTok Pixel's)
    context_step: ContextStep | None = None  # redaction, GPC, stitching (proxy/ingest/stitch.py)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a batch envelope lends each of its messages (the message's own values win)."""

    context: JSON | None = None
    integrations: JSON | None = None
    sent_at: str | None = None


NO_ENVELOPE = Envelope()


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    message: str
    status: int = 400  # the answer when this is the request's only event


def process(
    event: object,
    route_type: str | None,
    envelope: Envelope,
    facts: RequestFacts,
    settings: Settings,
    server_only: ServerOnly,
    *,
    enricher: Enricher,
    counts: Counter[str],
    measure: int | None = None,
) -> bytes | Rejection:
    """Every stage in order: the bytes to spool, or why the event is refused.

    `measure`: the size limit to check the event against as its client sent it; None when the
    request's body was within it (a single event is measured by its body, as it is read).
    `counts[BOT_EVENTS]` goes up for each accepted event that enrichment flagged as a bot."""
    rejection = validate(event, route_type)
    if rejection is not None:
        return rejection
    assert isinstance(event, dict)  # validate() checked it; this narrows the type
    if measure is not None:
        rejection = check_size(event, measure)
        if rejection is not None:
            return rejection
    event_type: str = route_type or event["type"]
    refused = refuse_server_only(event, event_type, facts.source, server_only)
    if refused is not None:
        return Rejection("server_only_event", refused, 403)
    # First: fbc needs the event's timestamp. After it: the envelope's context is the event's.
    rejection = normalise(event, event_type, envelope, facts)
    if rejection is not None:
        return rejection
    if facts.source.kind is not SourceKind.BROWSER:
        drop_bad_ip(event.get("context"))
    enrich(event, facts, enricher)
    if facts.context_step is not None:  # issue 6: privacy rules and context stitching
        facts.context_step.apply(event)
    encoded = encode(event, settings.server.max_event_bytes + RELAY_ADDITIONS_BYTES)
    if not isinstance(encoded, Rejection) and event["context"].get("bot") is True:
        counts[BOT_EVENTS] += 1
    return encoded


def validate(event: object, route_type: str | None) -> Rejection | None:
    """The first thing wrong with the event's shape, or None. Does not change the event."""
    if not isinstance(event, dict):
        return Rejection("not_an_object", f"an event must be a JSON object, not {json_kind(event)}")
    kind = event.get("type")
    if route_type is not None:
        if kind is not None and kind != route_type:
            return Rejection(
                "type_mismatch", f"type {_short(kind)} does not match the {route_type} route"
            )
        kind = route_type
    elif kind is None:
        return Rejection("type_missing", "the event has no type")
    elif not isinstance(kind, str) or kind not in EVENT_TYPES:
        return Rejection("type_unknown", f"type {_short(kind)} is not one of {sorted(EVENT_TYPES)}")
    for field in OBJECT_FIELDS:
        value = event.get(field)
        if value is not None and not isinstance(value, dict):
            return _wrong_type(field, "an object", value)
    for field in ID_FIELDS:
        value = event.get(field)
        if value is not None and not isinstance(value, str) and type(value) is not int:
            return _wrong_type(field, "a string", value)
    for field in TIME_FIELDS:
        value = event.get(field)
        if value is not None and not isinstance(value, str):
            return _wrong_type(field, "an ISO-8601 string", value)
    message_id = event.get("messageId")
    if isinstance(message_id, str) and len(message_id) > MAX_MESSAGE_ID_CHARS:
        return Rejection("message_id_too_long", "messageId must be shorter than 100 characters")
    return _validate_type_fields(event, kind)


def _validate_type_fields(event: JSON, kind: str) -> Rejection | None:
    if kind == "track":
        name = event.get("event")
        if name is not None and not isinstance(name, str):
            return _wrong_type("event", "a string", name)
        if not name:
            return Rejection("event_missing", "a track event needs an event name (`event`)")
    elif kind in ("page", "screen"):
        for field in NAME_FIELDS:
            value = event.get(field)
            if value is not None and not isinstance(value, str):
                return _wrong_type(field, "a string", value)
    if kind == "alias":
        if event.get("previousId") in ABSENT:
            return Rejection("previous_id_missing", "an alias event needs previousId")
        if event.get("userId") in ABSENT:
            return Rejection("user_id_missing", "an alias event needs userId")
    elif event.get("userId") in ABSENT and event.get("anonymousId") in ABSENT:
        return Rejection("no_user_anon_id", "the event needs a userId or an anonymousId")
    if kind == "group" and event.get("groupId") in ABSENT:
        return Rejection("group_id_missing", "a group event needs groupId")
    return None


def check_size(event: JSON, max_bytes: int) -> Rejection | None:
    """A batch's event as its client sent it (before the relay adds to it), held to the limit a
    single event's body is: encoded once more, so only when its request could hold one over."""
    raw = dumps(event)
    if isinstance(raw, Rejection):
        return raw
    return too_large_event(max_bytes) if len(raw) > max_bytes else None


def too_large_event(max_bytes: int) -> Rejection:
    """The one answer to an event over `server.max_event_bytes`, on every route."""
    return Rejection("too_large", f"the event is larger than {max_bytes} bytes", 413)


def drop_bad_ip(context: JSON | None) -> None:
    """A server's `context.ip` that is not an address (a whole X-Forwarded-For list, a
    host:port) is dropped, not the event: vendors would get nonsense as the user's address, and
    a refusal would lose the event (a batch's refusals go unread by SDKs). Without it, the
    browser's remembered address stands in where stitching has one."""
    ip = context.get("ip") if context is not None else None
    if ip is None:
        return
    if isinstance(ip, str) and ip:
        try:
            ipaddress.ip_address(ip)
            return
        except ValueError:
            pass
    assert context is not None  # ip came from it
    del context["ip"]


def normalise(
    event: JSON, event_type: str, envelope: Envelope, facts: RequestFacts
) -> Rejection | None:
    """Fill in what the relay owns: ids, envelope fields, receivedAt, skew-corrected timestamp.

    A time field that is not ISO-8601 refuses the event (what normalise changed goes with it)."""
    event["type"] = event_type
    event.pop("writeKey", None)
    for field in ID_FIELDS:
        value = event.get(field)
        if type(value) is int:
            event[field] = str(value)
    if not event.get("messageId"):
        event["messageId"] = f"relay-{uuid.uuid4()}"
    # Copies, never the envelope's dict itself: enrichment may change one event's context.
    if envelope.context is not None:
        event["context"] = {**envelope.context, **(event.get("context") or {})}
    if envelope.integrations is not None:
        event["integrations"] = {**envelope.integrations, **(event.get("integrations") or {})}
    integrations = event.get("integrations")
    if integrations and next(iter(event)) != "integrations":
        # First in the stored bytes: delivery tells the events that choose destinations by
        # their first bytes, without reading the rest (deliver/filters.py, NAMES_DESTINATIONS).
        rest = {key: value for key, value in event.items() if key != "integrations"}
        event.clear()
        event["integrations"] = integrations
        event.update(rest)
    sent_at = event.get("sentAt") or None  # empty is absent, as for ids
    if sent_at is None and envelope.sent_at is not None:
        sent_at = event["sentAt"] = envelope.sent_at
    event["receivedAt"] = facts.received_at_iso
    timestamp = corrected_timestamp(event, sent_at, facts)
    if isinstance(timestamp, Rejection):
        return timestamp
    event["timestamp"] = timestamp
    # The kind tells adapters a server's event (revenue fields) from a browser's.
    event[RELAY_FIELD] = {"source": facts.source.name, "kind": facts.source.kind.value}
    return None


def corrected_timestamp(event: JSON, sent_at: str | None, facts: RequestFacts) -> str | Rejection:
    """Segment's skew rule: receivedAt - (sentAt - timestamp), so a client's wrong clock cancels.

    Without sentAt the client's time is kept; without a client time, receivedAt. A time that is
    not ISO-8601 refuses the event, as a number there does (validate()): taken as absent, it was
    replaced by receivedAt unseen, or went on to vendors as sent. Each is parsed once."""
    client = event.get("timestamp") or None  # empty is absent, as for ids
    original = event.get("originalTimestamp") or None
    happened = parse_time(client)
    if client is not None and happened is None:
        return _not_a_time("timestamp", client)
    if original is not None:
        first = parse_time(original)
        if first is None:
            return _not_a_time("originalTimestamp", original)
        if happened is None:
            happened = first
    sent = parse_time(sent_at)
    if sent_at and sent is None:
        return _not_a_time("sentAt", sent_at)
    if original is None and client is not None:
        event["originalTimestamp"] = client
    if happened is None:
        return facts.received_at_iso
    try:
        if sent is not None:
            happened = facts.received_at - (sent - happened)
        return format_time(happened)
    except (OverflowError, ValueError):
        # Dates near year 1 or 9999 leave datetime's range: the relay's clock is the best guess.
        return facts.received_at_iso


def enrich(event: JSON, facts: RequestFacts, enricher: Enricher) -> None:
    """Client IP, geo, user agent and campaign, then the browser's device id, `_fbp` and `_ttp`.

    The request's IP and UA are the user's only when a browser sent it: a backend's own never
    are (it may send `context.ip` / `context.userAgent`, which are used instead). A browser's
    claims to its address and botness are not taken: a script with the public key could pose as
    visitors from anywhere, declared human, with Meta and TikTok matching on the address."""
    if event.get("context") is None:  # validate() let only an object or null through
        event["context"] = {}
    if facts.source.kind is not SourceKind.BROWSER:
        enricher.enrich(event, None, None)
        return
    context = event["context"]
    for claimed in BROWSER_CLAIMS:
        context.pop(claimed, None)
    # "" (not None) for a browser request without a User-Agent: that is worth a bot flag.
    enricher.enrich(event, facts.ip, facts.user_agent or "")
    if facts.device_id is not None:
        device = context.setdefault("device", {})
        if isinstance(device, dict) and not device.get("id"):
            device["id"] = facts.device_id
    if facts.fbp is not None and not context.get("fbp"):
        context["fbp"] = facts.fbp
    if facts.ttp is not None and not context.get("ttp"):
        context["ttp"] = facts.ttp


def encode(event: JSON, max_bytes: int) -> bytes | Rejection:
    """The event as stored: encoded once, and refused when larger than `max_bytes` (a guard on
    what the envelope and the relay add; the client's size was checked before)."""
    raw = dumps(event)
    if isinstance(raw, bytes) and len(raw) > max_bytes:
        message = (
            f"the event is {len(raw)} bytes with the batch's context and what the relay adds"
            f" to it; at most {max_bytes} are stored"
        )
        return Rejection("too_large", message, 413)
    return raw


def dumps(event: JSON) -> bytes | Rejection:
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError as error:
        if "Recursion limit" in str(error):  # orjson reads 1024 levels deep but writes 254
            return Rejection("too_deep", "the event nests objects or arrays too deeply")
        # Input JSON and headers are checked where they come in; this names what slipped by.
        return Rejection("unencodable", f"the event cannot be stored as JSON: {error}")


def _not_a_time(field: str, value: object) -> Rejection:
    return Rejection("invalid_field", f"{field} must be an ISO-8601 string, not {_short(value)}")


def _wrong_type(field: str, expected: str, value: object) -> Rejection:
    return Rejection("invalid_field", f"{field} must be {expected}, not {json_kind(value)}")


def _short(value: object) -> str:
    """A value for an error message, cut so a huge field cannot make a huge answer."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

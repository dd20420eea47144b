"""The Segment HTTP Tracking API under the public prefix: `v1/<type>`, analytics.js's one-letter
routes, `v1/batch|b|import`, and `v1/m` (analytics.js metrics: answered, not kept).

A 200 means every accepted event is committed to the spool. A batch keeps its good events and
lists the others; a single-event request with a bad event gets the event's 4xx. A browser source's
answer carries the device cookie (proxy/identity/cookies.py); over-limit requests get 429.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from proxy.clock import Clock
from proxy.destinations import REGISTRY
from proxy.events import format_time, parse_time
from proxy.identity.cookies import (
    FBP_COOKIE,
    TTP_COOKIE,
    DeviceCookie,
    device_cookie,
    is_device_value,
    is_fbp_value,
    is_https,
    is_ttp_value,
    read_cookies,
    set_device_cookie,
)
from proxy.ingest.auth import ServerOnly, Sources
from proxy.ingest.common import (
    JSON_TYPE,
    Handler,
    IngestError,
    check_content_type,
    decode_object,
    guarded,
    json_response,
    read_body,
)
from proxy.ingest.cors import Cors
from proxy.ingest.pipeline import (
    NO_ENVELOPE,
    Envelope,
    Rejection,
    RequestFacts,
    process,
    too_large_event,
)
from proxy.ingest.refusals import BODY_BYTES, CLIENT_IP, EXEMPT, Refusals
from proxy.ingest.repeats import Claim, RecentIds
from proxy.keys import ENRICHER, INGEST_COUNTS, METRICS, RATE_LIMITS, SPOOL, STITCHER
from proxy.logs import with_request_id
from proxy.metrics import record_ingest
from proxy.settings import Settings, SourceKind, SourceSettings
from proxy.spool.base import Spool, SpoolFull, SpoolUnavailable

log = logging.getLogger(__name__)

SINGLE_ROUTES = {
    "track": "track",
    "identify": "identify",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
    # analytics.js posts to the first letter of the type (segment.md section 1).
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
}
BATCH_ROUTES = ("batch", "b", "import")
# Segment's own cap on events per batch (segment.md section 3).
MAX_BATCH_EVENTS = 2500
SUCCESS_BODY = b'{"success":true}'


class SegmentApi:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.sources = Sources(settings.sources)
        self.cors = Cors(settings.sources)
        # The vendor names too: a browser sending `purchase` would reach GA4 as a purchase.
        destinations = [REGISTRY[found.type](found) for found in settings.destinations]
        self.server_only = ServerOnly.for_destinations(
            settings.policy.server_only_events, destinations
        )
        server = settings.server
        self.event_limit = min(server.max_event_bytes, server.max_body_bytes)
        self.cookie_checks = {
            server.device_cookie: is_device_value,
            FBP_COOKIE: is_fbp_value,
            TTP_COOKIE: is_ttp_value,
        }
        self.repeats = RecentIds(server.repeat_window_events)
        self.refusals = Refusals()

    def routes(self, prefix: str) -> list[web.RouteDef]:
        """POST and OPTIONS (CORS preflight) for every route, under `prefix`."""
        finish = self._finish
        endpoints: dict[str, Handler] = {"m": guarded(_metrics, finish)}
        for name, kind in SINGLE_ROUTES.items():
            endpoints[name] = guarded(partial(self.ingest, route_type=kind), finish)
        for name in BATCH_ROUTES:
            endpoints[name] = guarded(partial(self.ingest, route_type=None), finish)
        routes = []
        for name, handler in endpoints.items():
            path = f"{prefix}/v1/{name}"
            preflight = with_request_id(self.cors.preflight)
            routes += [web.post(path, handler), web.options(path, preflight)]
        return routes

    async def ingest(self, request: web.Request, route_type: str | None) -> web.StreamResponse:
        """One request: `route_type` is the single event's type, or None for a batch."""
        # The decoded events live only inside _take(): kept alive through the commit's wait,
        # 64 requests' worth of them (some 300,000 objects) made the heap larger and colder,
        # and cost the batch benchmark ~10% of its throughput.
        taken = await self._take(request, route_type)
        claim = self.repeats.claim(taken.source, taken.accepted, taken.message_ids)
        # The durable commit: the answer says yes only after this returns.
        try:
            kept = await self._commit(request.app[SPOOL], claim, taken.source)
        except SpoolFull:
            raise IngestError(
                503,
                "spool_full",
                "the relay's spool is full; retry later",
                retry_after_secs=self.settings.spool.retry_after_secs,
            ) from None
        except SpoolUnavailable as error:
            log.warning("Spool refused a write.", extra={"error": str(error)})
            raise IngestError(
                503,
                "spool_unavailable",
                "the relay cannot store events right now; retry later",
                retry_after_secs=self.settings.spool.retry_after_secs,
            ) from None
        if kept < len(taken.accepted):
            request.app[METRICS].repeated.inc(len(taken.accepted) - kept)
        if not await claim.others_committed():  # a copy of ours, in a commit that failed
            raise IngestError(
                503,
                "spool_unavailable",
                "the relay could not store these events; retry",
                retry_after_secs=self.settings.spool.retry_after_secs,
            )
        if taken.rejected:
            response = json_response(
                {"success": True, "accepted": len(taken.accepted), "rejected": taken.rejected}
            )
        else:
            response = web.Response(body=SUCCESS_BODY, content_type=JSON_TYPE)
        device = taken.device
        if device is not None and device.renewal is not None:
            server = self.settings.server
            secure = is_https(
                request.scheme, request.remote, request.headers, server.trusted_proxies
            )
            set_device_cookie(response, server.device_cookie, device.renewal, secure)
        return response

    async def _commit(self, spool: Spool, claim: Claim, source: str) -> int:
        """Append the claim's events; how many the spool took (a shared spool finds the repeats
        that other nodes were sent)."""
        committed = False
        repeats: Sequence[int] = ()
        try:
            if claim.events:  # none when every event was a repeat
                repeats = await spool.append(claim.events, claim.message_ids, source)
            committed = True
        finally:  # whatever happened, the copies waiting on this commit are told
            self.repeats.settle(claim, committed)
        return len(claim.events) - len(repeats)

    async def _take(self, request: web.Request, route_type: str | None) -> Taken:
        """Read, authenticate and process the request's events, up to the bytes to spool."""
        app = request.app
        enricher = app[ENRICHER]
        headers = request.headers
        # Forwarding headers count only from trusted proxies.
        ip = enricher.client_ip(request.remote, headers) if request.remote is not None else None
        authorization = headers.get("Authorization")
        if ip is not None:
            request[CLIENT_IP] = ip
        reading = None
        if self.sources.is_server_key(authorization):
            request[EXEMPT] = True  # the site's backend, whoever shares its address
        else:
            reading = self.refusals.enter(ip, self.clock.now())  # before the body costs anything
        try:
            data = await self._read(request, route_type)
        finally:
            if reading is not None:
                self.refusals.leave(reading)
        now = self.clock.utcnow()
        origin = headers.get("Origin")
        source = self.sources.authenticate(authorization, data.get("writeKey"), origin)
        events, envelope = unpack_batch(data) if route_type is None else ([data], NO_ENVELOPE)
        await app[RATE_LIMITS].charge(source, ip, len(events), now.timestamp())
        browser = source.kind is SourceKind.BROWSER
        # Issue 6: privacy rules and context stitching (proxy/ingest/stitch.py).
        context_step = await app[STITCHER].step(
            source, headers, events, now.timestamp(), envelope.context
        )
        cookies = self._cookies(headers.get("Cookie")) if browser else {}
        device = self._device_cookie(cookies, source, now.timestamp())
        facts = RequestFacts(
            received_at=now,
            received_at_iso=format_time(now),
            ip=ip,
            user_agent=header_text(headers.get("User-Agent")),
            source=source,
            device_id=device.device_id if device is not None else None,
            fbp=cookies.get(FBP_COOKIE),  # read_cookies() kept only valid ones
            ttp=cookies.get(TTP_COOKIE),
            context_step=context_step,
        )
        # Every event is held to max_event_bytes as its client sent it: a single one by its body
        # (_read), a batch's one by one (pipeline.check_size), unless the whole body is within
        # the limit: then so is each event's text, which is how a single event is measured.
        measure = None
        if route_type is None and request[BODY_BYTES] > self.event_limit:
            measure = self.event_limit
        accepted: list[bytes] = []
        message_ids: list[str | None] = []
        rejected: list[dict[str, Any]] = []
        for index, event in enumerate(events):
            message_id = event.get("messageId") if isinstance(event, dict) else None
            outcome = process(
                event,
                route_type,
                envelope,
                facts,
                self.settings,
                self.server_only,
                enricher=enricher,
                counts=app[INGEST_COUNTS],
                measure=measure,
            )
            if not isinstance(outcome, Rejection):
                accepted.append(outcome)
                # process() set the final messageId in the event: the spool keeps it beside the
                # body, so delivery need not read it out of the JSON.
                final_id = event["messageId"]
                message_ids.append(final_id if isinstance(final_id, str) else None)
            elif route_type is not None:
                context_step.finish()  # as a batch does: the context of a refused event is real
                raise IngestError(outcome.status, outcome.code, outcome.message)
            else:
                rejected.append(
                    {
                        "index": index,
                        "messageId": message_id if isinstance(message_id, str) else None,
                        "code": outcome.code,
                        "message": outcome.message,
                    }
                )
        context_step.finish()
        if not accepted:
            raise IngestError(
                400, "no_valid_events", "no event in the batch was accepted", rejected=rejected
            )
        return Taken(accepted, message_ids, rejected, device, source.name)

    async def _read(self, request: web.Request, route_type: str | None) -> dict[str, Any]:
        """The request's body as a JSON object, its size kept for the refusals' charge."""
        check_content_type(request)
        limit = self.settings.server.max_body_bytes if route_type is None else self.event_limit
        try:
            body = await read_body(request, limit)
        except IngestError as error:
            if error.status != 413:
                raise
            request[BODY_BYTES] = limit  # read (or inflated) up to the limit before it was refused
            if route_type is None:
                raise
            refused = too_large_event(limit)  # what a batch says of the same event
            raise IngestError(refused.status, refused.code, refused.message) from None
        request[BODY_BYTES] = len(body)
        return decode_object(body)

    def _finish(self, request: web.Request, response: web.StreamResponse, secs: float) -> None:
        self.cors.grant(request, response)
        record_ingest(request.app[METRICS], response, secs)
        self.refusals.charge(request, self.clock.now())

    def _cookies(self, header: str | None) -> dict[str, str]:
        """The cookies ingest reads: the relay's device id, Meta's `_fbp` and TikTok's `_ttp`."""
        return read_cookies(header, self.cookie_checks)

    def _device_cookie(
        self, cookies: dict[str, str], source: SourceSettings, now: float
    ) -> DeviceCookie | None:
        """The browser's device id (None for server sources: a backend is not a browser)."""
        name = self.settings.server.device_cookie
        if source.kind is not SourceKind.BROWSER or not name:
            return None
        return device_cookie(cookies.get(name), now)


@dataclass(slots=True)
class Taken:
    """What a request's events came to: the bodies to spool with their messageIds, a batch's
    refusals, the device cookie to answer with, and the source that sent them."""

    accepted: list[bytes]
    message_ids: list[str | None]
    rejected: list[dict[str, Any]]
    device: DeviceCookie | None
    source: str  # the source's name: repeats are told apart per source


def unpack_batch(data: dict[str, Any]) -> tuple[list[Any], Envelope]:
    """The events of a batch envelope and what the envelope lends them."""
    batch = data.get("batch")
    if batch is None:
        raise IngestError(400, "invalid_batch", "the body has no batch (a list of events)")
    if not isinstance(batch, list):
        raise IngestError(400, "invalid_batch", "batch must be a list of events")
    if not batch:
        raise IngestError(400, "empty_batch", "the batch has no events")
    if len(batch) > MAX_BATCH_EVENTS:
        raise IngestError(
            400, "too_many_events", f"a batch holds at most {MAX_BATCH_EVENTS} events"
        )
    context = data.get("context")
    integrations = data.get("integrations")
    sent_at = data.get("sentAt")
    for field, value, ok in (
        ("context", context, isinstance(context, dict)),
        ("integrations", integrations, isinstance(integrations, dict)),
        ("sentAt", sent_at, isinstance(sent_at, str)),
    ):
        if value is not None and not ok:
            raise IngestError(
                400, "invalid_field", f"the batch envelope's {field} has the wrong type"
            )
    if sent_at == "":  # absent, as an event's own empty sentAt is
        sent_at = None
    if sent_at is not None and parse_time(sent_at) is None:  # as an event's own sentAt is
        raise IngestError(
            400, "invalid_field", "the batch envelope's sentAt must be an ISO-8601 string"
        )
    return batch, Envelope(context, integrations, sent_at)


async def _metrics(request: web.Request) -> web.StreamResponse:
    """analytics.js reports its own delivery metrics here; there is nothing to keep."""
    return web.Response(body=SUCCESS_BODY, content_type=JSON_TYPE)


def header_text(value: str | None) -> str | None:
    """A header as valid text. aiohttp decodes bytes that are not UTF-8 into lone surrogates,
    which no JSON encoder (the spool's, the context store's) can write: replace them."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

"""Segment as a destination: our events to `/v1/batch` (`vendors/segment.md` §11).

Events are stored in Segment's wire format, the timestamp skew-corrected at ingest. Segment
applies its rule `timestamp = receivedAt - (sentAt - originalTimestamp)` (§5) again at its own
receivedAt, so each event goes without its client `sentAt` and our `receivedAt`, with
`originalTimestamp` = the stored `timestamp`, under an envelope `sentAt` of the send time: the
rule then gives back the stored timestamp however late it is sent (retries, an outage, a
replay). messageId stays Segment's dedup key. classify() answers as the official SDKs retry (§4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson

from proxy.destinations import analytics
from proxy.destinations.analytics import BatchApi
from proxy.destinations.base import (
    BatchLimits,
    HttpRequest,
    HttpResponse,
    Result,
    Verdict,
    retry_after,
)
from proxy.events import Event, format_time, parse_time
from proxy.settings import Secret

HOSTS = {None: "https://api.segment.io", "eu": "https://events.eu1.segmentapis.com"}  # §1
PATH = "/v1/batch"
# The fields of the skew rule (§5) as a client sent them, and ours; re-encoded when present.
CLOCK_KEYS = (b'"sentAt"', b'"receivedAt"', b'"originalTimestamp"')
# The envelope's sentAt as size() counts it: every format_time() text has this length.
SIZED_SENT_AT = format_time(datetime(2026, 1, 1, tzinfo=UTC))
# §4, the SDKs' retry policy: these 4xx are retried with backoff like 5xx, and these 5xx are not
# (511 is retried only with OAuth, and this adapter sends the write key, §2).
RETRIED_4XX = frozenset({408, 410, 460})
FINAL_5XX = frozenset({501, 505, 511})
# §4: analytics-node honours a 429's Retry-After for at least 1 s and at most 300 s.
RETRY_AFTER_MIN_SECS, RETRY_AFTER_MAX_SECS = 1.0, 300.0


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    write_key: Secret  # the Segment source's write key (HTTP Basic username, §2)
    region: Literal["eu"] | None = None  # EU workspaces only (§1)
    endpoint: str | None = None  # base URL; default by region


class Segment(BatchApi[SegmentConfig]):
    type = "segment"
    # §3: ≤ 2500 events and 500 KB per batch request, each event < 32 KB; history is accepted.
    limits = BatchLimits(max_events=2500, max_bytes=500_000)
    max_event_bytes = 32 * 1024 - 1
    config_type = SegmentConfig

    def build(self, events: Sequence[Event], now: float) -> list[HttpRequest]:
        kept = [event for event in events if self.skip_reason(event) is None]
        if not kept:
            return []
        sent_at = format_time(datetime.fromtimestamp(now, UTC))
        body = self._splice(sent_at, [self._item(event) for event in kept])
        ids = tuple(event.message_id for event in kept)
        return [HttpRequest("POST", self._url(""), self._headers(""), body, ids)]

    def classify(self, request: HttpRequest, response: HttpResponse, now: float) -> Result:
        """§4: the official SDKs' policy, which the page asks this adapter to follow. The default
        table would dead-letter 410 and 460, and retry 505. Except for 3xx: the SDKs' clients
        follow a redirect and count what comes after it, but the relay follows none (a redirect
        could lead its requests anywhere), so a 3xx means Segment never got the events. Taken
        as delivered, they were lost without a trace; as dead letters they wait for a replay once
        the endpoint is fixed."""
        status = response.status
        reason = f"http_{status}"
        if 200 <= status < 300:
            return Result(Verdict.DELIVERED, reason)
        wait = retry_after(response.headers, now)
        if status == 429 and wait is not None:
            # Segment asked us to wait: the SDKs do not count it against the retry budget, so
            # neither does the worker (Result.failed). Without the header it is a counted retry.
            wait = min(max(wait, RETRY_AFTER_MIN_SECS), RETRY_AFTER_MAX_SECS)
            return Result(Verdict.RETRY, reason, wait, failed=False)
        if status in (429, *RETRIED_4XX) or (status >= 500 and status not in FINAL_5XX):
            return Result(Verdict.RETRY, reason, wait)
        return Result(Verdict.REJECT, reason)

    def _item(self, event: Event) -> bytes:
        raw = event.raw
        if not any(key in raw for key in CLOCK_KEYS):
            # Segment takes `timestamp` as originalTimestamp (§5): the stored bytes already work.
            # (Ingest gives every event receivedAt, so what it stored is re-encoded below.)
            return raw
        data = dict(event.data)
        data.pop("sentAt", None)  # the client's send time: the envelope's is ours
        data.pop("receivedAt", None)  # set by Segment on receipt (§5)
        stamp = data.get("timestamp")
        if parse_time(stamp) is None:
            stamp = format_time(event.timestamp)  # receivedAt when the event has no time
        data["timestamp"] = data["originalTimestamp"] = stamp
        return orjson.dumps(data)

    def _body(self, route: str, events: Sequence[Event], items: Sequence[bytes]) -> bytes:
        return self._splice(SIZED_SENT_AT, items)  # size() only: build() sends the real time

    def _splice(self, sent_at: str, items: Sequence[bytes]) -> bytes:
        return analytics.splice({"sentAt": sent_at}, "batch", items)

    def _url(self, route: str) -> str:
        return analytics.base_url(self.config.endpoint, HOSTS, self.config.region) + PATH

    def _headers(self, route: str) -> dict[str, str]:
        auth = analytics.basic_auth(self.config.write_key.value)
        # §2, §11. No gzip: that Segment takes it is only implied by analytics-python (§2).
        return {"Content-Type": "application/json", "Authorization": auth}

"""The admin view's memory of recent traffic: events as spooled, what each destination was sent
and answered, and per-event outcomes. Everything is bounded; it is a window, not a store.

It is fed inline on the loop (the spool tap, the worker Observer hook) and also feeds Metrics,
so one set of hooks serves both the UI and /metrics.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson

from proxy.admin.masking import mask_body, mask_headers, mask_url, secret_values
from proxy.clock import Clock
from proxy.destinations.base import HttpRequest, HttpResponse, Result, Verdict
from proxy.metrics import Metrics
from proxy.outcomes import Outcome, Status
from proxy.settings import Settings

KEEP_EVENTS = 500
KEEP_STATUSES = 5000  # messageIds whose per-destination outcome is remembered
KEEP_SENT = 50  # requests per destination
KEEP_ERRORS = 20
ERROR_WINDOW = 100  # error rate: failed share of the last N requests
CHART_MINUTES = 30
WAITING = "waiting"
RETRYING = "retrying"


@dataclass(slots=True)  # not frozen: its __init__ runs for every ingested event
class Seen:
    """One event as the spool committed it. Decoded only when someone looks."""

    seq: int
    at: float
    raw: bytes

    def data(self) -> dict[str, Any]:
        decoded = orjson.loads(self.raw)
        return decoded if isinstance(decoded, dict) else {}


class Sent:
    """One request to a destination and its answer. Kept as sent (a reference, no copy) and
    masked only when a page shows it: recording is on the delivery hot path, viewing is not."""

    def __init__(
        self,
        at: float,
        destination: str,
        request: HttpRequest,
        response: HttpResponse | None,
        result: Result,
        secs: float,
        secrets: Sequence[str],
    ) -> None:
        self.at = at
        self.destination = destination
        self.method = request.method
        self.status = None if response is None else response.status
        self.reason = result.reason
        self.verdict = result.verdict.value
        self.event_ids = request.event_ids
        self.secs = secs
        self._request = request
        self._response = response
        self._secrets = secrets

    @cached_property
    def url(self) -> str:
        return mask_url(self._request.url)

    @cached_property
    def headers(self) -> dict[str, str]:
        return mask_headers(self._request.headers)

    @cached_property
    def body(self) -> str:
        return mask_body(self._request.body, self._secrets)

    @cached_property
    def answer(self) -> str:
        return "" if self._response is None else mask_body(self._response.body, self._secrets)


@dataclass(slots=True)
class DestinationStats:
    sent: deque[Sent] = field(default_factory=lambda: deque(maxlen=KEEP_SENT))
    errors: deque[Sent] = field(default_factory=lambda: deque(maxlen=KEEP_ERRORS))
    recent_ok: deque[bool] = field(default_factory=lambda: deque(maxlen=ERROR_WINDOW))
    per_minute: dict[int, int] = field(default_factory=dict)  # finished events per minute

    @property
    def error_rate(self) -> float:
        return 0.0 if not self.recent_ok else 1 - sum(self.recent_ok) / len(self.recent_ok)


class Monitor:
    """Implements the worker's Observer; `spooled()` is called by the spool tap."""

    def __init__(self, settings: Settings, clock: Clock, metrics: Metrics) -> None:
        self.clock = clock
        self.metrics = metrics
        self.destinations = [d.name for d in settings.destinations]
        self.events: deque[Seen] = deque(maxlen=KEEP_EVENTS)
        self.statuses: OrderedDict[str, dict[str, str]] = OrderedDict()
        # Settled batches not yet folded into `statuses`: folding costs a dict update per event,
        # a sixth of the loop's time when delivery drains a backlog, and only a view reads it.
        self._unfolded: deque[tuple[str, Sequence[tuple[str, Outcome]]]] = deque()
        self._unfolded_events = 0
        self.stats = {name: DestinationStats() for name in self.destinations}
        self.per_minute: dict[int, int] = {}  # events spooled per minute
        self.append_failed_at: float | None = None  # the last failed spool write, for /readyz
        self._secrets = secret_values(settings)
        self._seq = 0

    # -- fed by the spool tap and the workers --------------------------------------------

    def spooled(self, raws: Sequence[bytes]) -> None:
        now = self.clock.now()
        self.append_failed_at = None
        self.metrics.spooled.inc(len(raws))
        self.metrics.received.inc(len(raws))
        _bump(self.per_minute, now, len(raws))
        # No decoding here: this runs on every ingest request. A messageId without a recorded
        # outcome reads as waiting (outcomes_of).
        for raw in raws:
            self._seq += 1
            self.events.append(Seen(self._seq, now, raw))

    def masked(self, body: bytes, indent: bool = True) -> str:
        """A body for display, with credential keys and configured secrets hidden."""
        return mask_body(body, self._secrets, indent)

    def append_failed(self) -> None:
        self.append_failed_at = self.clock.now()

    def sent(
        self,
        destination: str,
        request: HttpRequest,
        response: HttpResponse | None,
        result: Result,
        secs: float,
    ) -> None:
        record = Sent(self.clock.now(), destination, request, response, result, secs, self._secrets)
        stats = self.stats.setdefault(destination, DestinationStats())
        stats.sent.append(record)
        ok = result.verdict is Verdict.DELIVERED and not result.rejected
        stats.recent_ok.append(ok)
        if not ok:
            stats.errors.append(record)
        if result.verdict is Verdict.RETRY:
            for message_id in request.event_ids:
                self._status(message_id)[destination] = RETRYING
        self.metrics.requests.labels(destination, result.reason).inc()
        self.metrics.delivery_seconds.labels(destination).observe(secs)

    def settled(
        self, destination: str, outcomes: Sequence[tuple[str, Outcome]], retries: int
    ) -> None:
        stats = self.stats.setdefault(destination, DestinationStats())
        _bump(stats.per_minute, self.clock.now(), len(outcomes))
        self._unfolded.append((destination, outcomes))
        self._unfolded_events += len(outcomes)
        # A messageId has an outcome per destination: past this many, the oldest batch is what
        # `statuses` would evict anyway, so it need not wait to be folded in.
        keep = KEEP_STATUSES * max(1, len(self.destinations))
        while self._unfolded_events - len(self._unfolded[0][1]) >= keep:
            self._unfolded_events -= len(self._unfolded.popleft()[1])
        by_status = Counter(outcome.status for _, outcome in outcomes)
        # One metric update per status, not per event: this runs for every delivered batch.
        for status, count in by_status.items():
            self.metrics.deliveries.labels(destination, status.value).inc(count)
        if by_status[Status.DEAD]:
            self.metrics.dead_letters_total.labels(destination).inc(by_status[Status.DEAD])
        if retries:
            self.metrics.retries.labels(destination).inc(retries)

    # -- read by the views ---------------------------------------------------------------

    def outcomes_of(self, message_id: str) -> dict[str, str]:
        self._fold()
        known = self.statuses.get(message_id, {})
        return {name: known.get(name, WAITING) for name in self.destinations} | known

    def requests_for(self, message_id: str) -> list[Sent]:
        return [
            sent
            for stats in self.stats.values()
            for sent in stats.sent
            if message_id in sent.event_ids
        ]

    def rate_per_minute(self, destination: str, minutes: int = 5) -> float:
        """Events finished per minute at `destination`, over the last `minutes` whole minutes."""
        series = self.series(self.stats[destination].per_minute, minutes + 1)
        return sum(series[:-1]) / minutes

    def series(self, counts: dict[int, int], minutes: int = CHART_MINUTES) -> list[int]:
        """Counts for the last `minutes` minutes, oldest first; the current minute last."""
        current = int(self.clock.now() // 60)
        return [counts.get(minute, 0) for minute in range(current - minutes + 1, current + 1)]

    def _fold(self) -> None:
        while self._unfolded:
            destination, outcomes = self._unfolded.popleft()
            for message_id, outcome in outcomes:
                if message_id:
                    self._status(message_id)[destination] = outcome.reason
        self._unfolded_events = 0

    def _status(self, message_id: str) -> dict[str, str]:
        status = self.statuses.get(message_id)
        if status is None:
            status = self.statuses[message_id] = {}
            while len(self.statuses) > KEEP_STATUSES:
                self.statuses.popitem(last=False)
        return status


def _bump(counts: dict[int, int], now: float, n: int) -> None:
    minute = int(now // 60)
    counts[minute] = counts.get(minute, 0) + n
    if len(counts) > CHART_MINUTES * 2:  # forget minutes the chart no longer shows
        for old in sorted(counts)[: len(counts) - CHART_MINUTES]:
            del counts[old]

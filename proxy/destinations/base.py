"""The destination interface: pure mapping from events to vendor requests, and back from answers.

A destination does no I/O and never sleeps. The delivery worker batches events to `limits`, asks
`build()` for requests, sends them, and asks `classify()` what each answer means.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from proxy.events import Event
from proxy.retry_after import parse_retry_after
from proxy.settings import DestinationSettings


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_events: int
    max_bytes: int
    # Older events become dead letters (`dead:too_old`), not requests the vendor refuses.
    max_age_secs: float | None = None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    event_ids: tuple[str, ...]  # messageIds this request carries

    def __repr__(self) -> str:
        # URLs and headers may carry credentials (api_secret query, tokens); never print them.
        return f"HttpRequest({self.method} <{len(self.body)} bytes> events={len(self.event_ids)})"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECT = "reject"  # the vendor will never take it: dead letter
    # The vendor refused the whole request for some event(s) in it (Meta: "if any event in the
    # batch is invalid the entire batch is rejected"). Those named in `rejected` are dead; the
    # others go again at once, as one request, or in halves when none is named, down to single
    # events, which are then dead with the reason. No attempt is counted against the others.
    # Those named in `throttled` wait `retry_after_secs` instead, and the others go again at once.
    ISOLATE = "isolate"


@dataclass(frozen=True, slots=True)
class Result:
    verdict: Verdict
    reason: str  # e.g. "http_204", "http_429", "timeout", "connection_refused"
    retry_after_secs: float | None = None
    # Events the vendor refused one by one inside an otherwise accepted answer: messageId -> reason.
    rejected: Mapping[str, str] = field(default_factory=dict)
    # RETRY with retry_after_secs only. False when the vendor asked us to wait rather than failed
    # the request (Segment's 429 with Retry-After uses up no retry budget, segment.md §4): the
    # retry at retry_after_secs counts neither toward max_attempts nor into the backoff.
    failed: bool = True
    # With ISOLATE, the events a rate limit named (Amplitude's throttled_events): the vendor asked
    # them to pause, so their wait is no failed attempt and does not count toward max_attempts.
    throttled: frozenset[str] = frozenset()
    # The endpoint said it is gone and asks not to be sent to again (webhooks.md §4: "410 Gone:
    # disable the endpoint, stop sending"). This request's events end as `verdict` says; the
    # worker then disables the destination (proxy/deliver/gone.py).
    gone: bool = False


# The largest Retry-After we honour; a vendor asking for more is retried at this delay.
MAX_RETRY_AFTER_SECS = 3600.0


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds from a Retry-After header (delta seconds or HTTP date), capped; None if unusable."""
    seconds = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"), now)
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER_SECS)


def classify_status(response: HttpResponse, now: float) -> Result:
    """The default table: 2xx delivered; 408, 429 and 5xx except 501 retry; other 4xx reject."""
    status = response.status
    reason = f"http_{status}"
    if 200 <= status < 300:
        return Result(Verdict.DELIVERED, reason)
    if status in (408, 429) or (status >= 500 and status != 501):
        return Result(Verdict.RETRY, reason, retry_after(response.headers, now))
    return Result(Verdict.REJECT, reason)


@dataclass(frozen=True, slots=True)
class ReservedNames:
    """Names a browser source may not send, because of what one destination makes of them."""

    vendor: set[str]  # the vendor's names for server-only events, and its own revenue events
    track: set[str]  # our track event names this destination sends as one of those
    pages: set[str]  # page / screen names its `event_names` renames to one of those


ConfigT = TypeVar("ConfigT")


class Destination(Generic[ConfigT]):
    """Base of every vendor adapter. Subclasses set `type`, `limits` and `config_type`."""

    type: ClassVar[str]
    limits: ClassVar[BatchLimits]
    # A frozen dataclass with the vendor's own setting names; settings.py fills it from TOML.
    config_type: ClassVar[builtins.type[Any]]  # builtins: `type` is the ClassVar above

    # True when the vendor de-duplicates on an id of the whole request (a webhook's webhook-id):
    # the worker then retries a failed request as it was sent, the same events in the same
    # order, never regrouped with others (Retry.group). Vendors that de-duplicate on each
    # event's own id (event_id, $insert_id) need not: their events may regroup freely.
    retry_as_sent: ClassVar[bool] = False

    def __init__(self, settings: DestinationSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.config: ConfigT = settings.config

    # The vendor's own purchase and refund events: a browser source may not send these names
    # (proxy.ingest.auth.ServerOnly), whatever the policy calls its server-only events.
    revenue_events: ClassVar[frozenset[str]] = frozenset()

    def default_names(self) -> Mapping[str, str]:
        """Our track event name -> the vendor's, for the names this adapter renames by default."""
        return {}

    def name_form(self) -> Callable[[str], str | None] | None:
        """What the vendor makes of a name sent on as is (GA4 keeps its charset), as a function
        that answers None when only separators would change; None: the vendor keeps names."""
        return None

    def server_only_names(self, server_only: Callable[[str], bool]) -> ReservedNames:
        """What a browser may not send because of this destination: the vendor names server-only
        events become here (defaults and `event_names`), with `revenue_events`."""
        form = self.name_form() or _unchanged
        renames = {
            ours: form(theirs) or theirs for ours, theirs in self.settings.event_names.items()
        }
        names = {ours: form(theirs) or theirs for ours, theirs in self.default_names().items()}
        names |= renames
        vendor = {theirs for ours, theirs in names.items() if theirs and server_only(ours)}
        vendor |= self.revenue_events
        return ReservedNames(
            vendor=vendor,
            track={ours for ours, theirs in names.items() if theirs in vendor},
            pages={ours for ours, theirs in renames.items() if theirs in vendor},
        )

    def vendor_name(self, event: Event, default: str | None) -> str | None:
        """The vendor's name for the event: the user's `event_names` map first, then `default`."""
        ours = event.name
        if ours is not None and ours in self.settings.event_names:
            return self.settings.event_names[ours]
        return default

    def skip_reason(self, event: Event) -> str | None:
        """Why this vendor cannot take the event at all (e.g. "unsupported_type"), else None."""
        return None

    def size(self, event: Event) -> int:
        """Bytes the event adds to a request body, for batching to `limits.max_bytes`."""
        return len(event.raw) + 1

    def build(self, events: Sequence[Event], now: float) -> list[HttpRequest]:
        """Requests that carry these events (each event in exactly one); `now` is the send time."""
        raise NotImplementedError

    def classify(self, request: HttpRequest, response: HttpResponse, now: float) -> Result:
        return classify_status(response, now)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _unchanged(name: str) -> str | None:
    return None

"""The contract every destination in REGISTRY keeps (a new adapter runs through it by existing):
each event in exactly one request, requests within limits, the classify table, no secret in a
repr. The adapter is configured from its first golden case (golden/<type>/*.json), whose optional
"answer" is the body of a success answer, for vendors that read their 2xx."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest

from proxy.config import ConfigError
from proxy.deliver.batching import split
from proxy.destinations import REGISTRY
from proxy.destinations.base import Destination, HttpResponse, Verdict
from proxy.events import Event
from proxy.settings import Secret
from tests.destinations.cases import NOW, adapter, cases, sample_config, success_body

TYPES = sorted(REGISTRY)


@pytest.fixture(params=TYPES)
def destination(request: pytest.FixtureRequest) -> Destination[Any]:
    type_name: str = request.param
    try:
        return adapter(type_name, sample_config(type_name), name="contract")
    except ConfigError as error:
        if cases(type_name):
            raise
        pytest.fail(
            f"{type_name}: no golden case to configure it from ({error}); "
            f"add tests/destinations/golden/{type_name}/<case>.json"
        )


def spec_event(n: int, **fields: Any) -> dict[str, Any]:
    """One spec message of each kind in turn, with the context a browser event carries."""
    kinds: list[dict[str, Any]] = [
        {"type": "track", "event": "Order Completed",
         "properties": {"order_id": f"o-{n}", "revenue": 25.5, "currency": "EUR",
                        "products": [{"product_id": "p-1", "price": 25.5, "quantity": 1}]}},
        {"type": "page", "name": "Pricing", "properties": {"path": "/pricing", "title": "Pricing"}},
        {"type": "screen", "name": "Home"},
        {"type": "identify", "traits": {"email": f"user{n}@example.com", "plan": "pro"}},
        {"type": "group", "groupId": "g-1", "traits": {"name": "Acme"}},
        {"type": "alias", "previousId": f"anon-{n}"},
        {"type": "track", "event": "Signed Up", "properties": {"method": "email"}},
    ]  # fmt: skip
    event = {
        **kinds[n % len(kinds)],
        "messageId": f"contract-{n}",
        "anonymousId": f"a-{n % 5}",
        "userId": f"u-{n % 3}",
        "timestamp": "2025-12-31T23:59:00.000Z",
        "receivedAt": "2025-12-31T23:59:01.000Z",
        "context": {
            "ip": "203.0.113.7",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36",
            "locale": "de-DE",
            "page": {"url": "https://shop.example/pricing?utm_source=news", "path": "/pricing"},
            "consent": {"categoryPreferences": {"analytics": True, "marketing": True}},
        },
    }
    event.update(fields)
    return event


def sample_events(destination: Destination[Any]) -> list[Event]:
    """Enough small events to fill several batches by count, and large ones to split by bytes."""
    limits = destination.limits
    small = [Event.from_data(spec_event(n)) for n in range(min(2 * limits.max_events + 1, 500))]
    pad = min(limits.max_bytes // 4, 1_000_000)
    large = [
        Event.from_data(spec_event(1000 + n, properties={"note": "x" * pad, "n": n}))
        for n in range(6)
    ]
    return small + large


def test_each_event_in_exactly_one_request_within_limits(destination: Destination[Any]) -> None:
    limits = destination.limits
    events = [e for e in sample_events(destination) if destination.skip_reason(e) is None]
    parts = split(events, limits, destination.size)
    expected = [e.message_id for batch in parts.batches for e in batch]
    assert expected, "the sample events gave this adapter nothing to send"
    seen: Counter[str] = Counter()
    for batch in parts.batches:
        batch_ids = {e.message_id for e in batch}
        requests = destination.build(batch, NOW)
        assert requests == destination.build(batch, NOW), "build() must be deterministic"
        for request in requests:
            assert len(request.body) <= limits.max_bytes, repr(request)
            assert len(request.event_ids) <= limits.max_events, repr(request)
            assert set(request.event_ids) <= batch_ids
            seen.update(request.event_ids)
    assert seen == Counter(expected)


def test_small_events_are_never_too_large(destination: Destination[Any]) -> None:
    event = Event.from_data(spec_event(0))
    assert destination.size(event) <= destination.limits.max_bytes


@pytest.mark.parametrize(
    ("status", "headers", "verdict", "retry_after"),
    [
        (200, {}, Verdict.DELIVERED, None),
        (204, {}, Verdict.DELIVERED, None),
        (429, {"Retry-After": "30"}, Verdict.RETRY, 30.0),
        (500, {}, Verdict.RETRY, None),
        (503, {"Retry-After": "120"}, Verdict.RETRY, 120.0),
        (501, {}, Verdict.REJECT, None),
        (400, {}, Verdict.REJECT, None),
    ],
)
def test_classify_table(
    destination: Destination[Any],
    status: int,
    headers: dict[str, str],
    verdict: Verdict,
    retry_after: float | None,
) -> None:
    event = Event.from_data(spec_event(0))
    (request,) = destination.build([event], NOW)
    # Some vendors report errors inside a 2xx; their golden case says what success looks like.
    body = success_body(destination.type) if 200 <= status < 300 else b""
    result = destination.classify(request, HttpResponse(status, headers, body), NOW)
    if destination.type == "webhook" and status in (400, 501):
        # webhooks.md §4: every non-2xx but 410 is a failure to retry (over days).
        verdict = Verdict.RETRY
    assert result.verdict is verdict
    assert result.retry_after_secs == retry_after
    assert result.reason


def test_no_secret_in_any_repr(destination: Destination[Any]) -> None:
    secrets = _secrets(destination.config)
    requests = destination.build(sample_events(destination)[:3], NOW)
    shown = [repr(destination), repr(destination.config), repr(destination.settings)]
    shown += [repr(request) for request in requests]
    for secret in secrets:
        for text in shown:
            assert secret not in text


def _secrets(config: Any) -> list[str]:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return []
    values = [getattr(config, f.name) for f in dataclasses.fields(config)]
    return [value.value for value in values if isinstance(value, Secret) and value.value]

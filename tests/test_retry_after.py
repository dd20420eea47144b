"""Retry-After as delivery and the relay's client read it (proxy/retry_after.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from proxy.destinations.base import MAX_RETRY_AFTER_SECS, retry_after
from proxy.retry_after import parse_retry_after

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local time zone 9 hours off UTC, where reading a GMT date as local time shows."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_delta_seconds_and_every_http_date_form(far_from_utc: None) -> None:
    assert parse_retry_after("3", NOW) == 3.0
    assert parse_retry_after(" 120 ", NOW) == 120.0
    # RFC 9110's three date forms, all GMT, two minutes after NOW.
    for date in (
        "Tue, 14 Nov 2023 22:15:20 GMT",  # IMF-fixdate
        "Tuesday, 14-Nov-23 22:15:20 GMT",  # RFC 850
        "Tue Nov 14 22:15:20 2023",  # asctime: no zone, and still GMT
    ):
        assert parse_retry_after(date, NOW) == 120.0, date
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", NOW) == 0.0  # in the past


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "²", "٣", "Tue, 99 Nov"])
def test_unusable_values_are_none(value: str | None) -> None:
    # "²" and "٣" pass str.isdigit() and then broke float(): the vendor's answer failed the batch.
    assert parse_retry_after(value, NOW) is None


def test_delivery_caps_what_a_vendor_asks_for() -> None:
    assert retry_after({"Retry-After": "86400"}, NOW) == MAX_RETRY_AFTER_SECS
    assert retry_after({"retry-after": "7"}, NOW) == 7.0
    assert retry_after({"Retry-After": "²"}, NOW) is None
    assert retry_after({}, NOW) is None

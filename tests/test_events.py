"""Event times as ingest writes them: ISO-8601 in UTC with milliseconds and a Z."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from proxy.events import format_time, parse_time


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC), "2026-01-01T00:00:00.999Z"),
        (
            datetime(2026, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))),
            "2025-12-31T23:30:00.000Z",
        ),
        (datetime(1969, 12, 31, 23, 59, 59, 1_500, tzinfo=UTC), "1969-12-31T23:59:59.001Z"),
        (datetime(999, 3, 4, 5, 6, 7, 8_000, tzinfo=UTC), "0999-03-04T05:06:07.008Z"),
        (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_time_truncates_to_milliseconds_in_utc(moment: datetime, text: str) -> None:
    assert format_time(moment) == text
    assert format_time(moment) == text  # the second time from the remembered second


def test_format_time_agrees_with_isoformat_across_offsets_and_centuries() -> None:
    for step in range(2_000):
        offset = timezone(timedelta(minutes=(step * 37) % 1_440 - 720))
        moment = datetime(1 + step * 5, 1 + step % 12, 1 + step % 28, tzinfo=offset) + timedelta(
            microseconds=step * 7_919_993
        )
        try:
            expected = moment.astimezone(UTC).isoformat(timespec="milliseconds")[:23] + "Z"
        except OverflowError:
            continue
        assert format_time(moment) == expected, moment
        assert parse_time(expected) == moment.replace(
            microsecond=moment.microsecond // 1000 * 1000
        ).astimezone(UTC)

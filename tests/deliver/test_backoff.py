"""Backoff: full jitter under an exponential ceiling, capped, never below Retry-After."""

from __future__ import annotations

import pytest

from proxy.deliver.backoff import retry_delay


@pytest.mark.parametrize(
    ("attempts", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (10, 512.0), (11, 600.0), (5000, 600.0)]
)
def test_ceiling_doubles_up_to_the_cap(attempts: int, ceiling: float) -> None:
    assert retry_delay(attempts, 1.0, 600.0, rand=lambda: 1.0) == ceiling
    assert retry_delay(attempts, 1.0, 600.0, rand=lambda: 0.0) == 0.0


def test_jitter_scales_the_ceiling() -> None:
    assert retry_delay(3, 1.0, 600.0, rand=lambda: 0.25) == 1.0


def test_retry_after_wins_when_longer() -> None:
    assert retry_delay(1, 1.0, 600.0, retry_after_secs=30.0, rand=lambda: 0.5) == 30.0


def test_backoff_wins_when_longer_than_retry_after() -> None:
    assert retry_delay(8, 1.0, 600.0, retry_after_secs=1.0, rand=lambda: 1.0) == 128.0


def test_retry_after_may_exceed_the_cap() -> None:
    assert retry_delay(1, 1.0, 10.0, retry_after_secs=120.0, rand=lambda: 1.0) == 120.0


def test_default_random_stays_within_the_ceiling() -> None:
    delays = [retry_delay(4, 1.0, 600.0) for _ in range(200)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 1

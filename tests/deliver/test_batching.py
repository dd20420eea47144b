"""Batching: order kept, every item in exactly one batch, both limits held, oversize set apart."""

from __future__ import annotations

from proxy.deliver.batching import split
from proxy.destinations.base import BatchLimits


def test_splits_by_count() -> None:
    parts = split(list(range(7)), BatchLimits(max_events=3, max_bytes=1000), lambda _: 1)
    assert parts.batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert parts.too_large == []


def test_splits_by_bytes() -> None:
    sizes = [40, 40, 30, 90, 10, 10]
    parts = split(sizes, BatchLimits(max_events=100, max_bytes=100), lambda n: n)
    assert parts.batches == [[40, 40], [30], [90, 10], [10]]
    assert all(sum(batch) <= 100 for batch in parts.batches)


def test_an_item_over_the_byte_limit_alone_is_too_large() -> None:
    parts = split([10, 101, 20], BatchLimits(max_events=100, max_bytes=100), lambda n: n)
    assert parts.batches == [[10, 20]]
    assert parts.too_large == [101]


def test_an_item_exactly_at_the_limit_fits_alone() -> None:
    parts = split([100, 1], BatchLimits(max_events=100, max_bytes=100), lambda n: n)
    assert parts.batches == [[100], [1]]


def test_nothing_in_nothing_out() -> None:
    nothing: list[int] = []
    parts = split(nothing, BatchLimits(max_events=1, max_bytes=1), lambda n: n)
    assert (parts.batches, parts.too_large) == ([], [])

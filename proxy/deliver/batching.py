"""Splits claimed events into batches within a destination's BatchLimits, keeping their order.

Every item lands in exactly one batch, or in `too_large` when it alone exceeds `max_bytes`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from proxy.destinations.base import BatchLimits

T = TypeVar("T")


@dataclass(slots=True)
class Split(Generic[T]):
    batches: list[list[T]] = field(default_factory=list)
    too_large: list[T] = field(default_factory=list)  # become `dead:too_large`


def split(items: Sequence[T], limits: BatchLimits, size: Callable[[T], int]) -> Split[T]:
    """Greedy, in order: a batch closes when the next item would pass either limit."""
    result: Split[T] = Split()
    current: list[T] = []
    used = 0
    for item in items:
        n = size(item)
        if n > limits.max_bytes:
            result.too_large.append(item)
            continue
        if current and (len(current) >= limits.max_events or used + n > limits.max_bytes):
            result.batches.append(current)
            current, used = [], 0
        current.append(item)
        used += n
    if current:
        result.batches.append(current)
    return result

"""When to try a failed request again: exponential backoff with full jitter, never sooner than the
vendor's Retry-After. A pure function; randomness is injected so tests can pin it."""

from __future__ import annotations

import random
from collections.abc import Callable

# 2**63 seconds is far past any cap; bounding the exponent keeps the float math finite.
MAX_EXPONENT = 63


def retry_delay(
    attempts: int,
    base_secs: float,
    max_secs: float,
    retry_after_secs: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after `attempts` failed tries (1 = the first failure).

    Full jitter (a uniform draw below the exponential ceiling) spreads a burst of retries out, so
    a vendor coming back from an outage is not hit by every waiting batch at once.
    """
    exponent = min(max(attempts - 1, 0), MAX_EXPONENT)
    ceiling = min(max_secs, base_secs * 2.0**exponent)
    delay = rand() * ceiling
    if retry_after_secs is not None:
        # Retry-After is already capped where it is parsed (destinations/base.py).
        delay = max(delay, retry_after_secs)
    return delay

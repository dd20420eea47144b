"""Retry-After (RFC 9110 §10.2.3), read the same way by delivery and by the relay's client."""

from __future__ import annotations

import time
from datetime import UTC
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from `now` (default: the current time) that a Retry-After value asks for, from
    delta-seconds or an HTTP date; None when it is absent or unusable."""
    if not value:
        return None
    value = value.strip()
    # isascii: isdigit() also takes digits that float() cannot read, such as "²".
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # asctime's form has no zone; HTTP dates are always GMT
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))

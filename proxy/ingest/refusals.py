"""A budget of refused work per client address, spent before a body is read.

The rate limits (limits.py) count events, so they can only act once a body is parsed, and a
request that ends refused (an unknown write key, a batch over the limits, malformed JSON) was
never charged at all: anyone could make the relay parse 5 MB of tiny JSON objects, a third of a
second of the event loop, from a 7 KB gzip body, as often as they liked. Each refused request now
costs its address the bytes the relay read for it; an address whose budget is spent is answered
429 before its next body is read. Clients that are not refused never spend any of it.

Per process (on a Redis spool each node keeps its own): it guards a process's event loop.
"""

from __future__ import annotations

from aiohttp import web

from proxy.ingest.limits import MAX_TRACKED_IPS, TokenBuckets, ip_key, limited

REFUSED_BYTES_PER_SEC = 1_000_000
REFUSED_BYTES_BURST = 20_000_000  # four refused bodies of the largest size, then 1 MB a second
REQUEST_BYTES = 1024  # what a refusal costs besides its body: headers, a response

# The decoded body's size, for the charge after a refusal.
BODY_BYTES = web.RequestKey("body_bytes", int)
# Refused by the gate: nothing was read, nothing is charged.
GATED = web.RequestKey("gated", bool)


class Refusals:
    def __init__(self) -> None:
        self._buckets = TokenBuckets(REFUSED_BYTES_PER_SEC, REFUSED_BYTES_BURST, MAX_TRACKED_IPS)

    def gate(self, request: web.Request, ip: str | None, now: float) -> None:
        """Raise 429 when `ip` has spent its budget (nothing is charged for this answer)."""
        address = ip_key(ip)
        if address is None:
            return
        wait = self._buckets.wait_secs(address, 1, now)
        if wait > 0:
            request[GATED] = True
            raise limited("this address", wait, what="refused requests")

    def charge(self, ip: str | None, request: web.Request, now: float) -> None:
        """After a refusal: the bytes read for `request`."""
        address = ip_key(ip)
        if address is not None and not request.get(GATED, False):
            cost = request.get(BODY_BYTES, 0) + REQUEST_BYTES
            self._buckets.wait_secs(address, 0, now)  # refill before spending
            self._buckets.spend(address, cost, now)


def refused(status: int) -> bool:
    """Whether an answer refused the client's request (429 included: a sender over its limits
    that keeps sending large bodies costs as much as one with bad ones)."""
    return 400 <= status < 500

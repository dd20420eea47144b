"""A budget of refused work per client address, spent before a body is read.

The rate limits (limits.py) count events, so they can only act once a body is parsed, and a
request that ends refused (an unknown write key, a batch over the limits, malformed JSON) was
never charged at all: anyone could make the relay parse 5 MB of tiny JSON objects, a third of a
second of the event loop, from a 7 KB gzip body, as often as they liked. Each refused request now
costs its address the bytes the relay read for it; an address whose budget is spent is answered
429 before its next body is read. Clients that are not refused never spend any of it.

Not charged: refusals the address is not to blame for (another site's page posting with its
visitors' browsers, a whole source over its limit), and requests with a server source's key in
their Authorization header (the site's backend, which may share an address with browsers).
The debt is capped at one burst, so an address is never shut out for more than about 20 s by
what it sent before. Requests sent at the same moment all pass a gate that is still open: at
most MAX_READING of an address's bodies are read and parsed at once, the next gets 429.

Per process (on a Redis spool each node keeps its own): it guards a process's event loop.
"""

from __future__ import annotations

from aiohttp import web

from proxy.ingest.common import REFUSAL
from proxy.ingest.limits import MAX_TRACKED_IPS, TokenBuckets, ip_key, limited

REFUSED_BYTES_PER_SEC = 1_000_000
REFUSED_BYTES_BURST = 20_000_000  # four refused bodies of the largest size, then 1 MB a second
REQUEST_BYTES = 1024  # what a refusal costs besides its body: headers, a response
# An address's bodies being read and parsed at once. A page sends one or two at a time; many
# users behind one address (an office, a carrier's NAT) seldom reach it, as a body read through
# the site's proxy takes a millisecond, and one that does is told to retry in a second.
MAX_READING = 32

# What the answer hook needs of a request: its client address, the bytes read for its body.
CLIENT_IP = web.RequestKey("client_ip", str)
BODY_BYTES = web.RequestKey("body_bytes", int)
EXEMPT = web.RequestKey("refusals_exempt", bool)  # a server key: never gated nor charged


class Refusals:
    def __init__(self) -> None:
        self._buckets = TokenBuckets(REFUSED_BYTES_PER_SEC, REFUSED_BYTES_BURST, MAX_TRACKED_IPS)
        self._reading: dict[str, int] = {}  # an address's bodies being read now, while any are

    def enter(self, ip: str | None, now: float) -> str | None:
        """Before a body is read: raise 429 when `ip` has spent its budget, or has MAX_READING
        bodies being read (nothing is charged for these answers). Else the address to `leave()`
        once the body is read and parsed (None: no address to count)."""
        address = ip_key(ip)
        if address is None:
            return None
        wait = self._buckets.wait_secs(address, 1, now)
        if wait > 0:
            raise limited("this address", wait, what="refused requests", costs_sender=False)
        reading = self._reading.get(address, 0)
        if reading >= MAX_READING:
            raise limited("this address", 1, what="requests at once", costs_sender=False)
        self._reading[address] = reading + 1
        return address

    def leave(self, address: str) -> None:
        reading = self._reading[address] - 1
        if reading:
            self._reading[address] = reading
        else:
            del self._reading[address]

    def charge(self, request: web.Request, now: float) -> None:
        """After an answer: if it refused the request for the sender's fault (a 4xx), the
        bytes read for it."""
        error = request.get(REFUSAL)
        if error is None or not error.costs_sender or not 400 <= error.status < 500:
            return
        address = ip_key(request.get(CLIENT_IP))
        if address is None or request.get(EXEMPT, False):
            return
        cost = request.get(BODY_BYTES, 0) + REQUEST_BYTES
        self._buckets.wait_secs(address, 0, now)  # refill before spending
        self._buckets.spend(address, cost, now, max_debt=REFUSED_BYTES_BURST)

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
what it sent before. Not bounded here: requests sent at the same moment all pass a gate that is
still open and are all read (a front proxy's per-client connection limit bounds that).

Per process (on a Redis spool each node keeps its own): it guards a process's event loop.
"""

from __future__ import annotations

from aiohttp import web

from proxy.ingest.common import REFUSAL
from proxy.ingest.limits import MAX_TRACKED_IPS, TokenBuckets, ip_key, limited

REFUSED_BYTES_PER_SEC = 1_000_000
REFUSED_BYTES_BURST = 20_000_000  # four refused bodies of the largest size, then 1 MB a second
REQUEST_BYTES = 1024  # what a refusal costs besides its body: headers, a response

# What the answer hook needs of a request: its client address, the bytes read for its body.
CLIENT_IP = web.RequestKey("client_ip", str)
BODY_BYTES = web.RequestKey("body_bytes", int)
EXEMPT = web.RequestKey("refusals_exempt", bool)  # a server key: never gated nor charged


class Refusals:
    def __init__(self) -> None:
        self._buckets = TokenBuckets(REFUSED_BYTES_PER_SEC, REFUSED_BYTES_BURST, MAX_TRACKED_IPS)

    def gate(self, ip: str | None, now: float) -> None:
        """Raise 429 when `ip` has spent its budget (nothing is charged for this answer)."""
        address = ip_key(ip)
        if address is None:
            return
        wait = self._buckets.wait_secs(address, 1, now)
        if wait > 0:
            raise limited("this address", wait, what="refused requests", costs_sender=False)

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

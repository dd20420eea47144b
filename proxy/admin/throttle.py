"""Wrong admin tokens cost time: failures are counted per client and for all clients together.

A client's first FREE_FAILURES wrong tokens cost nothing (typos, a stale password manager entry);
then each failure locks it out for twice as long as the one before, never longer than
MAX_LOCK_SECS. All clients together get GLOBAL_FREE_FAILURES, then the same: behind an SSH tunnel
or a reverse proxy every client may be one address, and where forwarding headers are believed a
client can name a new address with each request, so only the global bound caps the guess rate
(about one a minute). A locked attempt is refused unchecked, so locks cannot be raced; a success
clears its client's count, not the global one (a scraper's Bearer token on the same address must
not refill an attacker's tries). Memory is bounded: quiet clients are forgotten, the oldest first.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

from proxy.clock import Clock
from proxy.enrich.ip import parse_ip

FREE_FAILURES = 5
GLOBAL_FREE_FAILURES = 20
FIRST_LOCK_SECS = 1.0
MAX_LOCK_SECS = 60.0  # the longest the real admin can be kept out after an attack stops
FORGET_SECS = 15 * 60.0  # a client without a failure for this long starts afresh
MAX_CLIENTS = 10_000  # ~2 MB; past it the oldest are forgotten (the global bound still holds)
EVERYONE = "*"


@dataclass(slots=True)
class _Record:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


class Throttle:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._clients: OrderedDict[str, _Record] = OrderedDict()
        self._everyone = _Record()

    def __len__(self) -> int:
        return len(self._clients)

    def wait_secs(self, client: str) -> int:
        """Whole seconds until `client` may try a token again; 0: now."""
        now = self._clock.now()
        record = self._clients.get(client)
        if record is not None and now - record.last_failure > FORGET_SECS:
            del self._clients[client]
            record = None
        waits = [self._remaining(r, now) for r in (record, self._everyone) if r is not None]
        return math.ceil(max(waits))

    def failed(self, client: str) -> int:
        """Counts a wrong token; returns the wait it started (0: none)."""
        now = self._clock.now()
        record = self._clients.pop(client, None)
        if record is None or now - record.last_failure > FORGET_SECS:
            record = _Record()
        self._make_room()
        self._clients[client] = record  # last in the order: the most recently failed
        if now - self._everyone.last_failure > FORGET_SECS:
            self._everyone = _Record()
        _count(record, FREE_FAILURES, now)
        _count(self._everyone, GLOBAL_FREE_FAILURES, now)
        return self.wait_secs(client)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def _remaining(self, record: _Record, now: float) -> float:
        # A wall clock set back would stretch a lock by the step: never wait past the cap.
        record.locked_until = min(record.locked_until, now + MAX_LOCK_SECS)
        return max(0.0, record.locked_until - now)

    def _make_room(self) -> None:
        if len(self._clients) >= MAX_CLIENTS:
            self._clients.popitem(last=False)  # the client whose last failure is oldest


def _count(record: _Record, free: int, now: float) -> None:
    record.failures += 1
    record.last_failure = now
    if record.failures >= free:
        doublings = min(record.failures - free, 30)  # a float overflows past 2 ** 1023
        lock = min(MAX_LOCK_SECS, FIRST_LOCK_SECS * 2**doublings)
        record.locked_until = max(record.locked_until, now + lock)


def client_key(request: web.Request) -> str:
    """Who a failure counts against: the peer's address, an IPv6 client by its /64 (one host
    usually holds the whole /64). Never a forwarding header: `trusted_proxies` describes the
    public listener's proxies, and on the admin listener it let anyone who reached it (through
    a loopback or cluster peer the setting trusts) name a new client for each guess."""
    address = request.remote or ""
    parsed = parse_ip(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return address

"""Plausible's Events API (shared/vendors/plausible.md) on FakeVendor.

`/api/event` answers 202 `{}` to everything (§4), as Plausible does; what a request breaks goes
to `problems`, so a test can assert there is nothing. Without a visitor's X-Forwarded-For, or
from a datacenter address, the event is dropped and the answer says `x-plausible-dropped: 1`.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import orjson

from tests.fakes.vendor import Answer, FakeVendor, Recorded

ACCEPTED = Answer(202, b"{}", {"Content-Type": "application/json"})
DROPPED = Answer(202, b"{}", {"Content-Type": "application/json", "x-plausible-dropped": "1"})


class FakePlausible(FakeVendor):
    def __init__(self, domain: str = "shop.example") -> None:
        super().__init__({"/api/event": self._event})
        self.domain = domain
        self.datacenter_ips: set[str] = set()  # addresses the bot filter drops
        self.problems: list[str] = []
        self.received: list[tuple[dict[str, Any], str, str]] = []  # (body, user agent, ip)

    def _event(self, request: Recorded) -> Answer:
        agent = request.headers.get("User-Agent", "")
        if not agent or agent.startswith("Python/"):  # aiohttp's own: not the visitor's (§2)
            self.problems.append("User-Agent: the visitor's is required")
        if request.headers.get("Content-Type") not in ("application/json", "text/plain"):
            self.problems.append("Content-Type: application/json or text/plain")
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            self.problems.append("body: not a JSON object")
            return ACCEPTED
        self.problems += self.check(body)
        ip = first_ip(request.headers.get("X-Forwarded-For", ""))
        if ip is None or ip in self.datacenter_ips:
            return DROPPED  # the sender's own address: one visitor, bot-filtered (§2, §4)
        props = body.get("props", {})
        if isinstance(props, dict):
            body["props"] = dict(list(props.items())[:30])  # extra keys are dropped (§3)
        self.received.append((body, agent, ip))
        return ACCEPTED

    def check(self, body: dict[str, Any]) -> list[str]:
        """What §3 refuses in a body."""
        found = []
        if body.get("domain") != self.domain:
            found.append(f"domain: {body.get('domain')!r} is not {self.domain!r}")
        if not isinstance(body.get("name"), str) or not body["name"]:
            found.append("name: required")
        url = body.get("url")
        if not isinstance(url, str) or url.startswith("data:"):
            found.append("url: required, not a data: URL")
        elif len(urlsplit(url).path) > 2000:
            found.append("url: path longer than 2000 characters")
        for key, value in body.get("props", {}).items():
            if not isinstance(value, str | int | float):
                found.append(f"props.{key}: strings, numbers and booleans only")
        revenue = body.get("revenue")
        if revenue is not None and not (
            isinstance(revenue, dict)
            and isinstance(revenue.get("currency"), str)
            and len(revenue["currency"]) == 3
            and isinstance(revenue.get("amount"), int | float | str)
        ):
            found.append("revenue: {currency, amount}")
        return found


def first_ip(header: str) -> str | None:
    """The first valid address of an X-Forwarded-For list (§2)."""
    for part in header.split(","):
        try:
            return str(ipaddress.ip_address(part.strip()))
        except ValueError:
            continue
    return None

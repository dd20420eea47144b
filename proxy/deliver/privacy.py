"""Per-destination IP handling at delivery, before the adapter maps the event: `ip = "full"`
sends `context.ip` as stored, "truncate" zeroes the host part (IPv4 /24, IPv6 /48), "drop"
removes it. The stored event is never changed: each destination gets its own copy.

`context.location` stays: it was looked up at ingest and is no finer than a /24 network.
"""

from __future__ import annotations

from proxy.enrich.ip import truncate_ip
from proxy.events import Event
from proxy.settings import IpMode


def apply_ip(event: Event, mode: IpMode) -> Event:
    """`event` as this destination may see it; the same object when nothing changes."""
    if mode == "full":
        return event  # the default: no decode, no copy
    context = event.context
    ip = context.get("ip")
    if ip is None:
        return event
    kept = truncate_ip(ip) if mode == "truncate" and isinstance(ip, str) else None
    changed = {key: value for key, value in context.items() if key != "ip"}
    if kept is not None:  # None: dropped, or not an address (never sent un-truncated)
        changed["ip"] = kept
    data = {**event.data, "context": changed}
    return Event.from_data(data)

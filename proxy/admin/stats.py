"""What the admin pages and /metrics show per destination and per event, gathered from the spool
(backlog, oldest waiting, dead letters) and the Monitor (rate, error rate, what was sent).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from markupsafe import Markup, escape

from proxy.admin.monitor import Seen, Sent
from proxy.admin.tap import oldest_waiting
from proxy.deliver.gone import Disabled
from proxy.keys import CLOCK, METRICS, MONITOR, SETTINGS, SPOOL, WORKERS
from proxy.spool.base import DeadLetter

# The admin app keeps the public app here: its spool, workers and monitor are what it shows.
PUBLIC = web.AppKey("public", web.Application)


@dataclass(frozen=True, slots=True)
class DestinationView:
    name: str
    type: str
    rate_per_minute: float
    backlog: int
    oldest_waiting_secs: float | None
    error_rate: float
    last_errors: list[Sent]
    dead_letter_count: int
    dead_letters: list[DeadLetter]  # the oldest SHOWN_DEAD_LETTERS
    series: list[int]
    # Set while its endpoint has said it is gone (proxy/deliver/gone.py). Only a process that
    # delivers knows: on an ingest-only node (Redis) it is always None.
    disabled: Disabled | None


# A page (or an API answer) lists at most this many; the count is always exact. Thousands of
# dead letters after an outage must not be read and sent on every refresh or scrape.
SHOWN_DEAD_LETTERS = 200


async def destination_view(public: web.Application, name: str) -> DestinationView:
    spool, monitor = public[SPOOL], public[MONITOR]
    kind = next(d.type for d in public[SETTINGS].destinations if d.name == name)
    oldest = await oldest_waiting(spool, name)
    stats = monitor.stats[name]
    return DestinationView(
        name=name,
        type=kind,
        rate_per_minute=monitor.rate_per_minute(name),
        backlog=await spool.backlog(name),
        oldest_waiting_secs=None if oldest is None else max(0.0, public[CLOCK].now() - oldest),
        error_rate=stats.error_rate,
        last_errors=list(reversed(stats.errors)),
        dead_letter_count=await spool.dead_letter_count(name),
        # The vendor's answer, as kept in the spool, may echo a credential (a query string, a
        # header): masked like every answer the admin shows.
        dead_letters=[
            dataclasses.replace(letter, response=monitor.masked(letter.response.encode(), False))
            for letter in await spool.dead_letters(name, SHOWN_DEAD_LETTERS)
        ],
        series=monitor.series(stats.per_minute),
        disabled=disabled(public, name),
    )


def disabled(public: web.Application, name: str) -> Disabled | None:
    worker = public.get(WORKERS, {}).get(name)
    return None if worker is None else worker.disabled


async def all_destinations(public: web.Application) -> list[DestinationView]:
    return [await destination_view(public, d.name) for d in public[SETTINGS].destinations]


async def refresh_gauges(public: web.Application) -> None:
    """Set the spool-derived gauges just before a scrape."""
    metrics = public[METRICS]
    spool = public[SPOOL]
    metrics.spool_bytes.set(spool.size_bytes())
    metrics.spool_max_bytes.set(public[SETTINGS].spool.max_bytes)
    for view in await all_destinations(public):
        metrics.backlog.labels(view.name).set(view.backlog)
        metrics.oldest_age.labels(view.name).set(view.oldest_waiting_secs or 0.0)
        metrics.dead_letters_waiting.labels(view.name).set(view.dead_letter_count)
    # Only for the destinations this process delivers to: an ingest-only node cannot tell.
    for name, worker in public.get(WORKERS, {}).items():
        metrics.disabled.labels(name).set(0 if worker.disabled is None else 1)


def event_summary(public: web.Application, seen: Seen) -> dict[str, Any]:
    """One row of the live view: who, what, and where it stands at each destination."""
    data = seen.data()
    relay = data.get("_relay")
    return {
        "seq": seen.seq,
        "at": seen.at,
        "source": relay.get("source") if isinstance(relay, dict) else None,
        "type": data.get("type"),
        # Ingest checks `event` of a track and `name` of a page or screen; others may send any
        # JSON there, and the live view's answer must stay small and encodable.
        "name": _text(data.get("event") or data.get("name")),
        "messageId": data.get("messageId"),
        "userId": data.get("userId"),
        "anonymousId": data.get("anonymousId"),
        "destinations": public[MONITOR].outcomes_of(str(data.get("messageId", ""))),
    }


def matches(row: dict[str, Any], filters: dict[str, str]) -> bool:
    """The live view's filters: source, name and user exact (user: userId or anonymousId);
    destination: the event is meant for it (not filtered out there)."""
    if filters.get("source") and row["source"] != filters["source"]:
        return False
    if filters.get("name") and row["name"] != filters["name"]:
        return False
    user = filters.get("user")
    if user and user not in (row["userId"], row["anonymousId"]):
        return False
    destination = filters.get("destination")
    if destination:
        status = row["destinations"].get(destination)
        return status is not None and not status.startswith("filtered")
    return True


def bar_chart(series: list[int], label: str, width: int = 360, height: int = 80) -> Markup:
    """An inline SVG bar chart of `series` (one bar per minute, the current minute last)."""
    top = max(series) or 1
    step = width / max(1, len(series))
    bars = []
    for index, value in enumerate(series):
        h = round(value / top * (height - 14), 1)
        x = round(index * step, 1)
        bars.append(
            f'<rect x="{x}" y="{height - h}" width="{max(1.0, step - 1):.1f}" height="{h}">'
            f"<title>{value}</title></rect>"
        )
    return Markup(
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}" aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f'<text x="0" y="10">max {top}/min</text>{"".join(bars)}</svg>'
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None

"""What one request's answer means for the claimed events it carried: the spool's done / retry /
dead lists and the final Outcome of each event, gathered before one settle call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from proxy.destinations.base import HttpResponse
from proxy.events import Event
from proxy.outcomes import Outcome, Status
from proxy.spool.base import Dead, Retry, Stored

# A claimed event and the Event the destination maps. A plain tuple: one is made per event.
Claimed: TypeAlias = tuple[Stored, Event]

# How much of a vendor's answer a dead letter keeps for the operator.
MAX_RESPONSE_CHARS = 2048
# How much of it the log line that reports dead letters shows (the rest: `dead-letters`).
LOGGED_RESPONSE_CHARS = 200


@dataclass(slots=True)
class Settlement:
    """What to tell the spool about some claimed events, and the final Outcomes to record."""

    done: list[str] = field(default_factory=list)
    retry: list[Retry] = field(default_factory=list)
    dead: list[Dead] = field(default_factory=list)
    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)

    def add(self, stored: Stored, message_id: str, outcome: Outcome, answer: str = "") -> None:
        if outcome.status is Status.DEAD:
            self.dead.append(Dead(stored.id, outcome.reason, answer))
        else:
            self.done.append(stored.id)
        self.outcomes.append((message_id, outcome))

    def add_all(self, claimed: Sequence[Claimed], outcome: Outcome, answer: str = "") -> None:
        """`add` for events that all end alike (one answer for a whole request), in bulk."""
        if outcome.status is Status.DEAD:
            self.dead += [Dead(stored.id, outcome.reason, answer) for stored, _ in claimed]
        else:
            self.done += [stored.id for stored, _ in claimed]
        self.outcomes += [(event.message_id, outcome) for _, event in claimed]

    def __bool__(self) -> bool:
        return bool(self.done or self.retry or self.dead)


def excerpt(response: HttpResponse | None) -> str:
    if response is None:
        return ""
    return response.body[: MAX_RESPONSE_CHARS * 4].decode("utf-8", "replace")[:MAX_RESPONSE_CHARS]


def log_excerpt(answer: str) -> str:
    """A vendor's answer on one log line: whitespace run together, at most LOGGED_RESPONSE_CHARS."""
    flat = " ".join(answer[: LOGGED_RESPONSE_CHARS * 2].split())
    return flat if len(flat) <= LOGGED_RESPONSE_CHARS else flat[: LOGGED_RESPONSE_CHARS - 3] + "..."

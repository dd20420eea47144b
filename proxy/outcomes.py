"""What happened to one event at one destination: one final Outcome each, with a reason code.

Reason codes are `<status>:<detail>`, e.g. `delivered:http_204`, `filtered:consent`,
`rejected:http_400`, `dead:max_attempts`, `dead:too_old`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    DELIVERED = "delivered"
    FILTERED = "filtered"  # never meant for this destination (filter, consent, unsupported type)
    DEAD = "dead"  # the vendor refused it or retries ran out: kept as a dead letter for replay


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    detail: str
    # Made once: a worker shares one Outcome among a request's events, and observers read the
    # reason of each of them.
    reason: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", f"{self.status}:{self.detail}")

    @classmethod
    def delivered(cls, detail: str) -> Outcome:
        return cls(Status.DELIVERED, detail)

    @classmethod
    def filtered(cls, detail: str) -> Outcome:
        return cls(Status.FILTERED, detail)

    @classmethod
    def dead(cls, detail: str) -> Outcome:
        return cls(Status.DEAD, detail)

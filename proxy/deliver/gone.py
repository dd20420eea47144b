"""A destination whose endpoint said it is gone (`Result.gone`: a webhook's 410) is disabled.

Its worker sends it nothing more. What the worker claims meanwhile becomes a dead letter at once
(`dead:endpoint_gone`): the destination's cursor moves on, so its backlog does not hold up the
shared spool's housekeeping, and the operator replays the events once the endpoint is back.
The state lives in the worker's memory: a restart, or a replay from the admin, re-enables it.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.outcomes import Outcome

GONE = Outcome.dead("endpoint_gone")

DISABLED_MESSAGE = (
    "The destination's endpoint said it is gone; delivery to it is disabled. Until it is"
    " re-enabled, its events become dead letters (dead:endpoint_gone) without being sent. Fix"
    " the endpoint (or remove the destination), then replay its dead letters from the admin,"
    " which re-enables it, or restart the relay."
)


@dataclass(frozen=True, slots=True)
class Disabled:
    at: float  # epoch seconds (the worker's Clock)
    reason: str  # the answer that said so, e.g. "http_410_gone"

"""Events sent before the user answered the consent question wait in the spool for the answer.

For a destination that needs consent categories, an event with no answer for one of them is
parked as a retry (reason `waiting_consent`) and looked up again every `recheck` seconds: once
the browser's later events have taught the context store the answer, the event goes (or is
filtered) with that answer attached and its original timestamp. After `[privacy]
consent_wait_secs` it is decided as it stands (`consent_required`). 0 turns waiting off.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.enrich.consent import NECESSARY, preferences
from proxy.events import Event
from proxy.identity import profile
from proxy.identity.store import IdentityStore

HOLD_REASON = "waiting_consent"
MIN_RECHECK_SECS = 1.0


class ConsentWait:
    def __init__(self, wait_secs: float, store: IdentityStore | None) -> None:
        self.wait_secs = wait_secs
        self.store = store  # None on a delivery-only node: events wait out the time, then go
        # About ten looks over the window: each look counts as an attempt in the spool.
        self.recheck_secs = max(MIN_RECHECK_SECS, wait_secs / 10)

    def undecided(self, event: Event, categories: Sequence[str], now: float) -> bool:
        """True while the event lacks an answer it needs and may still wait for one."""
        if self.wait_secs <= 0 or not categories:
            return False
        found = preferences(event.context) or {}
        missing = any(c != NECESSARY and not isinstance(found.get(c), bool) for c in categories)
        return missing and now - event.timestamp.timestamp() < self.wait_secs

    async def answers(self, events: Sequence[Event], now: float) -> dict[str, dict[str, bool]]:
        """The remembered consent of each event's user (by messageId), where the store has one."""
        if self.store is None or not events:
            return {}
        keys_of = {event.message_id: list(profile.keys(event.data)) for event in events}
        profiles = await self.store.load([k for keys in keys_of.values() for k in keys], now)
        found: dict[str, dict[str, bool]] = {}
        for message_id, keys in keys_of.items():
            for key in keys:
                consent = profiles.get(key, {}).get("consent")
                if isinstance(consent, dict) and consent:
                    found[message_id] = {k: v for k, v in consent.items() if isinstance(v, bool)}
                    break
        return found


def with_answer(event: Event, answer: dict[str, bool]) -> Event:
    """The event with the remembered answer filled in where it had none (its own answers win)."""
    data = dict(event.data)
    context = dict(data.get("context") or {})
    consent = dict(context.get("consent") or {})
    consent["categoryPreferences"] = {**answer, **(preferences(context) or {})}
    context["consent"] = consent
    data["context"] = context
    return Event.from_data(data)

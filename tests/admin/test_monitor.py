"""The Monitor's memory of per-destination outcomes: folded in only when a view asks, bounded,
and the latest outcome of each recent event per destination is what a view sees."""

from __future__ import annotations

from proxy.admin import monitor
from proxy.admin.monitor import Monitor
from proxy.clock import ManualClock
from proxy.config import destination_settings
from proxy.metrics import Metrics
from proxy.outcomes import Outcome
from proxy.settings import Settings

BATCH = 100


def watching(*destinations: str) -> Monitor:
    settings = Settings(
        destinations=tuple(destination_settings(name, {"type": "debug"}) for name in destinations)
    )
    return Monitor(settings, ManualClock(), Metrics())


def test_a_view_sees_each_destinations_latest_outcome() -> None:
    watch = watching("a", "b")
    watch.settled("a", [("m-1", Outcome.dead("http_400")), ("m-2", Outcome.delivered("ok"))], 0)
    watch.settled("a", [("m-1", Outcome.delivered("replayed"))], 0)  # replayed, then taken
    assert watch.outcomes_of("m-1") == {"a": "delivered:replayed", "b": monitor.WAITING}
    watch.settled("b", [("m-1", Outcome.filtered("consent"))], 0)
    assert watch.outcomes_of("m-1") == {"a": "delivered:replayed", "b": "filtered:consent"}
    assert watch.outcomes_of("m-2")["a"] == "delivered:ok"


def test_outcomes_nobody_looks_at_are_bounded() -> None:
    watch = watching("a")
    ids = [f"m-{n}" for n in range(3 * monitor.KEEP_STATUSES)]
    for start in range(0, len(ids), BATCH):
        batch = [(mid, Outcome.delivered("ok")) for mid in ids[start : start + BATCH]]
        watch.settled("a", batch, 0)
    held = sum(len(outcomes) for _, outcomes in watch._unfolded)
    assert held < monitor.KEEP_STATUSES + BATCH
    assert watch.outcomes_of(ids[-1]) == {"a": "delivered:ok"}
    assert watch.outcomes_of(ids[-monitor.KEEP_STATUSES]) == {"a": "delivered:ok"}
    assert watch.outcomes_of(ids[0]) == {"a": monitor.WAITING}  # forgotten, as before
    assert len(watch.statuses) == monitor.KEEP_STATUSES

"""The login throttle's memory: bounded however many addresses guess, quiet clients forgotten."""

from __future__ import annotations

from proxy.admin.throttle import FORGET_SECS, MAX_CLIENTS, Throttle
from proxy.clock import ManualClock


def test_memory_is_bounded_however_many_addresses_guess() -> None:
    throttle = Throttle(ManualClock())
    for i in range(MAX_CLIENTS + 500):
        throttle.failed(f"client-{i}")
    assert len(throttle) == MAX_CLIENTS
    # The oldest were forgotten, but the global bound still holds everyone back.
    assert throttle.wait_secs("client-0") > 0


def test_a_client_quiet_for_a_while_starts_afresh() -> None:
    clock = ManualClock()
    throttle = Throttle(clock)
    for _ in range(4):
        assert throttle.failed("a") == 0
    clock.advance(FORGET_SECS + 1)
    assert throttle.wait_secs("a") == 0
    assert len(throttle) == 0
    for _ in range(4):
        assert throttle.failed("a") == 0  # four more typos still cost nothing
    assert throttle.failed("a") == 1

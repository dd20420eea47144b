"""A webhook disabled by a 410 Gone, as the operator sees it: the admin API, pages and /metrics
show it disabled since when and why, and the admin's replay re-enables it, so fixing the
receiver and replaying delivers without a restart. Before, nothing showed it, and each later
batch was sent to the gone endpoint."""

from __future__ import annotations

import time
from typing import Any

from tests.admin.conftest import AdminRelay, eventually
from tests.admin.test_metrics import samples, value


async def hook(admin: AdminRelay) -> dict[str, Any]:
    found: dict[str, Any] = (await admin.get_json("/api/destinations"))[1]
    assert found["name"] == "hook"
    return found


async def outcome(admin: AdminRelay, message_id: str, destination: str) -> str:
    rows = (await admin.get_json("/api/events"))["events"]
    row = next((row for row in rows if row["messageId"] == message_id), None)
    return "" if row is None else str(row["destinations"].get(destination, ""))


async def disable(admin: AdminRelay) -> None:
    """m-1 meets the 410; m-2, sent after, is parked without a request."""
    admin.vendor.answer(410, b'{"error":"hook deleted"}')
    await admin.ingest(messageId="m-1")

    async def gone() -> bool:
        return await outcome(admin, "m-1", "hook") == "dead:http_410_gone"

    await eventually(gone, "m-1 met the 410")
    await admin.ingest(messageId="m-2")

    async def parked() -> bool:
        return await outcome(admin, "m-2", "hook") == "dead:endpoint_gone"

    await eventually(parked, "m-2 parked without a request")
    assert len(admin.vendor.requests) == 1


async def test_the_admin_and_metrics_show_a_disabled_destination(admin: AdminRelay) -> None:
    before = time.time()
    await disable(admin)
    disabled = (await hook(admin))["disabled"]
    assert disabled["reason"] == "http_410_gone"
    assert before <= disabled["at"] <= time.time()
    _, page = await admin.get("/destinations/hook")
    assert 'id="disabled"' in page
    assert "http_410_gone" in page
    assert "Replay all and re-enable" in page
    _, overview = await admin.get("/")
    assert 'class="disabled"' in overview
    found = await samples(admin)
    assert value(found, "relay_destination_disabled", destination="hook") == 1
    assert value(found, "relay_destination_disabled", destination="debug") == 0
    assert (await admin.get_json("/api/destinations"))[0]["disabled"] is None  # debug

    async def debug_delivered() -> bool:
        return (await outcome(admin, "m-2", "debug")).startswith("delivered")

    await eventually(debug_delivered, "the debug destination still delivers")


async def test_admin_replay_re_enables_and_delivers(admin: AdminRelay) -> None:
    await disable(admin)
    # The receiver is fixed (the vendor answers 200 again): replay all from the admin.
    csrf = await admin.csrf("/destinations/hook")
    async with admin.http.post(
        f"{admin.admin_url}/destinations/hook/replay",
        data={"csrf": csrf}, headers=admin.bearer, allow_redirects=False,
    ) as response:  # fmt: skip
        assert response.headers["Location"].endswith("replayed+2")

    async def delivered() -> bool:
        found = [await outcome(admin, mid, "hook") for mid in ("m-1", "m-2")]
        return all(reason.startswith("delivered") for reason in found)

    await eventually(delivered, "both delivered after the replay")
    await admin.ingest(messageId="m-3")

    async def sent() -> bool:
        return (await outcome(admin, "m-3", "hook")).startswith("delivered")

    await eventually(sent, "a new event is sent again")
    assert (await hook(admin))["disabled"] is None
    assert value(await samples(admin), "relay_destination_disabled", destination="hook") == 0
    _, page = await admin.get("/destinations/hook")
    assert 'id="disabled"' not in page

"""The admin page in headless Chromium: refused without the token, signed in with it, an event
appearing live, and a dead letter replayed with the button. Screenshots: tests/artifacts/admin/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from proxy.keys import SPOOL
from tests.admin.conftest import TOKEN, AdminRelay
from tests.deliver.harness import eventually

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "admin"


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    if not CHROMIUM.exists():  # noqa: ASYNC240 (a stat, once, before the browser starts)
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        try:
            yield await (await browser.new_context()).new_page()
        finally:
            await browser.close()


async def test_sign_in_watch_an_event_and_replay_a_dead_letter(
    admin: AdminRelay, page: Page
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The wrong-token 401 and the favicon 404 are logged as failed loads; anything else counts
    # (a blocked stylesheet or script, a CSP violation, a script error).
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )

    # Without the token: the login form, and nothing of the relay.
    await page.goto(f"{admin.admin_url}/events")
    await expect(page).to_have_url(f"{admin.admin_url}/login?next=/events")
    assert "hook" not in await page.content()
    await page.fill("input[name=token]", "wrong")
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_have_text("That token is not right.")
    await page.screenshot(path=ARTIFACTS / "login.png")

    await page.fill("input[name=token]", TOKEN)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{admin.admin_url}/events")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "relay_admin_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"

    # An event sent now appears without a reload, with its outcome at each destination.
    await admin.ingest(messageId="m-browser", event="Browser Seen")
    row = page.locator('tr[data-message-id="m-browser"]')
    await expect(row).to_contain_text("Browser Seen", timeout=10_000)
    await expect(row.locator("td.status-delivered")).to_have_count(2, timeout=10_000)
    await page.screenshot(path=ARTIFACTS / "events.png", full_page=True)

    # A refused event becomes a dead letter; the Replay button sends it again.
    admin.vendor.answer(410, b'{"error":"bad"}')
    await admin.ingest(messageId="m-replay")
    spool = admin.public[SPOOL]

    async def parked() -> bool:
        return any(letter.message_id == "m-replay" for letter in await spool.dead_letters("hook"))

    # The page lists dead letters as it is loaded: load it once the letter is there.
    await eventually(parked, "m-replay is a dead letter at hook", within_secs=10)
    await page.goto(f"{admin.admin_url}/destinations/hook")
    await expect(page.locator("#dead-letters")).to_contain_text("m-replay", timeout=10_000)
    sent_before = len(admin.vendor.requests)
    await page.click("#replay-all")
    await expect(page.get_by_role("status")).to_have_text("replayed 1")
    requests = await admin.vendor.wait_for_requests(sent_before + 1)
    assert b"m-replay" in requests[-1].body
    await page.goto(f"{admin.admin_url}/")
    await expect(page.locator("svg.chart").first).to_be_visible()
    await page.screenshot(path=ARTIFACTS / "overview.png", full_page=True)
    assert errors == []

"""The admin pages against a real relay: live events with per-destination outcomes, what was sent
and answered (masked), dead letters with replay and discard, the client IP page and the config."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.admin.masking import mask_url, masked_config, secret_values
from proxy.config import destination_settings
from proxy.destinations.webhook import WebhookConfig
from proxy.settings import DestinationSettings, Secret, ServerSettings, Settings
from tests.admin.conftest import (
    QUERY_SECRET,
    TOKEN,
    WEBHOOK_SECRET,
    AdminFactory,
    AdminRelay,
    eventually,
)
from tests.conftest import SERVER_KEY, WEB_KEY, SettingsFactory
from tests.ingest.client import post, track
from tests.shared_data import shared_dir

PATH_SECRET = "slack-path-secret-6d0b2e"  # the last segment of a Slack-style hook URL


async def _row(admin: AdminRelay, message_id: str, query: str = "") -> dict[str, Any] | None:
    data = await admin.get_json(f"/api/events?{query}")
    return next((row for row in data["events"] if row["messageId"] == message_id), None)


async def _settled(admin: AdminRelay, message_id: str, destination: str, prefix: str) -> None:
    async def done() -> bool:
        row = await _row(admin, message_id)
        return row is not None and row["destinations"].get(destination, "").startswith(prefix)

    await eventually(done, f"{message_id} {prefix} at {destination}")


async def test_an_event_appears_with_each_destinations_outcome(admin: AdminRelay) -> None:
    await admin.ingest(messageId="m-live", event="Signed Up", userId="u-7")
    await _settled(admin, "m-live", "debug", "delivered:")
    await _settled(admin, "m-live", "hook", "delivered:http_200")
    row = await _row(admin, "m-live")
    assert row is not None
    assert (row["source"], row["type"], row["name"], row["userId"]) == (
        "web", "track", "Signed Up", "u-7"
    )  # fmt: skip


async def test_live_view_filters(admin: AdminRelay) -> None:
    await admin.ingest(messageId="m-a", event="Alpha", anonymousId="anon-a")
    answer = await post(
        admin.http, f"{admin.public_url}/v1/track",
        track(messageId="m-b", event="Beta", userId="u-b"), key=SERVER_KEY,
    )  # fmt: skip
    assert answer.status == 200
    await _settled(admin, "m-b", "hook", "delivered")
    assert await _row(admin, "m-a", "source=backend") is None
    assert await _row(admin, "m-b", "source=backend") is not None
    assert await _row(admin, "m-a", "name=Beta") is None
    assert await _row(admin, "m-a", "user=anon-a") is not None
    assert await _row(admin, "m-b", "user=anon-a") is None
    assert await _row(admin, "m-b", "destination=hook") is not None
    assert await _row(admin, "m-b", "destination=nowhere") is None


async def test_event_page_shows_what_was_sent_and_answered_without_secrets(
    admin: AdminRelay,
) -> None:
    await admin.ingest(messageId="m-detail", event="Checkout")
    await _settled(admin, "m-detail", "hook", "delivered")
    data = await admin.get_json("/api/events")
    seq = next(row["seq"] for row in data["events"] if row["messageId"] == "m-detail")
    status, page = await admin.get(f"/events/{seq}")
    assert status == 200
    assert "/in?***" in page  # the URL, its query cut
    assert "&#34;ok&#34;: true" in page or "&quot;ok&quot;: true" in page  # the vendor's answer
    assert "m-detail" in page
    assert "Checkout" in page
    for secret in (QUERY_SECRET, WEBHOOK_SECRET, WEB_KEY, TOKEN):
        assert secret not in page
    signature = admin.vendor.requests[-1].headers["webhook-signature"]
    assert signature not in page


async def test_the_spooled_event_is_masked_like_the_bodies_sent(admin: AdminRelay) -> None:
    properties = {"api_key": "event-api-key-91c2", "note": SERVER_KEY}
    await admin.ingest(messageId="m-secret", event="Secret", properties=properties)
    await _settled(admin, "m-secret", "hook", "delivered")
    data = await admin.get_json("/api/events")
    seq = next(row["seq"] for row in data["events"] if row["messageId"] == "m-secret")
    status, page = await admin.get(f"/events/{seq}")
    assert status == 200
    # Before, the vendor bodies on this page were masked and the event as spooled was not.
    assert "event-api-key-91c2" not in page  # a credential's key
    assert SERVER_KEY not in page  # a configured secret, wherever it appears


def test_extra_webhook_headers_are_masked_in_the_config_shown(
    settings_factory: SettingsFactory,
) -> None:
    table = {
        "type": "webhook", "url": "https://hooks.example/in", "secret": WEBHOOK_SECRET,
        "headers": {"X-Gateway-Token": "gw-token-5d1e", "Content-Type": "application/json"},
    }  # fmt: skip
    settings = settings_factory(destinations=(destination_settings("w", table),))
    [shown] = masked_config(settings)["destinations"]
    # Before, the gateway token (a secret from the environment) was shown as it is.
    assert shown["config"]["headers"] == {
        "X-Gateway-Token": "***", "Content-Type": "application/json"
    }  # fmt: skip


async def test_a_secret_in_a_webhook_urls_path_is_not_shown(admin_factory: AdminFactory) -> None:
    # Slack-style hooks carry their secret in the path; before, only the query was cut, and the
    # event page, the destination page and the config showed /services/T…/B…/<secret>.
    admin = await admin_factory(hook_path=f"/services/T0AB12CD/B0EF34GH/{PATH_SECRET}")
    await admin.ingest(messageId="m-path", event="Path")
    await _settled(admin, "m-path", "hook", "delivered")
    data = await admin.get_json("/api/events")
    seq = next(row["seq"] for row in data["events"] if row["messageId"] == "m-path")
    shown = f"{admin.vendor.url}/services/***?***"  # still recognisable: host, port, service
    for path in (f"/events/{seq}", "/destinations/hook", "/ip", "/api/events", "/api/destinations"):
        status, page = await admin.get(path)
        assert status == 200, path
        assert PATH_SECRET not in page, path
        assert "B0EF34GH" not in page, path
        assert path.startswith("/api/") or shown in page, path


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXX", "https://hooks.slack.com/services/***"),
        ("https://discord.com/api/webhooks/123/tok", "https://discord.com/api/***"),
        ("https://u:pw@hooks.example:8443/a/b?key=k#f", "https://hooks.example:8443/a/***?***"),
        ("https://hooks.example/in", "https://hooks.example/in"),  # one segment: kept
        ("https://hooks.example/in/", "https://hooks.example/in/"),
        ("https://www.google-analytics.com", "https://www.google-analytics.com"),
        # A token as the first segment is not something to tell destinations apart by.
        ("https://hooks.example/k3y4f9a81c2e7x/in", "https://hooks.example/***/***"),
        ("https://hooks.example/k3y4f9a81c2e7x", "https://hooks.example/***"),
    ],
)
def test_urls_keep_their_host_and_first_path_segment(url: str, shown: str) -> None:
    assert mask_url(url) == shown


async def test_pages_show_events_nested_as_deep_as_ingest_takes(admin: AdminRelay) -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(251):
        deep = {"x": deep}
    # An identify's `event` is not checked by ingest: any JSON is taken and kept.
    identify = {"type": "identify", "userId": "u-1", "messageId": "m-deep-id", "event": deep}
    answer = await post(admin.http, f"{admin.public_url}/v1/identify", identify, key=SERVER_KEY)
    assert answer.status == 200
    await admin.ingest(messageId="m-deep", event="Deep", properties=deep)
    await _settled(admin, "m-deep", "hook", "delivered")
    # Before: /api/events failed (the live view stopped for 500 events), and the event and
    # destination pages failed on the vendor request, nested one level more than the event.
    rows = (await admin.get_json("/api/events"))["events"]
    assert next(r for r in rows if r["messageId"] == "m-deep-id")["name"] is None
    seq = next(row["seq"] for row in rows if row["messageId"] == "m-deep")
    for path in (f"/events/{seq}", "/destinations/hook"):
        status, page = await admin.get(path)
        assert status == 200, path
        assert "m-deep" in page


async def test_a_dead_letters_answer_is_shown_without_the_secrets_it_echoes(
    admin: AdminRelay,
) -> None:
    # A vendor that echoes the request (its URL with an api_key, a header) into its refusal: the
    # answer is kept with the dead letter, and the table showed it as it came.
    echo = f'{{"error":"bad request to /in?api_key={QUERY_SECRET}","auth":"{WEBHOOK_SECRET}"}}'
    admin.vendor.answer(410, echo.encode())
    await admin.ingest(messageId="m-echo")
    await _settled(admin, "m-echo", "hook", "dead:http_410_gone")
    status, page = await admin.get("/destinations/hook")
    assert status == 200
    assert "bad request to /in?api_key=***" in page
    # On one line, as the vendor sent it: the cell shows 200 characters, not indentation.
    assert "&#34;error&#34;:&#34;bad request" in page
    letters = (await admin.get_json("/api/destinations"))[1]["dead_letters"]
    for shown in (page, orjson.dumps(letters).decode()):
        assert QUERY_SECRET not in shown
        assert WEBHOOK_SECRET not in shown


def test_a_webhooks_credentials_count_as_secrets_and_its_words_do_not() -> None:
    path = "/api/analytics/production/B0EF34GHxyzQ8r5tPq1w"  # Slack-style: the secret last
    hook = WebhookConfig(
        url=f"https://hooks.example{path}?format=json&version=20240101&key=k3y-4f9a81c2e7",
        secret=Secret(WEBHOOK_SECRET),
        headers={
            "X-Gateway-Token": "gwtok_0123456789",
            "Content-Type": "application/json",
            "X-Environment": "production",
        },
    )
    settings = Settings(destinations=(DestinationSettings("hook", "webhook", hook),))
    found = secret_values(settings)
    assert {"gwtok_0123456789", "B0EF34GHxyzQ8r5tPq1w", "k3y-4f9a81c2e7"} <= set(found)
    # Hiding these wherever they appear garbled every event the admin showed (a reviewer saw
    # "name": "***.js"): words, dates and media types are not credentials.
    for word in ("analytics", "production", "json", "20240101", "application/json"):
        assert word not in found


async def test_dead_letters_can_be_replayed_and_discarded(admin: AdminRelay) -> None:
    admin.vendor.answer(410, b'{"error":"bad field"}')
    await admin.ingest(messageId="m-dead-1")
    await _settled(admin, "m-dead-1", "hook", "dead:http_410_gone")
    await admin.ingest(messageId="m-dead-2")  # not sent: the 410 disabled the hook
    await _settled(admin, "m-dead-2", "hook", "dead:endpoint_gone")
    status, page = await admin.get("/destinations/hook")
    assert status == 200
    assert "Dead letters (2)" in page
    assert "bad field" in page
    assert "dead:http_410_gone" in page
    letters = (await admin.get_json("/api/destinations"))[1]["dead_letters"]
    first = next(d["id"] for d in letters if d["messageId"] == "m-dead-1")

    csrf = await admin.csrf("/destinations/hook")
    async with admin.http.post(
        f"{admin.admin_url}/destinations/hook/discard",
        data={"csrf": csrf, "id": first}, headers=admin.bearer, allow_redirects=False,
    ) as response:  # fmt: skip
        assert response.headers["Location"].endswith("discarded+1")
    sent_before = len(admin.vendor.requests)
    async with admin.http.post(
        f"{admin.admin_url}/destinations/hook/replay",
        data={"csrf": csrf}, headers=admin.bearer, allow_redirects=False,
    ) as response:  # fmt: skip
        assert response.headers["Location"].endswith("replayed+1")
    requests = await admin.vendor.wait_for_requests(sent_before + 1)
    assert b"m-dead-2" in requests[-1].body
    assert all(b"m-dead-1" not in r.body for r in requests[sent_before:])
    await _settled(admin, "m-dead-2", "hook", "delivered")
    hook = (await admin.get_json("/api/destinations"))[1]
    assert hook["dead_letters"] == []
    assert hook["error_rate"] > 0
    assert hook["last_errors"][0]["reason"] == "http_410_gone"


async def test_one_dead_letter_can_be_replayed_alone(admin: AdminRelay) -> None:
    admin.vendor.answer(410, b'{"error":"bad field"}')
    await admin.ingest(messageId="m-one-1")
    await _settled(admin, "m-one-1", "hook", "dead:http_410_gone")
    await admin.ingest(messageId="m-one-2")  # not sent: the 410 disabled the hook
    await _settled(admin, "m-one-2", "hook", "dead:endpoint_gone")
    letters = (await admin.get_json("/api/destinations"))[1]["dead_letters"]
    second = next(d["id"] for d in letters if d["messageId"] == "m-one-2")
    _, page = await admin.get("/destinations/hook")
    assert f'name="id" value="{second}"' in page  # each row has its own Replay form
    csrf = await admin.csrf("/destinations/hook")
    async with admin.http.post(
        f"{admin.admin_url}/destinations/hook/replay",
        data={"csrf": csrf, "id": second}, headers=admin.bearer, allow_redirects=False,
    ) as response:  # fmt: skip
        assert response.headers["Location"].endswith("replayed+1")
    await _settled(admin, "m-one-2", "hook", "delivered")
    left = (await admin.get_json("/api/destinations"))[1]["dead_letters"]
    assert [d["messageId"] for d in left] == ["m-one-1"]


async def test_overview_shows_destinations_and_charts(admin: AdminRelay) -> None:
    await admin.ingest(messageId="m-chart")
    await _settled(admin, "m-chart", "hook", "delivered")
    status, page = await admin.get("/")
    assert status == 200
    assert page.count("<svg") == 3  # events per minute + one per destination
    assert 'data-destination="hook"' in page
    assert 'data-destination="debug"' in page
    assert "<title>1</title>" in page  # this minute's bar holds the one event


async def test_ip_page_explains_the_chain_and_masks_the_config(
    admin_factory: AdminFactory,
) -> None:
    loopback = ipaddress.ip_network("127.0.0.1/32")
    admin = await admin_factory(server=ServerSettings(trusted_proxies=(loopback,)))
    headers = {"X-Forwarded-For": "198.51.100.9, 203.0.113.5"}
    status, page = await admin.get("/ip", headers=headers)
    assert status == 200
    assert 'id="chosen-ip">203.0.113.5<' in page  # the first untrusted hop from the right
    assert "127.0.0.1/32" in page
    for secret in (WEBHOOK_SECRET, QUERY_SECRET, WEB_KEY, SERVER_KEY):
        assert secret not in page
    assert "***" in page

    untrusting = await admin_factory()  # no trusted proxies: the headers are the client's claim
    _, page = await untrusting.get("/ip", headers=headers)
    assert 'id="chosen-ip">127.0.0.1<' in page


async def test_ip_page_checks_the_public_paths_against_the_filter_lists(
    admin_factory: AdminFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_FILTER_LISTS", str(shared_dir("testdata", "filterlists")))
    admin = await admin_factory()
    status, page = await admin.get("/ip")
    assert status == 200
    assert 'id="paths"' in page
    assert "/v1/batch</td><td>xmlhttprequest</td>\n  <td>allowed" in page
    assert "BLOCKED" not in page  # the relay's own routes stay off the lists


async def test_ip_page_says_when_no_filter_lists_are_found(
    admin_factory: AdminFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RELAY_FILTER_LISTS", str(tmp_path))
    admin = await admin_factory()
    _, page = await admin.get("/ip")
    assert "No filter lists found" in page

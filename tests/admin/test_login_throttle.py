"""Wrong admin tokens are throttled (a review helper's find: 300 wrong logins in a row, all
checked): five free per client, then a lockout that doubles up to a minute; twenty free for all
clients together. Time is a ManualClock: locks end when the test moves it, never by sleeping."""

from __future__ import annotations

import asyncio
import ipaddress

import aiohttp
import orjson

from proxy.clock import ManualClock
from proxy.settings import ServerSettings
from tests.admin.conftest import TOKEN, AdminFactory, AdminRelay


async def _login(admin: AdminRelay, token: str, via: str | None = None) -> tuple[int, str, str]:
    """Status, page and Retry-After ("" if none) of a login form POST, from `via` if given."""
    headers = {"X-Forwarded-For": via} if via else {}
    async with admin.http.post(
        f"{admin.admin_url}/login",
        data={"token": token, "next": "/"},
        headers=headers,
        allow_redirects=False,
    ) as response:
        return response.status, await response.text(), response.headers.get("Retry-After", "")


async def _bearer(admin: AdminRelay, token: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as script,  # no cookies: a script with only its header
        script.get(
            f"{admin.admin_url}/api/destinations", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        return response.status, await response.text(), response.headers.get("Retry-After", "")


async def test_wrong_logins_lock_the_client_out_then_the_right_token_works(
    admin_factory: AdminFactory,
) -> None:
    clock = ManualClock()
    admin = await admin_factory(clock=clock)
    for _ in range(4):
        status, page, _ = await _login(admin, "guess")
        assert status == 401
        assert "not right" in page
    status, page, _ = await _login(admin, "guess")
    assert status == 401
    assert "the next try is possible in 1 second." in page
    # Locked: even the right token is refused unchecked, with a readable page and Retry-After.
    status, page, retry_after = await _login(admin, TOKEN)
    assert (status, retry_after) == (429, "1")
    assert "Too many wrong tokens. Try again in 1 second" in page
    assert 'name="token"' in page  # the form is still there
    clock.advance(1)
    status, _, _ = await _login(admin, TOKEN)
    assert status == 303
    # The success cleared the count: four typos later the right token still works at once.
    for _ in range(4):
        status, _, retry_after = await _login(admin, "typo")
        assert (status, retry_after) == (401, "")
    status, _, _ = await _login(admin, TOKEN)
    assert status == 303


async def test_the_lockout_doubles_up_to_a_minute_and_no_longer(
    admin_factory: AdminFactory,
) -> None:
    clock = ManualClock()
    admin = await admin_factory(clock=clock)
    for _ in range(5):
        await _login(admin, "guess")
    for wait in (1, 2, 4, 8, 16, 32, 60, 60):
        status, _, retry_after = await _login(admin, "guess")
        assert (status, retry_after) == (429, str(wait))
        clock.advance(wait - 0.5)
        assert (await _login(admin, TOKEN))[0] == 429  # still locked just before the end
        clock.advance(0.5)
        assert (await _login(admin, "guess"))[0] == 401  # checked again, and wrong
    # A wall clock set back an hour does not keep the admin out for that hour.
    clock.advance(-3600)
    status, _, retry_after = await _login(admin, TOKEN)
    assert (status, retry_after) == (429, "60")
    clock.advance(60)
    assert (await _login(admin, TOKEN))[0] == 303


async def test_concurrent_guesses_cannot_race_past_the_lock(admin_factory: AdminFactory) -> None:
    admin = await admin_factory(clock=ManualClock())
    answers = await asyncio.gather(*(_login(admin, f"guess-{i}") for i in range(40)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [401] * 5 + [429] * 35


async def test_wrong_bearer_tokens_are_throttled_but_a_signed_in_session_is_not(
    admin_factory: AdminFactory,
) -> None:
    clock = ManualClock()
    admin = await admin_factory(clock=clock)
    assert (await _login(admin, TOKEN))[0] == 303  # admin.http now holds a session cookie
    for _ in range(5):
        status, _, _ = await _bearer(admin, "guess")
        assert status == 401
    status, text, retry_after = await _bearer(admin, TOKEN)
    assert (status, retry_after) == (429, "1")
    assert orjson.loads(text) == {"error": "too_many_wrong_tokens", "retry_after_secs": 1}
    # A session id is no guess at the token: the signed-in browser keeps working.
    async with admin.http.get(f"{admin.admin_url}/api/destinations") as response:
        assert response.status == 200
    clock.advance(1)
    assert (await _bearer(admin, TOKEN))[0] == 200


async def test_clients_are_locked_out_apart_and_all_together_after_twenty(
    admin_factory: AdminFactory,
) -> None:
    # Behind a trusted proxy each client is its forwarded address, which a client may choose:
    # only the global bound stops one from guessing on under ever new addresses.
    clock = ManualClock()
    loopback = ipaddress.ip_network("127.0.0.1/32")
    admin = await admin_factory(clock=clock, server=ServerSettings(trusted_proxies=(loopback,)))
    for _ in range(5):
        assert (await _login(admin, "guess", via="198.51.100.1"))[0] == 401
    assert (await _login(admin, TOKEN, via="198.51.100.1"))[0] == 429
    assert (await _login(admin, TOKEN, via="198.51.100.2"))[0] == 303  # another client: not locked
    for i in range(14):  # 19 wrong tokens in all, none locked: each from a new address
        assert (await _login(admin, "guess", via=f"203.0.113.{i}"))[0] == 401
    status, page, _ = await _login(admin, "guess", via="203.0.113.100")  # the 20th
    assert status == 401
    assert "the next try is possible in 1 second" in page
    status, _, retry_after = await _login(admin, TOKEN, via="192.0.2.77")  # a fresh address
    assert (status, retry_after) == (429, "1")
    clock.advance(1)
    assert (await _login(admin, TOKEN, via="192.0.2.77"))[0] == 303


async def test_an_ipv6_client_counts_as_its_whole_64(admin_factory: AdminFactory) -> None:
    loopback = ipaddress.ip_network("127.0.0.1/32")
    admin = await admin_factory(
        clock=ManualClock(), server=ServerSettings(trusted_proxies=(loopback,))
    )
    for i in range(1, 6):
        assert (await _login(admin, "guess", via=f"2001:db8:1:2::{i}"))[0] == 401
    assert (await _login(admin, TOKEN, via="2001:db8:1:2:ffff::9"))[0] == 429
    assert (await _login(admin, TOKEN, via="2001:db8:1:3::1"))[0] == 303

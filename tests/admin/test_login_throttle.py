"""Wrong admin tokens are throttled (a review helper's find: 300 wrong logins in a row, all
checked): five free per client, then a lockout that doubles up to a minute; twenty free for all
clients together. Time is a ManualClock: locks end when the test moves it, never by sleeping."""

from __future__ import annotations

import asyncio
import ipaddress

import aiohttp
import orjson
from aiohttp.test_utils import make_mocked_request

from proxy.admin.throttle import client_key
from proxy.clock import ManualClock
from proxy.settings import ServerSettings
from tests.admin.conftest import TOKEN, AdminFactory, AdminRelay


async def _login(
    admin: AdminRelay, token: str, via: str | None = None, forwarded: str | None = None
) -> tuple[int, str, str]:
    """Status, page and Retry-After ("" if none) of a login form POST: from the local address
    `via` if given (any 127.x address is this host's), with X-Forwarded-For `forwarded`."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    url, data = f"{admin.admin_url}/login", {"token": token, "next": "/"}
    if via is None:
        session, own = admin.http, False
    else:
        connector = aiohttp.TCPConnector(local_addr=(via, 0))
        session, own = aiohttp.ClientSession(connector=connector), True
    try:
        async with session.post(url, data=data, headers=headers, allow_redirects=False) as answer:
            return answer.status, await answer.text(), answer.headers.get("Retry-After", "")
    finally:
        if own:
            await session.close()


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
    # Each peer address is a client; only the global bound stops many of them guessing on.
    clock = ManualClock()
    admin = await admin_factory(clock=clock)
    for _ in range(5):
        assert (await _login(admin, "guess", via="127.0.0.2"))[0] == 401
    assert (await _login(admin, TOKEN, via="127.0.0.2"))[0] == 429
    assert (await _login(admin, TOKEN, via="127.0.0.3"))[0] == 303  # another client: not locked
    for i in range(14):  # 19 wrong tokens in all, none locked: each from a new address
        assert (await _login(admin, "guess", via=f"127.0.1.{i}"))[0] == 401
    status, page, _ = await _login(admin, "guess", via="127.0.1.100")  # the 20th
    assert status == 401
    assert "the next try is possible in 1 second" in page
    status, _, retry_after = await _login(admin, TOKEN, via="127.0.2.77")  # a fresh address
    assert (status, retry_after) == (429, "1")
    clock.advance(1)
    assert (await _login(admin, TOKEN, via="127.0.2.77"))[0] == 303


async def test_a_forwarded_address_does_not_make_a_new_client(admin_factory: AdminFactory) -> None:
    # A security review: with the public listener's trusted proxies (loopback here) believed on
    # the admin listener, each guess named a new client in X-Forwarded-For, and twenty of them
    # locked every client out, the right Bearer token of a Prometheus scraper included.
    loopback = ipaddress.ip_network("127.0.0.1/32")
    admin = await admin_factory(
        clock=ManualClock(), server=ServerSettings(trusted_proxies=(loopback,))
    )
    for i in range(5):
        assert (await _login(admin, "guess", forwarded=f"198.51.100.{i}"))[0] == 401
    assert (await _login(admin, "guess", forwarded="198.51.100.99"))[0] == 429


class _Peer:
    """The transport of a request from `address` (what aiohttp reads request.remote from)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.address, 40000, 0, 0) if name == "peername" else default


def test_an_ipv6_client_counts_as_its_whole_64() -> None:
    def key(address: str) -> str:
        return client_key(make_mocked_request("POST", "/login", transport=_Peer(address)))

    assert key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert key("198.51.100.7") == "198.51.100.7"

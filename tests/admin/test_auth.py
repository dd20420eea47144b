"""Nothing of the admin listener is served without the token; every POST needs its CSRF token."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import aiohttp
import pytest

from proxy.admin.site import admin_token
from tests.admin.conftest import TOKEN, AdminRelay
from tests.conftest import SettingsFactory

PROTECTED = ["/", "/events", "/ip", "/metrics", "/openapi.json", "/api/events",
             "/api/destinations", "/destinations/hook", "/static/admin.js"]  # fmt: skip


@pytest.mark.parametrize("path", PROTECTED)
async def test_nothing_is_served_without_the_token(admin: AdminRelay, path: str) -> None:
    url = f"{admin.admin_url}{path}"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        async with admin.http.get(url, headers=headers, allow_redirects=False) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "hook" not in await response.text()
    browser = {"Accept": "text/html"}
    async with admin.http.get(url, headers=browser, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"].startswith("/login?next=")


async def test_bearer_token_opens_every_page(admin: AdminRelay) -> None:
    for path in PROTECTED:
        status, _ = await admin.get(path)
        assert status == 200, path


async def test_login_sets_a_strict_httponly_session_cookie(admin: AdminRelay) -> None:
    login = f"{admin.admin_url}/login"
    async with admin.http.post(login, data={"token": "nope", "next": "/"}) as response:
        assert response.status == 401
        assert "not right" in await response.text()
    form = {"token": TOKEN, "next": "/events"}
    async with admin.http.post(login, data=form, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/events"
        cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    # The cookie alone (no Authorization header) now opens pages.
    async with admin.http.get(f"{admin.admin_url}/events") as response:
        assert response.status == 200
        page = await response.text()
    assert "Live events" in page
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    # Signing out (a POST, so it needs the CSRF token) ends the session.
    async with admin.http.post(f"{admin.admin_url}/logout", data={"csrf": csrf}) as response:
        assert response.status == 200  # followed to the login form
    async with admin.http.get(f"{admin.admin_url}/events", allow_redirects=False) as response:
        assert response.status == 401


async def test_login_never_redirects_off_site(admin: AdminRelay) -> None:
    # A tab or line break is dropped by URL parsers: "/<tab>/evil.example" became a redirect
    # to //evil.example before (a review helper's find).
    for target in (
        "//evil.example/", "https://evil.example/", "/\\evil.example", "/\t/evil.example",
        "/\n/evil.example",
    ):  # fmt: skip
        form = {"token": TOKEN, "next": target}
        async with admin.http.post(
            f"{admin.admin_url}/login", data=form, allow_redirects=False
        ) as response:
            assert response.headers["Location"] == "/"


async def test_posts_need_the_sessions_csrf_token(admin: AdminRelay) -> None:
    url = f"{admin.admin_url}/destinations/hook/replay"
    for data in ({}, {"csrf": "0" * 64}):
        async with admin.http.post(url, data=data, headers=admin.bearer) as response:
            assert response.status == 403
            assert "csrf" in await response.text()
    # A cookie session's token does not work for another session.
    async with (
        aiohttp.ClientSession() as other,
        other.post(f"{admin.admin_url}/login", data={"token": TOKEN}, allow_redirects=False),
    ):
        pass
    token = await admin.csrf("/destinations/hook")
    async with admin.http.post(
        url, data={"csrf": token}, headers=admin.bearer, allow_redirects=False
    ) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/destinations/hook?done=replayed+0"
    # Without a session, a valid-looking token is still refused: no session, no action.
    async with admin.http.post(url, data={"csrf": token}, allow_redirects=False) as response:
        assert response.status == 401


async def test_pages_forbid_framing_and_inline_script(admin: AdminRelay) -> None:
    async with admin.http.get(admin.admin_url + "/", headers=admin.bearer) as response:
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy
        assert "script-src 'self'" in policy
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Request-Id"]


def test_without_a_configured_token_a_private_one_is_written(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory()
    token, file = admin_token(settings)
    assert file is not None
    assert file.read_text().strip() == token
    assert len(token) >= 24
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
    again, _ = admin_token(settings)
    assert again != token  # a fresh one each start


def test_the_token_file_is_private_even_where_another_file_was(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory()
    _, file = admin_token(settings)
    assert file is not None
    file.chmod(0o644)  # left readable by someone
    admin_token(settings)
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600  # before, it stayed 0644
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    file.unlink()
    file.symlink_to(victim)
    admin_token(settings)
    assert victim.read_text() == "keep me\n"  # before, the link was followed and overwritten
    assert not file.is_symlink()

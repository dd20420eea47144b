"""The snippet's routes without a browser: size budget, build freshness, cache headers, the event
endpoint (text/plain, write key in the body, origin check), the install tag and the test page."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess

import aiohttp
import pytest

from proxy.ingest.snippet import SCRIPT_FILE, Script, install_tag
from proxy.settings import ServerSettings
from tests.conftest import WEB_KEY, WEB_ORIGIN, RelayFactory, RelayServer, SettingsFactory
from tests.ingest.client import post, track
from tests.relay_process import REPO

MAX_GZIPPED_BYTES = 2560  # issue 3: the whole snippet, minified and gzipped
PREFIX = "/k7q2xz"


@pytest.fixture
async def prefixed(relay_factory: RelayFactory, settings_factory: SettingsFactory) -> RelayServer:
    return await relay_factory(settings_factory(server=ServerSettings(prefix=PREFIX)))


def test_the_snippet_fits_its_size_budget() -> None:
    size = len(gzip.compress(SCRIPT_FILE.read_bytes(), 9))
    assert size <= MAX_GZIPPED_BYTES, f"snippet.min.js is {size} bytes gzipped"


def test_the_minified_snippet_is_built_from_the_source() -> None:
    if shutil.which("node") is None or not (REPO / "tests/node/node_modules/.bin/terser").exists():
        pytest.skip("terser not installed: run `npm ci` in tests/node")
    build = subprocess.run(
        [str(REPO / "scripts/build-snippet"), "--check"], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr


async def test_stable_url_revalidates_and_hashed_url_is_immutable(
    prefixed: RelayServer, http: aiohttp.ClientSession
) -> None:
    script = Script.load()
    plain = {"Accept-Encoding": "identity"}
    async with http.get(f"{prefixed.url}/s.js", headers=plain) as response:
        assert response.status == 200
        assert response.content_type == "text/javascript"
        assert response.headers["Cache-Control"] == "public, max-age=3600"
        assert await response.read() == script.body
        etag = response.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{12}"', etag)  # strong: no W/
    async with http.get(f"{prefixed.url}/s.js", headers={**plain, "If-None-Match": etag}) as again:
        assert again.status == 304
    hashed = f"{prefixed.url}/{script.hashed_name}"
    async with http.get(hashed, headers={"Accept-Encoding": "gzip"}) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["ETag"] != etag  # other bytes, other strong ETag
        assert await response.read() == script.body  # aiohttp decoded it
    async with http.get(f"{prefixed.url}/s.0123456789ab.js") as stale:
        assert stale.status == 404


async def test_event_endpoint_takes_a_text_plain_batch_with_the_key_in_the_body(
    prefixed: RelayServer, http: aiohttp.ClientSession
) -> None:
    body = {
        "writeKey": WEB_KEY,
        "batch": [track(messageId="s-1")],
        "sentAt": "2026-01-01T00:00:00Z",
    }
    sent = {"Origin": WEB_ORIGIN}
    answer = await post(
        http, f"{prefixed.url}/e", body, key=None, content_type="text/plain", headers=sent
    )
    assert answer.status == 200, answer.json
    [stored] = await prefixed.spooled()
    assert stored["messageId"] == "s-1"
    assert "writeKey" not in stored
    refused = await post(
        http, f"{prefixed.url}/e", body, key=None, headers={"Origin": "https://evil.example"}
    )
    assert refused.status == 403
    unknown = {**body, "writeKey": "pk_nope"}
    assert (await post(http, f"{prefixed.url}/e", unknown, key=None)).status == 401


def test_install_tag_is_one_script_block_with_the_key_and_the_path() -> None:
    tag = install_tag("pk_web_3f9a", "/k7q2xz/")
    assert tag.startswith("<script>\n")
    assert tag.endswith("\n</script>")
    assert tag.count("<script") == 1
    assert 'a.key="pk_web_3f9a";a.url="/k7q2xz";' in tag
    assert 's.src=a.url+"/s.js"' in tag
    assert tag.splitlines()[-2] == "analytics.page();"
    assert "</script><script>" not in install_tag("</script><script>", "")


async def test_test_page_installs_the_snippet_as_readme_says(
    prefixed: RelayServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{prefixed.url}/") as response:
        page = await response.text()
    assert install_tag(WEB_KEY, PREFIX) in page
    assert 'id="test-event"' in page


async def test_test_page_can_be_turned_off(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    settings = settings_factory(server=ServerSettings(prefix=PREFIX, test_page=False))
    relay = await relay_factory(settings)
    async with http.get(f"{relay.url}/") as response:
        assert response.status == 404
    async with http.get(f"{relay.url}/s.js") as response:
        assert response.status == 200  # the snippet itself stays

"""The demo page, and ingest behind a runner that leaves aiohttp's own body decoding on."""

from __future__ import annotations

import asyncio
from ipaddress import ip_network
from urllib.parse import urlsplit

import aiohttp
from pytest_aiohttp import AiohttpServer

from proxy.app import create_app
from proxy.destinations.debug import DebugConfig
from proxy.settings import DestinationSettings, ServerSettings
from tests.conftest import WEB_KEY, RelayFactory, SettingsFactory
from tests.ingest.client import post, track


async def test_demo_page_shows_the_setup_and_what_debug_was_sent(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    debug = DestinationSettings(name="debug", type="debug", config=DebugConfig(), linger_ms=0)
    settings = settings_factory(demo=True, destinations=(debug,))
    relay = await relay_factory(settings)
    assert (await post(http, f"{relay.url}/v1/track", track(messageId="demo-msg"))).status == 200
    page = ""
    for _ in range(600):  # at least 15 s
        async with http.get(f"{relay.url}/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
        if "demo-msg" in page:
            break
        await asyncio.sleep(0.025)
    assert "demo-msg" in page
    assert "web (browser)" in page
    assert "debug (debug)" in page
    assert settings.spool.path in page
    assert f"-u {WEB_KEY}:" in page
    assert f"{relay.url}/v1/track" in page
    assert "sk_test" not in page  # a server key is a secret


async def test_demo_page_with_a_host_that_is_not_utf8(relay_factory: RelayFactory) -> None:
    relay = await relay_factory()
    parts = urlsplit(relay.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(
        f"GET {parts.path}/ HTTP/1.1\r\n".encode() + b"Host: \xff\r\nConnection: close\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    # Before, the page could not encode the host it showed: a 500.
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"http://127.0.0.1:8080/v1/track" in answer  # the configured listener instead


async def test_page_outside_the_demo_hides_private_details(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    debug = DestinationSettings(name="debug-sink", type="debug", config=DebugConfig())
    prefix = "/k7q2xz"
    settings = settings_factory(
        server=ServerSettings(prefix=prefix, trusted_proxies=(ip_network("127.0.0.1/32"),)),
        destinations=(debug,),
    )
    relay = await relay_factory(settings)
    async with http.get(f"{relay.url}/") as response:
        page = await response.text()
    assert f"-u {WEB_KEY}:" in page
    assert settings.spool.path not in page
    # Which vendors a site uses, its source names and its spool are nobody's business.
    for private in ("debug-sink", "web (browser)", "backend", "sqlite"):
        assert private not in page
    # Behind the site's TLS proxy the curl line says https, as the browser reaches the relay.
    headers = {"Host": "shop.example", "X-Forwarded-Proto": "https"}
    async with http.get(f"{relay.url}/", headers=headers) as response:
        assert f"https://shop.example{prefix}/v1/track" in await response.text()


async def test_the_test_page_says_when_its_origin_is_refused(
    relay_factory: RelayFactory, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    # Before, the page opened at the relay's own address sent events the relay refused (403)
    # and said "Sent.".
    prefix = "/k7q2xz"
    settings = settings_factory(
        server=ServerSettings(prefix=prefix, trusted_proxies=(ip_network("127.0.0.1/32"),))
    )
    relay = await relay_factory(settings)
    origin = f"http://{urlsplit(relay.url).netloc}"
    async with http.get(f"{relay.url}/") as response:
        page = await response.text()
    assert f"origin, <code>{origin}</code>, is not one of" in page
    assert "the relay refuses its events (403)" in page
    # Reached through the site's domain (an allowed origin), the page says nothing of it.
    allowed = urlsplit(settings.sources[0].origins[0])
    headers = {"Host": allowed.netloc, "X-Forwarded-Proto": allowed.scheme}
    async with http.get(f"{relay.url}/", headers=headers) as response:
        page = await response.text()
    assert "Send a test event" in page
    assert "refuses its events" not in page


async def test_gzip_works_when_aiohttp_decodes_bodies_itself(
    aiohttp_server: AiohttpServer, settings_factory: SettingsFactory, http: aiohttp.ClientSession
) -> None:
    server = await aiohttp_server(create_app(settings_factory()))
    answer = await post(http, str(server.make_url("/v1/batch")), {"batch": [track()]}, gzipped=True)
    assert answer.status == 200

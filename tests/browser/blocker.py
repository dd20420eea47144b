"""An ad blocker in the page and the vendor it blocks, both local.

`PageBlocker` asks the real engine (proxy.blocklists: adblock-rust over EasyList, EasyPrivacy and
uBlock filters - Privacy) about every request the browser makes and aborts the blocked ones with
ERR_BLOCKED_BY_CLIENT, as an extension does. `FakeGoogle` stands in for Google's hosts over HTTPS
(a self-signed certificate; Chromium's --host-resolver-rules sends the names to 127.0.0.1).
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from playwright.async_api import Route

from proxy.blocklists import Blocklists

GOOGLE_HOSTS = ("www.google-analytics.com", "www.googletagmanager.com")
# Playwright's resource types as the engine's request types (as Chromium's webRequest names them).
REQUEST_TYPES = {
    "document": "document",
    "script": "script",
    "xhr": "xmlhttprequest",
    "fetch": "xmlhttprequest",
    "ping": "ping",
    "image": "image",
}


@dataclass(frozen=True, slots=True)
class Seen:
    url: str
    request_type: str
    rule: str | None  # the rule that blocked it, None when it went through


@dataclass
class PageBlocker:
    lists: Blocklists
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, route: Route) -> None:
        request = route.request
        kind = REQUEST_TYPES.get(request.resource_type, "other")
        page_url = request.url if request.is_navigation_request() else request.frame.url
        rule = self.lists.check(request.url, page_url, kind)
        self.seen.append(Seen(request.url, kind, rule))
        if rule is None:
            await route.fallback()
        else:
            await route.abort("blockedbyclient")

    def blocked(self) -> list[Seen]:
        return [seen for seen in self.seen if seen.rule is not None]


class FakeGoogle:
    """gtag.js and the GA4 collect endpoint on one HTTPS port; `hits` lists what reached it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, tls: ssl.SSLContext) -> FakeGoogle:
        app = web.Application()
        app.add_routes([web.get("/gtag/js", self._gtag), web.post("/g/collect", self._collect)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    def resolver_rules(self) -> str:
        """The Chromium flag that sends Google's names to this server."""
        rules = ", ".join(f"MAP {host} 127.0.0.1:{self.port}" for host in GOOGLE_HOSTS)
        return f"--host-resolver-rules={rules}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _gtag(self, request: web.Request) -> web.Response:
        self.hits.append(str(request.url))
        return web.Response(text="window.gtagRan = true;", content_type="text/javascript")

    async def _collect(self, request: web.Request) -> web.Response:
        self.hits.append(str(request.url))
        return web.Response(status=204)


def self_signed(folder: Path) -> ssl.SSLContext:
    """A TLS context with a fresh self-signed certificate (the browser ignores who signed it)."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", f"/CN={GOOGLE_HOSTS[0]}", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context

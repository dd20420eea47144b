"""The test page at the public root: the snippet installed exactly as README says (a page view on
load, a button that fires a test event) and a curl command that sends a first event; in the demo
also what is running (sources, destinations, the spool) and what the debug destination was sent.
Server keys never appear (browser keys are public anyway); a real site's page shows nothing of
its setup, and event bodies appear only in the demo, where they are the user's.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from html import escape

import orjson
from aiohttp import web

from proxy.deliver.client import MemoryTransport
from proxy.identity.cookies import is_https
from proxy.ingest.auth import normalise_origin
from proxy.ingest.snippet import install_tag
from proxy.keys import SETTINGS, WORKERS
from proxy.settings import Settings, SourceKind, SourceSettings

SHOW_REQUESTS = 10
SNIPPET = """<h2>The snippet on this page</h2>
<p>This page loaded it with the tag below (put it in the <code>&lt;head&gt;</code> of your pages)
and sent a page view. <button id="test-event" type="button">Send a test event</button>
<span id="test-status"></span></p>
{refused}<p>Both go to every destination configured, as your pages' events do.</p>
<pre>{tag}</pre>
<script>document.getElementById("test-event").onclick = function () {{
  analytics.track("Test Event", {{from: "test page"}});
  document.getElementById("test-status").textContent =
    "Sent: the relay's answer is in the browser's network tab (a refusal also in its console).";
}};</script>"""
# Browsers send Origin with every POST, same-origin too: a page opened at an address that is not
# one of the source's origins (the relay's own port, say, not the site's domain) is refused.
REFUSED = """<p><strong>This page's origin, <code>{origin}</code>, is not one of the browser
source's <code>origins</code>, so the relay refuses its events (403).</strong> Open this page
through your site's domain, or add the origin to the source.</p>
"""
NO_SNIPPET = '<p>Add a browser source (<code>kind = "browser"</code>) to try the snippet here.</p>'
MAX_BODY_CHARS = 4000
# The demo's own setup; a real site's test page is public, and which vendors a site uses and
# where it keeps its events are its own business (the admin page shows them).
SETUP = """<h2>Sources</h2><ul>{sources}</ul>
<h2>Destinations</h2><ul>{destinations}</ul>
<h2>Spool</h2><p>{spool}</p>"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Analytics relay</title>
{tag}
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}}
pre{{background:#f4f4f4;padding:.75rem;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere}}</style></head>
<body><h1>The relay is running</h1>
{snippet}
{setup}
<h2>Send a first event</h2><pre>{curl}</pre>
{kept}</body></html>
"""


async def demo_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    host = request.host
    if not (host.isascii() and host.isprintable()):
        # aiohttp hands bytes that are not UTF-8 on as surrogates, which no page can encode.
        host = f"{settings.server.listen_host}:{settings.server.listen_port}"
    server = settings.server
    https = is_https(request.scheme, request.remote, request.headers, server.trusted_proxies)
    origin = f"{'https' if https else 'http'}://{host}"
    base = f"{origin}{server.prefix.rstrip('/')}"
    browsers = [s for s in settings.sources if s.kind is SourceKind.BROWSER]
    tag = install_tag(browsers[0].write_key.value, server.prefix) if browsers else ""
    setup = ""
    if settings.demo:
        setup = SETUP.format(
            sources=_items(f"{s.name} ({s.kind})" for s in settings.sources),
            destinations=_items(f"{d.name} ({d.type})" for d in settings.destinations),
            spool=escape(_spool(settings)),
        )
    page = PAGE.format(
        tag=tag,
        snippet=_snippet(tag, browsers[0], origin) if browsers else NO_SNIPPET,
        setup=setup,
        curl=escape(curl_command(base, settings)),
        kept=_kept_requests(request.app) if settings.demo else "",
    )
    return web.Response(text=page, content_type="text/html")


def _snippet(tag: str, source: SourceSettings, origin: str) -> str:
    allowed = {normalise_origin(o) for o in source.origins}
    refused = "" if normalise_origin(origin) in allowed else REFUSED.format(origin=escape(origin))
    return SNIPPET.format(tag=escape(tag), refused=refused)


def curl_command(base_url: str, settings: Settings) -> str:
    """A copy-pasteable first event, sent with the first browser source's (public) key."""
    keys = [s.write_key.value for s in settings.sources if s.kind is SourceKind.BROWSER]
    key = keys[0] if keys else "YOUR_WRITE_KEY"
    event = {"event": "Hello Relay", "anonymousId": "curl-1", "properties": {"from": "curl"}}
    return " ".join(
        [
            "curl -i -X POST",
            shlex.quote(f"{base_url}/v1/track"),
            "-u",
            shlex.quote(f"{key}:"),
            "-H 'Content-Type: application/json'",
            "-d",
            shlex.quote(orjson.dumps(event).decode()),
        ]
    )


def _spool(settings: Settings) -> str:
    spool = settings.spool
    where = f" at {spool.path}" if spool.backend == "sqlite" else ""
    return f"{spool.backend}{where}"


def _items(texts: Iterable[str]) -> str:
    return "".join(f"<li>{escape(text)}</li>" for text in texts) or "<li>none</li>"


def _kept_requests(app: web.Application) -> str:
    """The newest requests each debug destination kept (MemoryTransport), newest first."""
    parts = []
    for name, worker in sorted(app.get(WORKERS, {}).items()):
        transport = worker.transport
        if not isinstance(transport, MemoryTransport):
            continue
        kept = list(transport.requests)[-SHOW_REQUESTS:][::-1]
        bodies = "".join(f"<pre>{escape(_pretty(r.body))}</pre>" for r in kept)
        parts.append(
            f"<h2>Sent to {escape(name)} (newest first)</h2>"
            + (bodies or "<p>Nothing yet: send the event above, then reload.</p>")
        )
    return "".join(parts)


def _pretty(body: bytes) -> str:
    try:
        text = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
    return text if len(text) <= MAX_BODY_CHARS else text[:MAX_BODY_CHARS] + "\n…"

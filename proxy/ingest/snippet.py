"""The browser snippet's public routes under the prefix: the script, its event endpoint, and the
install tag that loads it.

The script has two URLs: `s.js`, which the install tag names and people paste once (strong ETag,
revalidated hourly), and `s.<hash>.js`, whose content never changes (cached for a year). The event
endpoint `e` is the Segment batch route under another name, so validation, auth, enrichment and
the spool are shared. Both names are neutral on purpose: filter lists block words and query
patterns (`collect?v=`, `/analytics.js/v1/`), not a bare `/e` or `/s.js`
(shared/testdata/filterlists/verdicts.md).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from proxy.logs import with_request_id

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
SCRIPT_FILE = STATIC_DIR / "snippet.min.js"
SCRIPT_NAME = "s.js"
EVENT_NAME = "e"
BATCH_NAME = "v1/batch"  # the Segment route the event endpoint shares its handlers with
SCRIPT_TYPE = "text/javascript"
# The stable URL must pick up a new relay's snippet within the hour; the hashed URL never changes.
STABLE_CACHE = "public, max-age=3600"
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
# The methods the install stub queues until the script has loaded.
STUB_METHODS = ("page", "track", "identify", "group", "alias", "reset", "ready", "consent")
# The tag README and the test page show: the stub (one line each for the queue, the settings, the
# queued methods and the async load), then the page view on load.
STUB = (
    "!function(w,d,a,s){{a=w.analytics=w.analytics||[];if(a.key)return;\n"
    "a.key={key};a.url={url};\n"
    '"{methods}".split(" ").forEach(function(m){{\n'
    "a[m]=function(){{a.push([m].concat([].slice.call(arguments)))}}}});\n"
    's=d.createElement("script");s.async=1;s.src=a.url+"/{script}";d.head.appendChild(s)'
    "}}(window,document);\n"
    "analytics.page();"
)


def install_tag(write_key: str, prefix: str) -> str:
    """The `<script>` block a site puts in its pages: the queue stub, the write key, the relay's
    path on the same origin, and an async load of the script."""
    stub = STUB.format(
        key=_js_string(write_key),
        url=_js_string(prefix.rstrip("/")),
        methods=" ".join(STUB_METHODS),
        script=SCRIPT_NAME,
    )
    return f"<script>\n{stub}\n</script>"


def _js_string(text: str) -> str:
    # JSON is a JS string literal; "</" would end the inline <script> element early.
    return json.dumps(text).replace("</", "<\\/")


@dataclass(frozen=True, slots=True)
class Script:
    """The minified snippet, pre-compressed once, with the ETags of both encodings."""

    body: bytes
    gzipped: bytes
    digest: str

    @classmethod
    def load(cls, path: Path = SCRIPT_FILE) -> Script:
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:12]
        return cls(body, gzip.compress(body, 9, mtime=0), digest)

    @property
    def hashed_name(self) -> str:
        return f"s.{self.digest}.js"


class SnippetRoutes:
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script.load()

    def routes(self, prefix: str, api_routes: Sequence[web.RouteDef]) -> list[web.RouteDef]:
        """The script's two URLs and the event endpoint, under `prefix` (no trailing slash).

        `api_routes` are the Segment API's routes: the event endpoint reuses the handlers of
        `v1/batch` (POST, and OPTIONS for a site that serves pages from another origin).
        """
        batch = f"{prefix}/{BATCH_NAME}"
        events = [
            web.route(route.method, f"{prefix}/{EVENT_NAME}", route.handler)
            for route in api_routes
            if route.path == batch
        ]
        if not events:
            raise ValueError(f"no {batch} route to serve the snippet's events")
        return [
            web.get(f"{prefix}/{SCRIPT_NAME}", with_request_id(self.stable)),
            web.get(f"{prefix}/{self.script.hashed_name}", with_request_id(self.immutable)),
            *events,
        ]

    async def stable(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request, STABLE_CACHE)

    async def immutable(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request, IMMUTABLE_CACHE)

    def _serve(self, request: web.Request, cache_control: str) -> web.StreamResponse:
        script = self.script
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        # One strong ETag per encoding, as the bytes differ; either one names this version.
        etag = f'"{script.digest}-gz"' if gzipped else f'"{script.digest}"'
        headers = {
            "Cache-Control": cache_control,
            "ETag": etag,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        wanted = request.headers.get("If-None-Match", "")
        if script.digest in wanted or wanted.strip() == "*":
            return web.Response(status=304, headers=headers)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        body = script.gzipped if gzipped else script.body
        return web.Response(body=body, headers=headers, content_type=SCRIPT_TYPE, charset="utf-8")

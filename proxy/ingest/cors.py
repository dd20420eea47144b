"""CORS for the public ingest routes: an origin that some browser source allows gets a grant (with
credentials, since the snippet sends cookies); any other origin gets none, so browsers block it.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from proxy.ingest.auth import normalise_origin
from proxy.ingest.common import IngestError, error_response
from proxy.settings import SourceKind, SourceSettings

# Chromium caps a cached preflight at 2 hours; asking for more gains nothing.
MAX_AGE_SECS = 7200
# analytics.js >= 1.84 sends Authorization and, on retries, X-Retry-Count (segment.md section 2).
ALLOW_HEADERS = "Content-Type, Authorization, X-Retry-Count"


class Cors:
    def __init__(self, sources: Sequence[SourceSettings]) -> None:
        self.origins = frozenset(
            normalise_origin(origin)
            for source in sources
            if source.kind is SourceKind.BROWSER
            for origin in source.origins
        )
        # What an answer needs for the page to read it (and send cookies); the rest of the grant
        # matters only to a preflight.
        self._answer_grant = {
            "Access-Control-Allow-Credentials": "true",
            # The snippet reads Retry-After on a 503 to know when to try again.
            "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin",
        }
        self._preflight_grant = {
            **self._answer_grant,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_SECS),
        }

    def grant(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add the grant to an answer (success or error, so the page can read why) if allowed."""
        origin = request.headers.get("Origin")
        if origin is not None and origin in self.origins:
            response.headers.update(self._answer_grant)
            response.headers["Access-Control-Allow-Origin"] = origin

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or origin not in self.origins:
            return error_response(
                IngestError(
                    403, "origin_not_allowed", f"origin {origin!r} may not send events here"
                )
            )
        response = web.Response(status=200, headers=self._preflight_grant)
        response.headers["Access-Control-Allow-Origin"] = origin
        return response

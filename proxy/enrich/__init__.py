"""Server-side enrichment: what the relay knows about an event that its sender did not say.

Every step only adds: a key the client sent is never overwritten. The request's IP and UA are
the user's only for browser sources; the ingest passes None for server sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.enrich.campaign import apply_campaign
from proxy.enrich.geo import GeoDatabaseError, GeoLookup
from proxy.enrich.ip import ClientIps
from proxy.enrich.useragent import UserAgentParser, apply_user_agent
from proxy.settings import Settings

__all__ = ["Enricher", "GeoDatabaseError"]


class Enricher:
    """Holds the opened geo databases and the UA parser; `close()` releases the databases."""

    def __init__(self, settings: Settings) -> None:
        server = settings.server
        self._geo = GeoLookup.from_settings(settings.geo)  # GeoDatabaseError: refuse to start
        self._user_agents = UserAgentParser()
        self._client_ips = ClientIps(server.trusted_proxies, server.client_ip_header)

    def client_ip(self, peer: str, headers: Mapping[str, str]) -> str:
        """The end user's address for a request, per the server's trusted proxies."""
        return self._client_ips(peer, headers)

    def enrich(self, event: dict[str, Any], ip: str | None, user_agent: str | None) -> None:
        """Add ip, location, browser/os/device/bot and campaign/click ids to `event["context"]`.

        `user_agent` "" means a browser request without one (flagged as a bot); None means the
        request's UA is not the user's (a server source) and nothing is inferred from its absence.
        """
        context = event.setdefault("context", {})
        if not isinstance(context, dict):
            return  # not the spec's shape; the ingest's validation owns that answer
        if ip and "ip" not in context:
            context["ip"] = ip
        address = context.get("ip")
        if self._geo.enabled and isinstance(address, str):
            location = self._geo.lookup(address)
            known = context.get("location")
            if known is None and location:
                context["location"] = location
            elif isinstance(known, dict):
                for key, value in location.items():
                    known.setdefault(key, value)
        sent = context.get("userAgent")
        if sent is None and user_agent is not None:
            sent = user_agent
            if user_agent:
                context["userAgent"] = user_agent
        if isinstance(sent, str):
            apply_user_agent(context, self._user_agents.parse(sent))
        apply_campaign(event, context)

    def close(self) -> None:
        self._geo.close()

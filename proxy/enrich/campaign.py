"""UTM parameters and ad click ids from the page URL, into `context.campaign`, `.clickIds`, `.fbc`.

`context.clickIds` maps each click id parameter, spelled as in the URL, to its value
(`{"gclid": "Cj0…"}`). `context.fbc` is Meta's `_fbc` cookie value built from an fbclid.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import SplitResult, unquote_plus, urlsplit

from proxy.events import parse_time

CLICK_IDS = frozenset(
    {
        "gclid", "gbraid", "wbraid", "dclid",  # Google Ads, Campaign Manager
        "fbclid",  # Meta
        "msclkid",  # Microsoft Ads
        "ttclid",  # TikTok
        "li_fat_id",  # LinkedIn
        "twclid",  # X
        "epik",  # Pinterest
        "rdt_cid",  # Reddit
        "ScCid",  # Snap
        "yclid",  # Yandex
    }
)  # fmt: skip
_TIME_KEYS = ("timestamp", "originalTimestamp", "receivedAt")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Longer URLs are parsed each time, not remembered (here and by redaction): a batch of a few MB
# can hold megabyte URLs, and a cache of 4,096 of them would grow the relay by the gigabyte.
MAX_CACHED_URL = 2048


def parse_url(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """(campaign, click ids) from a URL's query string, as analytics.js reads `utm_*`.

    `utm_campaign` becomes `name`, other `utm_x` become `x`; the last repeat wins. Click ids are
    opaque and case-sensitive, so they are kept exactly as written (meta-capi.md §5: never decode).
    """
    if "?" not in url:
        return {}, {}  # most page URLs: skip the parse
    if len(url) > MAX_CACHED_URL:
        # Not remembered, by our cache nor by urlsplit's own.
        return _parse_query.__wrapped__(url, getattr(urlsplit, "__wrapped__", urlsplit))
    # Landing URLs repeat across a campaign's visitors: parse each once (copies: callers keep them).
    campaign, click_ids = _parse_query(url)
    return dict(campaign), dict(click_ids)


@lru_cache(maxsize=4096)
def _parse_query(
    url: str, split: Callable[[str], SplitResult] = urlsplit
) -> tuple[dict[str, str], dict[str, str]]:
    try:
        query = split(url).query
    except ValueError:  # e.g. an unclosed "[" in the host
        return {}, {}
    campaign: dict[str, str] = {}
    click_ids: dict[str, str] = {}
    # A second "?" is a common link-builder slip; analytics.js reads past it the same way.
    for pair in query.replace("?", "&").split("&"):
        key, _, value = pair.partition("=")
        if not value:
            continue
        if key.startswith("utm_") and len(key) > 4:
            name = key[4:]
            campaign["name" if name == "campaign" else name] = unquote_plus(value)
        elif key in CLICK_IDS:
            click_ids[key] = value
    return campaign, click_ids


def build_fbc(fbclid: str, created_ms: int) -> str:
    """Meta's `_fbc` value (meta-capi.md §5); subdomain index 1, as Meta asks of servers."""
    return f"fb.1.{created_ms}.{fbclid}"


def apply_campaign(event: dict[str, Any], context: dict[str, Any]) -> None:
    """Fill campaign, click ids and fbc from the page URL where the client sent none.

    The campaign is one unit (never mixed with the client's); click ids merge one by one.
    """
    url = _page_url(event, context)
    campaign, click_ids = parse_url(url) if url else ({}, {})
    if campaign and not context.get("campaign"):
        context["campaign"] = campaign
    if click_ids:
        known = context.setdefault("clickIds", {})
        if isinstance(known, dict):
            for key, value in click_ids.items():
                known.setdefault(key, value)
    known_ids = context.get("clickIds")
    fbclid = known_ids.get("fbclid") if isinstance(known_ids, dict) else None
    if isinstance(fbclid, str) and fbclid and not _has_fbc(event, context):
        created_ms = _event_ms(event)
        if created_ms is not None:
            context["fbc"] = build_fbc(fbclid, created_ms)


def _page_url(event: dict[str, Any], context: dict[str, Any]) -> str | None:
    page = context.get("page")
    url = page.get("url") if isinstance(page, dict) else None
    if not url and event.get("type") == "page":
        properties = event.get("properties")
        url = properties.get("url") if isinstance(properties, dict) else None
    return url if isinstance(url, str) else None


def _has_fbc(event: dict[str, Any], context: dict[str, Any]) -> bool:
    # RudderStack / Segment carry the cookie in either place (meta-capi.md, mapping table).
    properties = event.get("properties")
    return bool(context.get("fbc")) or (
        isinstance(properties, dict) and bool(properties.get("fbc"))
    )


def _event_ms(event: dict[str, Any]) -> int | None:
    """When the event happened, in epoch ms: the click that set fbclid happened by then."""
    for key in _TIME_KEYS:
        moment = parse_time(event.get(key))
        if moment is not None:
            return (moment - _EPOCH) // timedelta(milliseconds=1)  # exact, unlike float maths
    return None

"""Consent categories on an event, in Segment's shape: `context.consent.categoryPreferences`, a
map of category name to true/false. Global Privacy Control is applied here at ingest; delivery
(proxy/deliver/filters.py) asks `refused()` whether a destination's categories are allowed.

A category the map does not answer is "missing": refused, unless `[privacy] consent_required`
is turned off.
`necessary` cannot be refused: it names what the site needs to work at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from proxy.settings import PrivacySettings

NECESSARY = "necessary"
GPC_CONTEXT = "globalPrivacyControl"  # navigator.globalPrivacyControl, if a client sends it
GPC_HEADER, DNT_HEADER = "Sec-GPC", "DNT"


def gpc_header(headers: Mapping[str, str], privacy: PrivacySettings) -> str | None:
    """A browser request's GPC signal for `apply_gpc`: its `Sec-GPC` header, or "1" when
    `[privacy] honor_dnt` is on and it sent `DNT: 1` (Do Not Track, treated like GPC)."""
    if privacy.honor_dnt and (headers.get(DNT_HEADER) or "").strip() == "1":
        return "1"
    return headers.get(GPC_HEADER)


def preferences(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """The event's category map, or None when it carries no consent answer."""
    consent = context.get("consent")
    found = consent.get("categoryPreferences") if isinstance(consent, dict) else None
    return found if isinstance(found, dict) else None


def writable_preferences(context: dict[str, Any]) -> dict[str, Any]:
    """The event's category map, made so that answers can be written into it. A consent value
    not in Segment's shape (a TCF string, `"granted"`) is kept under `value`: before, such a
    value made GPC and a user's stitched refusals skip the event, which then reached vendors
    that need the refused category."""
    consent = context.get("consent")
    if not isinstance(consent, dict):
        consent = context["consent"] = {} if consent is None else {"value": consent}
    found = consent.get("categoryPreferences")
    if not isinstance(found, dict):
        found = consent["categoryPreferences"] = {}
    return found


def apply_gpc(context: dict[str, Any], header: str | None, privacy: PrivacySettings) -> None:
    """Opt the event out of `gpc_opts_out` when the browser sent `Sec-GPC: 1` (or the client
    said `context.globalPrivacyControl: true`); a grant loses unless `gpc_overrides_consent`
    is false. `header` is None for server sources: a backend's headers are not the user's."""
    if not privacy.gpc_opts_out:
        return
    if not (header is not None and header.strip() == "1") and context.get(GPC_CONTEXT) is not True:
        return
    found = writable_preferences(context)
    for category in privacy.gpc_opts_out:
        if privacy.gpc_overrides_consent or category not in found:
            found[category] = False


def refused(context: Mapping[str, Any], categories: Sequence[str], required: bool) -> bool:
    """True when one of `categories` is turned off, or (with `required`) not answered at all."""
    found = preferences(context) or {}
    for category in categories:
        if category == NECESSARY:
            continue
        answer = found.get(category)
        if answer is False or (required and answer is not True):
            return True
    return False


def granted(context: Mapping[str, Any], category: str) -> bool | None:
    """The event's answer for one category: True, False, or None when it has none."""
    answer = (preferences(context) or {}).get(category)
    return answer if isinstance(answer, bool) else None

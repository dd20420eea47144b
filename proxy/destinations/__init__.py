"""Every destination type the config may name, by its `type` string, and the names Segment's
catalog gives each (what a message's `integrations` object calls it)."""

from __future__ import annotations

from typing import Any

from proxy.destinations.amplitude import Amplitude
from proxy.destinations.base import Destination
from proxy.destinations.debug import Debug
from proxy.destinations.ga4 import GA4
from proxy.destinations.meta_capi import MetaCapi
from proxy.destinations.mixpanel import Mixpanel
from proxy.destinations.plausible import Plausible
from proxy.destinations.posthog import PostHog
from proxy.destinations.segment import Segment
from proxy.destinations.tiktok import TikTok
from proxy.destinations.webhook import Webhook

REGISTRY: dict[str, type[Destination[Any]]] = {
    Amplitude.type: Amplitude,
    Debug.type: Debug,
    GA4.type: GA4,
    MetaCapi.type: MetaCapi,
    Mixpanel.type: Mixpanel,
    Plausible.type: Plausible,
    PostHog.type: PostHog,
    Segment.type: Segment,
    TikTok.type: TikTok,
    Webhook.type: Webhook,
}

# Segment's catalog names for each type, as Segment's docs tell you to spell them in the
# `integrations` object ("Refer to it as ... in the Integrations object", on each destination's
# page under segment.com/docs/connections/destinations/catalog/): the classic destination and
# its Actions successor, so messages written for either keep routing. Keys are case-sensitive,
# hence both spellings of TikTok's (Segment's own page writes "Tiktok Conversions"). "Segment.io"
# is analytics.js's name for delivery to Segment itself. Plausible has no Segment destination and
# `debug` is the relay's own: they answer to their configured name only.
SEGMENT_NAMES: dict[str, tuple[str, ...]] = {
    Amplitude.type: ("Amplitude", "Actions Amplitude"),
    Debug.type: (),
    GA4.type: ("Google Analytics 4", "Google Analytics 4 Cloud"),
    MetaCapi.type: ("Facebook Conversions API", "Facebook Conversions API (Actions)"),
    Mixpanel.type: ("Mixpanel", "Mixpanel (Actions)"),
    Plausible.type: (),
    PostHog.type: ("PostHog",),
    Segment.type: ("Segment", "Segment.io"),
    TikTok.type: ("TikTok Conversions", "Tiktok Conversions"),
    Webhook.type: ("Webhooks", "Webhooks (Actions)"),
}

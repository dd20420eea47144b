"""Every destination type the config may name, by its `type` string."""

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

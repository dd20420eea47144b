"""Every destination type the config may name, by its `type` string."""

from __future__ import annotations

from typing import Any

from proxy.destinations.base import Destination
from proxy.destinations.debug import Debug
from proxy.destinations.ga4 import GA4
from proxy.destinations.meta_capi import MetaCapi
from proxy.destinations.tiktok import TikTok
from proxy.destinations.webhook import Webhook

REGISTRY: dict[str, type[Destination[Any]]] = {
    Debug.type: Debug,
    GA4.type: GA4,
    MetaCapi.type: MetaCapi,
    TikTok.type: TikTok,
    Webhook.type: Webhook,
}

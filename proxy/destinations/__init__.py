"""Every destination type the config may name, by its `type` string."""

from __future__ import annotations

from typing import Any

from proxy.destinations.base import Destination
from proxy.destinations.debug import Debug

REGISTRY: dict[str, type[Destination[Any]]] = {
    Debug.type: Debug,
}

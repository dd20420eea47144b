"""The relay's public URLs and what ad blockers say about them (`python -m proxy paths`).

The URLs come from the app's own router, so every route anyone adds is checked: POST routes as
fetch/XHR and sendBeacon, `.js` files as scripts. Other GETs (the test page, health) are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from proxy.blocklists import Block, Blocklists
from proxy.settings import Settings

# A host shape the lists' regex rules match (`https://(www.)?name.tld/`), like most real sites.
SAMPLE_ORIGIN = "https://www.example.com"
SEND_TYPES = ("xmlhttprequest", "ping")  # fetch with keepalive, and navigator.sendBeacon
_ORDER = ("script", *SEND_TYPES)


@dataclass(frozen=True, slots=True)
class PublicPath:
    path: str  # may carry a query string, as a page would request it
    request_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PathCheck:
    url: str
    request_type: str
    block: Block | None


def public_paths(settings: Settings) -> list[PublicPath]:
    """Every public route of an app built from `settings` that a browser fetches."""
    from proxy.app import create_app  # the app pulls in every module; only this command needs it

    return routed_paths(create_app(settings).router.routes())


def routed_paths(routes: Iterable[web.AbstractRoute]) -> list[PublicPath]:
    found: dict[str, set[str]] = {}
    for route in routes:
        resource = route.resource
        if isinstance(resource, web.StaticResource):
            directory = Path(resource.get_info()["directory"])
            for file in sorted(directory.rglob("*.js")):
                path = f"{resource.canonical}/{file.relative_to(directory).as_posix()}"
                found.setdefault(path, set()).add("script")
        elif isinstance(resource, web.PlainResource):
            path = resource.canonical
            if route.method == "POST":
                found.setdefault(path, set()).update(SEND_TYPES)
            elif route.method == "GET" and path.endswith(".js"):
                found.setdefault(path, set()).add("script")
    return [
        PublicPath(path, tuple(k for k in _ORDER if k in kinds)) for path, kinds in found.items()
    ]


def check_paths(
    blocklists: Blocklists, paths: Sequence[PublicPath], origin: str = SAMPLE_ORIGIN
) -> list[PathCheck]:
    """Each path as a page on `origin` would request it (first-party), once per request type."""
    origin = origin.rstrip("/")
    page = origin + "/"
    return [
        PathCheck(origin + path.path, kind, blocklists.find(origin + path.path, page, kind))
        for path in paths
        for kind in path.request_types
    ]


def report(checks: Sequence[PathCheck]) -> str:
    """One line per URL and request type: allowed, or BLOCKED by the rule and its list."""
    width = max((len(check.url) for check in checks), default=0)
    lines = []
    for check in checks:
        verdict = "allowed"
        if check.block is not None:
            where = f" ({check.block.list_name})" if check.block.list_name else ""
            verdict = f"BLOCKED by {check.block.rule}{where}"
        lines.append(f"  {check.url:<{width}}  {check.request_type:<14}  {verdict}")
    blocked = sum(check.block is not None for check in checks)
    if blocked:
        lines.append(f"{blocked} of {len(checks)} blocked: change the prefix or the route names.")
    else:
        lines.append(f"All {len(checks)} allowed.")
    return "\n".join(lines)

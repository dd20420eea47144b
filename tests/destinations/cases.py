"""Golden cases: one small JSON file per case under golden/<type>/, shared by the golden and the
contract tests. A case holds a vendor config table, a send time, spec events and the requests;
optionally "answer": the body of the vendor's success answer (for vendors that read their 2xx)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from proxy.config import destination_settings
from proxy.destinations import REGISTRY
from proxy.destinations.base import Destination, HttpRequest
from proxy.events import Event
from tests.fakes.vendor import FakeVendor

GOLDEN = Path(__file__).parent / "golden"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class Case:
    path: Path
    type: str
    data: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.data.get("config", {})
        return config

    @property
    def now(self) -> float:
        return float(self.data.get("now", NOW))

    @property
    def events(self) -> list[Event]:
        return [Event.from_data(event) for event in self.data["events"]]


def cases(type_name: str | None = None) -> list[Case]:
    """Every golden case (of one type), in a stable order."""
    pattern = f"{type_name}/*.json" if type_name else "*/*.json"
    return [
        Case(path, path.parent.name, orjson.loads(path.read_bytes()))
        for path in sorted(GOLDEN.glob(pattern))
    ]


def adapter(type_name: str, config: dict[str, Any], name: str = "golden") -> Destination[Any]:
    """The adapter built the way the relay builds it: through config.py's validation."""
    settings = destination_settings(name, {"type": type_name, **config})
    return REGISTRY[type_name](settings)


D = TypeVar("D", bound=Destination[Any])
V = TypeVar("V", bound=FakeVendor)


def configured(name: str, kind: type[D], config: dict[str, Any]) -> D:
    """adapter(), as the adapter class a vendor's tests expect."""
    destination = adapter(name, config)
    assert isinstance(destination, kind)
    return destination


@asynccontextmanager
async def serving(vendor: V) -> AsyncIterator[V]:
    """A fake vendor for one test: started, then closed and checked for requests to paths it
    does not serve."""
    await vendor.start()
    yield vendor
    await vendor.close()
    vendor.assert_no_unknown_paths()


def sample_config(type_name: str) -> dict[str, Any]:
    """The first golden case's config; `{}` for a type without cases (e.g. debug)."""
    found = cases(type_name)
    return found[0].config if found else {}


def success_body(type_name: str) -> bytes:
    """The first golden case's "answer" (JSON or text) as bytes; empty when it has none."""
    found = cases(type_name)
    answer = found[0].data.get("answer") if found else None
    if answer is None:
        return b""
    return answer.encode() if isinstance(answer, str) else orjson.dumps(answer)


def render(request: HttpRequest) -> dict[str, Any]:
    """A request as a golden file holds it: JSON bodies parsed, gzip bodies decompressed."""
    body = request.body
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        body = gzip.decompress(body)
    rendered: dict[str, Any] = {
        "method": request.method,
        "url": request.url,
        "headers": dict(request.headers),
    }
    try:
        rendered["json"] = orjson.loads(body)
    except orjson.JSONDecodeError:
        rendered["body"] = body.decode("utf-8", "replace")
    return rendered

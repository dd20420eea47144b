"""The OpenAPI 3.1 description of the public ingest API: served on the admin listener, covering
every public route, and matching real answers (status and body) of a running relay."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from proxy.admin.api import openapi_bytes
from proxy.ingest.http_errors import UNROUTED_NAME
from tests.admin.conftest import AdminFactory, AdminRelay
from tests.conftest import WEB_KEY
from tests.ingest.client import Answer, post, track

HASHED = re.compile(r"^/s\.[0-9a-f]+\.js$")  # the snippet's content-hashed name
DOC: dict[str, Any] = orjson.loads(openapi_bytes())
REGISTRY = Registry().with_resource(
    "urn:openapi", Resource.from_contents(DOC, default_specification=DRAFT202012)
)


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def check(path: str, method: str, answer: Answer) -> None:
    """The answer's status is documented for the operation, and its body fits the schema."""
    operation = DOC["paths"][path][method]
    responses = operation["responses"]
    assert str(answer.status) in responses, f"{method} {path}: {answer.status} undocumented"
    response = _resolve(responses[str(answer.status)])
    schema = response["content"]["application/json"]["schema"]
    pointer = f"urn:openapi#/paths/{path.replace('/', '~1')}/{method}/responses/{answer.status}"
    if "$ref" in responses[str(answer.status)]:
        pointer = "urn:openapi#" + responses[str(answer.status)]["$ref"].removeprefix("#")
    validator = Draft202012Validator(
        {"$ref": f"{pointer}/content/application~1json/schema"}, registry=REGISTRY
    )
    assert schema is not None
    validator.validate(answer.json)
    for header in response.get("headers", {}):
        assert header in answer.headers, f"{header} documented but not sent"


def test_the_document_is_openapi_3_1_with_valid_schemas() -> None:
    assert DOC["openapi"].startswith("3.1")
    for name, schema in DOC["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema), name


async def test_every_public_route_is_described(admin: AdminRelay) -> None:
    prefix = admin.settings.server.prefix.rstrip("/")
    routed = {
        (HASHED.sub("/s.{hash}.js", r.resource.canonical.removeprefix(prefix)), r.method.lower())
        for r in admin.public.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith(f"{prefix}/")
        and r.method != "HEAD"  # aiohttp adds HEAD beside each GET
        and r.resource.name != UNROUTED_NAME  # JSON 404/405 for the rest: in info.description
    }
    described = {(path, method) for path, item in DOC["paths"].items() for method in item}
    assert routed - {("/", "get")} == described  # "/" is the test page, not API


async def test_served_on_the_admin_listener(admin: AdminRelay) -> None:
    status, text = await admin.get("/openapi.json")
    assert status == 200
    assert orjson.loads(text) == DOC


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("ok", 200),
        ("partial_batch", 200),
        ("bad_json", 400),
        ("missing_event", 400),
        ("unknown_key", 401),
        ("foreign_origin", 403),
        ("server_only", 403),
        ("too_large", 413),
        ("content_type", 415),
    ],
)
async def test_real_answers_match_the_description(
    admin: AdminRelay, case: str, status: int
) -> None:
    base = admin.public_url
    path, key, headers = "/v1/track", WEB_KEY, {}
    body: dict[str, Any] | bytes = track()
    if case == "partial_batch":
        path, body = "/v1/batch", {"batch": [track(), {"type": "track", "anonymousId": "a"}]}
    elif case == "bad_json":
        body = b"{"
    elif case == "missing_event":
        body = track(event=None)
    elif case == "unknown_key":
        key = "pk_nobody"
    elif case == "foreign_origin":
        headers = {"Origin": "https://evil.example"}
    elif case == "server_only":
        body = track(event="Order Completed")
    elif case == "too_large":
        body = track(properties={"x": "y" * 40_000})
    elif case == "content_type":
        headers = {"Content-Type": "application/xml"}
    answer = await post(admin.http, base + path, body, key=key, headers=headers)
    assert answer.status == status, answer.json
    check(path, "post", answer)


async def test_a_full_spool_answer_matches(admin_factory: AdminFactory) -> None:
    probe = await admin_factory()
    tiny = dataclasses.replace(probe.settings.spool, max_bytes=10)
    admin = await admin_factory(spool=tiny)
    answer = await post(admin.http, admin.public_url + "/v1/track", track())
    assert answer.status == 503
    check("/v1/track", "post", answer)
    for path in ("/healthz", "/readyz"):
        async with admin.http.get(admin.public_url + path) as response:
            got = Answer(response.status, await response.json(), response.headers)
        check(path, "get", got)

"""JSON logs: one object per line with level, message, logger and request id; secrets masked and
personal data left out at INFO."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from proxy import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.setup(logging.DEBUG, stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_extra_fields(captured: io.StringIO) -> None:
    log = logging.getLogger("proxy.test")
    log.warning("Delivery failed.", extra={"destination": "ga4", "error": "http_500"})
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("It broke.")
    first, second = lines(captured)
    assert first["level"] == "warning"
    assert first["logger"] == "proxy.test"
    assert first["message"] == "Delivery failed."
    assert (first["destination"], first["error"]) == ("ga4", "http_500")
    assert first["request_id"] is None
    assert "ValueError: boom" in str(second["exception"])


def test_secrets_are_masked_and_personal_data_kept_to_debug(captured: io.StringIO) -> None:
    log = logging.getLogger("proxy.test")
    log.info(
        "Sent to %s (Bearer abc.def)",
        "https://vendor.example/mp/collect?measurement_id=G-1&api_secret=s3cr3t",
        extra={
            "headers": {"Authorization": "Basic eHl6"},
            "write_key": "pk_live",
            "ip": "203.0.113.9",
            "userId": "u-1",
            "url": "https://x.example/?access_token=tok123",
        },
    )
    log.debug("Detail.", extra={"ip": "203.0.113.9"})
    info, debug = lines(captured)
    text = orjson.dumps(info).decode()
    for secret in ("s3cr3t", "abc.def", "eHl6", "pk_live", "tok123", "203.0.113.9", "u-1"):
        assert secret not in text
    assert "measurement_id=G-1" in str(info["message"])
    assert info["headers"] == "***"
    assert "ip" not in info
    assert "userId" not in info
    assert debug["ip"] == "203.0.113.9"  # an operator who turns on DEBUG asked for it


async def test_requests_get_an_id_on_the_answer_and_in_their_logs(
    aiohttp_client: AiohttpClient, captured: io.StringIO
) -> None:
    async def handler(request: web.Request) -> web.Response:
        logging.getLogger("proxy.test").info("Handling.")
        return web.Response(text="ok")

    app = web.Application(middlewares=[logs.request_ids])
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    response = await client.get("/", headers={"X-Request-Id": "req-abc.1"})
    assert response.headers["X-Request-Id"] == "req-abc.1"
    response = await client.get("/", headers={"X-Request-Id": "bad id\twith junk" * 10})
    fresh = response.headers["X-Request-Id"]
    assert fresh != ""
    assert "bad" not in fresh
    ids = [line["request_id"] for line in lines(captured) if line["message"] == "Handling."]
    assert ids == ["req-abc.1", fresh]

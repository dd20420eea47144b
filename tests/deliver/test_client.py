"""Transports: HTTP answers come back as values, transport failures as TransportError reasons,
redirects are not followed; the memory transport keeps what debug destinations send."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from proxy.deliver.client import MAX_RESPONSE_BYTES, HttpTransport, MemoryTransport, TransportError
from proxy.destinations.base import HttpRequest, retry_after
from tests.deliver.harness import Held
from tests.fakes.vendor import Answer, FakeVendor


def post(url: str, body: bytes = b"[]") -> HttpRequest:
    return HttpRequest("POST", url, {"Content-Type": "application/json"}, body, ("m-1",))


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    async with aiohttp.ClientSession() as session:
        yield HttpTransport(session)


@pytest.fixture
async def vendor() -> AsyncIterator[FakeVendor]:
    fake = await FakeVendor({"/in": lambda _: Answer(204)}).start()
    yield fake
    await fake.close()


async def test_answer_is_returned_as_a_value(transport: HttpTransport, vendor: FakeVendor) -> None:
    vendor.answer(429, {"error": "slow down"}, headers={"Retry-After": "30"})
    response = await transport.send(post(vendor.url + "/in", b'[{"a":1}]'), 5.0)
    assert response.status == 429
    assert response.body == b'{"error":"slow down"}'
    assert retry_after(response.headers, 0.0) == 30.0
    assert response.headers["retry-after"] == "30"  # header names are case-insensitive
    (recorded,) = vendor.requests
    assert (recorded.method, recorded.path, recorded.body) == ("POST", "/in", b'[{"a":1}]')
    assert recorded.headers["Content-Type"] == "application/json"


async def test_redirects_are_not_followed(transport: HttpTransport, vendor: FakeVendor) -> None:
    vendor.answer(307, headers={"Location": vendor.url + "/elsewhere"})
    response = await transport.send(post(vendor.url + "/in"), 5.0)
    assert response.status == 307
    assert [r.path for r in vendor.requests] == ["/in"]
    vendor.assert_no_unknown_paths()


async def test_a_long_answer_is_cut(transport: HttpTransport, vendor: FakeVendor) -> None:
    vendor.answer(400, b"x" * (3 * MAX_RESPONSE_BYTES))
    response = await transport.send(post(vendor.url + "/in"), 5.0)
    assert response.body == b"x" * MAX_RESPONSE_BYTES


async def test_timeout(transport: HttpTransport) -> None:
    held = Held()
    vendor = await FakeVendor({"/in": held}).start()
    try:
        with pytest.raises(TransportError) as caught:
            await transport.send(post(vendor.url + "/in"), 0.1)
        assert caught.value.reason == "timeout"
    finally:
        held.release()
        await vendor.close()


async def test_connection_refused(transport: HttpTransport, closed_url: str) -> None:
    with pytest.raises(TransportError) as caught:
        await transport.send(post(closed_url), 5.0)
    assert caught.value.reason == "connection_refused"


async def test_unreachable_host_is_a_connection_error(transport: HttpTransport) -> None:
    with pytest.raises(TransportError) as caught:
        await transport.send(post("http://host.invalid/in"), 5.0)
    assert caught.value.reason == "connection_error"


async def test_memory_transport_keeps_the_latest() -> None:
    memory = MemoryTransport(keep=2)
    requests = [post(f"debug://d/{n}") for n in range(3)]
    for request in requests:
        assert (await memory.send(request, 1.0)).status == 200
    assert list(memory.requests) == requests[1:]

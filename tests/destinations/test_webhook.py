"""Webhook adapter: Standard Webhooks signing (the test vector in shared/vendors/webhooks.md),
the spliced body, the batch id and the config's checks."""

from __future__ import annotations

import orjson
import pytest

from proxy.config import ConfigError
from proxy.destinations.base import HttpRequest, HttpResponse, Verdict
from proxy.destinations.webhook import batch_id, signature, signing_key
from proxy.events import Event
from tests.destinations.cases import Case, adapter, cases
from tests.fakes.webhook import verify

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONFIG = {"url": "https://hooks.example/in", "secret": VECTOR_SECRET}


def test_signature_matches_the_spec_test_vector() -> None:
    key = signing_key(VECTOR_SECRET)
    signed = signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signed == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_unpadded_secret_is_accepted() -> None:
    assert signing_key("whsec_YWJj") == b"abc"
    assert signing_key("whsec_YWI") == b"ab"


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not base64!"])
def test_bad_secret_is_a_config_error_naming_the_key(secret: str) -> None:
    with pytest.raises(ConfigError, match="secret"):
        adapter("webhook", {"url": "https://hooks.example/in", "secret": secret})


@pytest.mark.parametrize("url", ["ftp://hooks.example/in", "hooks.example/in", "https:///in"])
def test_url_must_be_http_with_a_host(url: str) -> None:
    with pytest.raises(ConfigError, match="url"):
        adapter("webhook", {"url": url, "secret": VECTOR_SECRET})


def test_body_is_the_stored_bytes_spliced_not_re_encoded() -> None:
    raw = [
        b'{"type": "track",  "event":"A", "messageId":"m-1"}',
        b'{"messageId":"m-2","type":"page"}',
    ]
    request = adapter("webhook", CONFIG).build([Event(r) for r in raw], 1767225600)[0]
    assert request.body == b"[" + raw[0] + b"," + raw[1] + b"]"
    assert request.event_ids == ("m-1", "m-2")


@pytest.mark.parametrize("case", cases("webhook"), ids=lambda c: c.path.stem)
def test_golden_requests_verify_like_a_consumer(case: Case) -> None:
    for request in adapter("webhook", case.config).build(case.events, case.now):
        secret = case.config["secret"]
        assert verify(secret, request.headers, request.body, case.now) is None
        assert verify(secret, request.headers, request.body + b" ", case.now) is not None
        assert verify(secret, request.headers, request.body, case.now + 301) == "too old"


def test_batch_id_is_stable_and_has_no_dot() -> None:
    ids = ["a.b", "c.d"]
    assert batch_id(ids) == batch_id(list(ids))
    assert batch_id(ids) != batch_id(["a.b"])
    assert "." not in batch_id(ids)
    assert batch_id(ids).startswith("msg_")


def test_repr_hides_secret_header_values_and_url_credentials() -> None:
    destination = adapter(
        "webhook",
        {
            "url": "https://user:pw_77@hooks.example/in?token=tok_55",
            "secret": VECTOR_SECRET,
            "headers": {"Authorization": "Bearer hdr_66"},
        },
    )
    shown = repr(destination.config) + repr(destination) + repr(destination.settings)
    for secret in (VECTOR_SECRET, "pw_77", "tok_55", "hdr_66"):
        assert secret not in shown
    assert "hooks.example/in" in shown
    assert "Authorization" in shown


def test_events_are_a_json_array() -> None:
    request = adapter("webhook", CONFIG).build(
        [Event.from_data({"type": "track", "event": "A", "messageId": "m-1"})], 1767225600
    )[0]
    assert orjson.loads(request.body) == [{"type": "track", "event": "A", "messageId": "m-1"}]
    assert request.headers["Content-Type"] == "application/json"


REQUEST = HttpRequest("POST", "https://hooks.example/in", {}, b"[]", ())


@pytest.mark.parametrize(
    ("status", "verdict", "reason"),
    [
        (200, Verdict.DELIVERED, "http_200"),
        (299, Verdict.DELIVERED, "http_299"),
        (301, Verdict.RETRY, "http_301"),  # no redirects followed: a failure, retried
        (400, Verdict.RETRY, "http_400"),
        (401, Verdict.RETRY, "http_401"),
        (404, Verdict.RETRY, "http_404"),
        (501, Verdict.RETRY, "http_501"),
        (410, Verdict.REJECT, "http_410_gone"),
    ],
)
def test_every_non_2xx_but_410_is_retried(status: int, verdict: Verdict, reason: str) -> None:
    # webhooks.md §4: "Success = any 2xx. Everything else (including 3xx, ...) is a failure",
    # retried over days; "410 Gone: disable the endpoint, stop sending".
    result = adapter("webhook", CONFIG).classify(REQUEST, HttpResponse(status, {}, b""), 0)
    assert (result.verdict, result.reason) == (verdict, reason)


def test_retry_after_is_honoured_on_any_retried_status() -> None:
    answer = HttpResponse(403, {"Retry-After": "90"}, b"")
    result = adapter("webhook", CONFIG).classify(REQUEST, answer, 0)
    assert (result.verdict, result.retry_after_secs) == (Verdict.RETRY, 90.0)

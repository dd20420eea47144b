"""A Mixpanel ingestion server (shared/vendors/mixpanel.md) on FakeVendor. `/import` checks §2-§4:
strict=1, HTTP Basic (service account + project_id, secret or token), ≤ 2000 records and 10 MB
(`max_body_bytes`: 2097152 is the older limit of the OpenAPI example, §4), each record's time,
distinct_id and $insert_id, importing the valid ones and listing the rest in `failed_records`;
`/engage` takes profile records with the project token (§2, §6).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from tests.fakes.vendor import Answer, FakeVendor, Recorded

FORBIDDEN = frozenset(
    {
        "00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil", "none", "null",
        "n/a", "na", "undefined", "unknown", "<nil>", "0", "-1", "true", "false", "[]", "{}",
    }
)  # fmt: skip
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
EARLIEST = 31_536_000  # 1971-01-01T00:00:00Z in seconds
OPERATIONS = ("$set", "$set_once", "$add", "$union", "$append", "$remove", "$unset", "$delete")


def answer(status: int, body: dict[str, Any]) -> Answer:
    return Answer(status, orjson.dumps(body), {"Content-Type": "application/json"})


def refused(status: int, error: str, label: str) -> Answer:
    return answer(status, {"code": status, "error": error, "status": label})


class FakeMixpanel(FakeVendor):
    def __init__(
        self,
        project_token: str = "mp-project-token",
        api_secret: str = "mp-api-secret",
        service_account: tuple[str, str] = ("relay.sa.mixpanel", "sa-secret"),
        project_id: int = 3141592,
        now: Callable[[], float] = time.time,
        max_body_bytes: int = 10 * 1024 * 1024,  # §4: of the uncompressed body
    ) -> None:
        super().__init__({"/import": self._import, "/engage": self._engage})
        self.max_body_bytes = max_body_bytes
        self.project_token = project_token
        self.api_secret = api_secret
        self.service_account = service_account
        self.project_id = project_id
        self.now = now
        self.imported: list[dict[str, Any]] = []
        self.profiles: list[dict[str, Any]] = []

    def _import(self, request: Recorded) -> Answer:
        if request.query.get("strict") != "1":
            return refused(400, "this fake only speaks strict=1 (§4)", "Bad Request")
        if not self._authorized(request):
            return refused(401, "Invalid credentials", "Unauthorized")
        if len(request.body) > self.max_body_bytes:
            error = f"request exceeds max limit of {self.max_body_bytes} bytes"
            return refused(413, error, "Request Entity Too Large")
        try:
            records = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return refused(400, "could not parse the request body as JSON", "Bad Request")
        if not isinstance(records, list) or not 1 <= len(records) <= 2000:
            return refused(400, "expected an array of 1 to 2000 records", "Bad Request")
        failed = []
        for index, record in enumerate(records):
            problem = self.check(record)
            if problem is None:
                self.imported.append(record)
                continue
            props = record.get("properties") if isinstance(record, dict) else None
            insert_id = props.get("$insert_id") if isinstance(props, dict) else None
            field, message = problem
            failed.append(
                {"index": index, "$insert_id": insert_id, "field": field, "message": message}
            )
        if not failed:
            return answer(200, {"code": 200, "num_records_imported": len(records), "status": "OK"})
        return answer(
            400,
            {
                "code": 400,
                "error": "some data points in the request failed validation",
                "status": "Bad Request",
                "num_records_imported": len(records) - len(failed),
                "failed_records": failed,
            },
        )

    def check(self, record: Any) -> tuple[str, str] | None:
        """(field, message) for what §3 refuses in one record, or None."""
        if not isinstance(record, dict) or not isinstance(record.get("event"), str):
            return "event", "'event' must be a non-empty string"
        if not record["event"]:
            return "event", "'event' must be a non-empty string"
        props = record.get("properties")
        if not isinstance(props, dict):
            return "properties", "'properties' must be an object"
        if len(orjson.dumps(record)) >= 1_000_000 or len(props) >= 255:
            return "properties", "an event must be < 1 MB with < 255 properties"
        for key, value in props.items():
            if (problem := nesting_problem(value)) is not None:
                return f"properties.{key}", problem
        stamp = props.get("time")
        if not isinstance(stamp, int) or isinstance(stamp, bool):
            return "properties.time", "'time' must be an integer (seconds or milliseconds)"
        seconds = stamp / 1000 if stamp > 100_000_000_000 else stamp
        if not EARLIEST <= seconds <= self.now() + 3600:
            return "properties.time", "'time' is before 1971 or more than 1 hour in the future"
        distinct_id = props.get("distinct_id")
        if not isinstance(distinct_id, str) or distinct_id.lower() in FORBIDDEN:
            return "properties.distinct_id", f"invalid distinct_id {distinct_id!r}"
        insert_id = props.get("$insert_id")
        if not isinstance(insert_id, str) or not INSERT_ID.fullmatch(insert_id):
            return "properties.$insert_id", "must be ≤ 36 characters of [A-Za-z0-9-]"
        if insert_id.lower() in FORBIDDEN:
            return "properties.$insert_id", f"invalid $insert_id {insert_id!r}"
        return None

    def _authorized(self, request: Recorded) -> bool:
        """§2: service account + project_id, the project secret, or the token; all HTTP Basic."""
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        if (user, password) == self.service_account:
            return request.query.get("project_id") == str(self.project_id)
        return password == "" and user in (self.api_secret, self.project_token)

    def _engage(self, request: Recorded) -> Answer:
        try:
            records = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            records = None
        problem = None
        if not isinstance(records, list) or not records:
            problem = "expected a JSON array of profile updates"
        else:
            for record in records:
                if not isinstance(record, dict) or record.get("$token") != self.project_token:
                    problem = "invalid $token"
                elif not isinstance(record.get("$distinct_id"), str):
                    problem = "$distinct_id is required"
                elif not any(isinstance(record.get(op), dict) for op in OPERATIONS):
                    problem = "no profile operation ($set, ...)"
        if problem is None:
            self.profiles.extend(records)
        if request.query.get("verbose") == "1":
            return answer(200, {"status": 0 if problem else 1, "error": problem})
        return Answer(200, b"0" if problem else b"1", {"Content-Type": "text/plain"})


def nesting_problem(value: Any, depth: int = 1) -> str | None:
    """§3: "nested objects < 255 keys, depth ≤ 3; arrays < 255 elements" (a property whose value
    is an object or array is at depth 1)."""
    if not isinstance(value, dict | list):
        return None
    if depth > 3:
        return "nested objects may be at most 3 levels deep"
    if len(value) >= 255:
        return "nested objects and arrays must have < 255 keys or elements"
    children = value.values() if isinstance(value, dict) else value
    return next((p for child in children if (p := nesting_problem(child, depth + 1))), None)

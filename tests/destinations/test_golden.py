"""Golden requests: every case under golden/<type>/ builds exactly the requests it records.

`UPDATE_GOLDEN=1 pytest tests/destinations/test_golden.py` rewrites each case's "requests" from
what the adapter builds now; review the diff before committing it.
"""

from __future__ import annotations

import os

import orjson
import pytest

from tests.destinations.cases import Case, adapter, cases, render

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("case", cases(), ids=lambda c: f"{c.type}/{c.path.stem}")
def test_golden_requests(case: Case) -> None:
    destination = adapter(case.type, case.config)
    built = [render(request) for request in destination.build(case.events, case.now)]
    if UPDATE:
        case.data["requests"] = built
        case.path.write_bytes(orjson.dumps(case.data, option=orjson.OPT_INDENT_2) + b"\n")
        return
    assert built == case.data["requests"]


def test_every_registered_type_with_cases_has_a_registry_entry() -> None:
    from proxy.destinations import REGISTRY

    assert {case.type for case in cases()} <= set(REGISTRY)

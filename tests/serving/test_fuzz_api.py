"""Property-based API testing from the gateway's OpenAPI schema against the real Serve app over HTTP.

schemathesis turns every operation the schema lists into hypothesis strategies of requests: valid ones
(positive) and ones that break the schema (negative: wrong types, missing and extra fields, odd strings and
numbers). Each generated request goes to the package's Serve app. Every answer must come back (no hang: each
call has a timeout) and be no server fault (no 5xx; /readyz's 503 is its documented "not ready"), and a 4xx
carries the JSON error body. Examples per operation and mode are bounded (``QMLOPS_FUZZ_EXAMPLES``, 12 by
default) so the run takes a minute or two on two cores; raise it for a longer local run.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from .conftest import Served

EXAMPLES = int(os.environ.get("QMLOPS_FUZZ_EXAMPLES", "12"))
CALL_TIMEOUT_S = 30.0
AUTH = {"authorization": "Bearer s3cret-token"}  # admin operations reach their validation, not just the 401


def _check(case: Any, session: requests.Session, faults: list[str]) -> None:
    response = case.call(session=session, timeout=CALL_TIMEOUT_S, headers=AUTH)  # a hang raises here
    status = response.status_code
    if case.path == "/readyz" and status == 503:
        return
    if status >= 500:
        faults.append(f"{status} {case.method} {case.formatted_path} query={case.query} body={str(case.body)[:200]}"
                      f" -> {response.text[:200]}")  # fmt: skip
    elif status >= 400 and "application/json" in str(response.headers.get("content-type")):
        body = response.json()
        if "error" not in body and "detail" not in body:
            faults.append(f"{status} without an error body: {case.method} {case.formatted_path}")


@pytest.mark.timeout(600)
def test_no_request_from_the_schema_makes_a_server_fault(served: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json", timeout=30)
    schema.config.update(base_url=served.url)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # the schema lists the gateway's API (a broken schema would test nothing)
    assert {"/v1/predict", "/v1/feedback", "/v1/events", "/v1/admin/rollouts"} <= {
        op.path for op in operations
    }
    faults: list[str] = []
    tried = 0
    with requests.Session() as session:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))  # fmt: skip
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    nonlocal tried
                    tried += 1
                    _check(case, session, faults)

                try:
                    run()
                except Unsatisfiable:  # nothing to break (no parameters, no body): the positive run covers it
                    assert mode is GenerationMode.NEGATIVE, operation.path
    assert tried >= len(operations) * 2
    assert not faults, "\n".join(faults[:20])

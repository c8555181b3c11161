"""schemathesis against the service's own OpenAPI schema: generated requests, valid and not,
never get a server error, and every answer matches the documented responses."""

from __future__ import annotations


import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from terarec.serve import ServeSettings, create_app


@pytest.mark.parametrize("model", ["criteo_model", "two_tower_model"])
def test_generated_requests_never_get_a_server_error(model: str, request: pytest.FixtureRequest) -> None:
    app = create_app(ServeSettings(str(request.getfixturevalue(model)[1]), max_candidates=50, max_k=200))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/score", "/retrieve", "/healthz", "/readyz", "/metrics"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def answered(case: schemathesis.Case) -> None:
            case.call_and_validate()

        answered()

"""schemathesis against the server's own OpenAPI schema: generated requests, valid and invalid,
never produce a server error (5xx), and every response conforms to the documented statuses."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from decodelab.server import ServerConfig  # noqa: E402

from .conftest import start  # noqa: E402


@pytest.fixture(scope="module")
def api_schema():
    # Small limits keep each generated request cheap on the tiny model.
    server = start(ServerConfig(max_tokens_limit=16, timeout=30, max_rows_per_request=4))
    yield schemathesis.openapi.from_url(server.url + "/openapi.json")
    server.stop()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    # positive_data_acceptance is excluded: a schema-valid body may still be refused with a 4xx
    # for reasons no schema states (an unknown model or speculative method, token ids outside
    # this model's vocabulary, max_tokens above this server's limit, an empty prompt).
    case.call_and_validate(additional_checks=[not_a_server_error], excluded_checks=[positive_data_acceptance],
                           timeout=60)

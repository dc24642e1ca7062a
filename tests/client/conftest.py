"""The client library against real daphne processes: reuse the integration tests' ``daphne`` fixture."""

from tests.integration.conftest import daphne  # noqa: F401 - the fixture, re-exported for tests/client

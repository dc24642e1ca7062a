"""The margin tests' fixtures: ``trade`` (a MARKET order filled at once)."""

from tests.margin.conftest import trade  # noqa: F401 - a shared fixture

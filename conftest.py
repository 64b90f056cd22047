"""Root conftest: fixtures shared by every test directory."""

import pytest

from runtime import db

pytest_plugins = ["kubesim.testing", "tests.gateway_harness", "tests.browser", "audit.testing"]


@pytest.fixture(autouse=True)
def database_pool_per_test():
    """runtime.db's threads keep their connections: end them with the test whose database they used."""
    yield
    db.shutdown()

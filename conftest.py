"""Root conftest: fixtures shared by every test directory."""

pytest_plugins = ["kubesim.testing", "tests.gateway_harness", "tests.browser", "audit.testing"]

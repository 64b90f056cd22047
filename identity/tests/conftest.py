"""The real test OpenID provider's fixtures (tests/idp/fixtures.py) for the identity tests."""

from tests.idp.fixtures import get_token, idp, idp_namespaced, rotating_idp  # noqa: F401
